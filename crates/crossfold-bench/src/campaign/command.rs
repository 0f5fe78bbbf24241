//! One command of the campaign: which one, run through the executor, and how it ended as its
//! caller saw it.

use crossfold_core::{CommandError, ErrorChain, EventId, EventStore, StreamId};
use crossfold_executor::{Error, Executed, ExecutionContext, Executor};
use crossfold_testkit::FaultyStore;
use uuid::Uuid;

use crate::bank::{Deposit, Transfer, Withdraw};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Open,
    Deposit,
    Withdraw,
    Transfer,
}

impl Kind {
    /// Events one application of the command writes.
    pub(super) fn events(self) -> u64 {
        match self {
            Kind::Transfer => 3,
            _ => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    Succeeded,
    Refused,
    /// On conflicts (the streams kept changing).
    GaveUp,
    /// On transient failures (the store kept failing).
    GaveUpFailing,
    InDoubt,
    Error,
}

/// One command as its caller saw it.
pub(super) struct Record {
    pub(super) kind: Kind,
    pub(super) amount: i64,
    pub(super) ending: Ending,
    /// The first event a success returned.
    pub(super) first_event: Option<EventId>,
}

#[derive(Default)]
pub(super) struct TaskResult {
    pub(super) records: Vec<(Uuid, Record)>,
    pub(super) first_error: Option<String>,
}

pub(super) fn command_id(rng: &mut fastrand::Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes()).into_uuid()
}

pub(super) async fn one_command<S: EventStore>(
    rng: &mut fastrand::Rng,
    executors: &[Executor<FaultyStore<S>>],
    accounts: &[StreamId],
) -> (Uuid, (Record, Option<String>)) {
    let id = command_id(rng);
    let executor = &executors[rng.usize(..executors.len())];
    let context = ExecutionContext::new().correlation_id(id);
    let from = accounts[rng.usize(..accounts.len())].clone();
    let amount = rng.i64(1..=200);
    let (kind, result) = match rng.u8(..10) {
        0..4 => (
            Kind::Deposit,
            executor
                .execute_with(
                    Deposit {
                        account: from,
                        amount,
                    },
                    &context,
                )
                .await,
        ),
        4..6 => (
            Kind::Withdraw,
            executor
                .execute_with(
                    Withdraw {
                        account: from,
                        amount,
                    },
                    &context,
                )
                .await,
        ),
        _ => {
            let mut to = accounts[rng.usize(..accounts.len())].clone();
            if to == from {
                to = accounts
                    [(accounts.iter().position(|a| *a == from).unwrap_or(0) + 1) % accounts.len()]
                .clone();
            }
            let transfer = match StreamId::new(format!("transfer-{id}")) {
                Ok(stream) => stream,
                Err(e) => {
                    return (
                        id,
                        failed(
                            kind_error(Kind::Transfer, amount),
                            ErrorChain(&e).to_string(),
                        ),
                    );
                }
            };
            (
                Kind::Transfer,
                executor
                    .execute_with(
                        Transfer {
                            from,
                            to,
                            transfer,
                            amount,
                        },
                        &context,
                    )
                    .await,
            )
        }
    };
    (id, ending(kind, amount, result))
}

pub(super) fn kind_error(kind: Kind, amount: i64) -> Record {
    Record {
        kind,
        amount,
        ending: Ending::Error,
        first_event: None,
    }
}

pub(super) fn failed(record: Record, error: String) -> (Record, Option<String>) {
    (record, Some(error))
}

pub(super) fn ending(
    kind: Kind,
    amount: i64,
    result: Result<Executed, Error>,
) -> (Record, Option<String>) {
    let record = |ending, first_event| Record {
        kind,
        amount,
        ending,
        first_event,
    };
    match result {
        Ok(done) => (
            record(Ending::Succeeded, done.events.first().map(|e| e.event_id)),
            None,
        ),
        Err(Error::Command(CommandError::Rejected { rule, .. }))
            if rule == "insufficient_funds" =>
        {
            (record(Ending::Refused, None), None)
        }
        Err(e) if e.may_have_written() => (record(Ending::InDoubt, None), None),
        Err(e) if e.is_conflict() || e.is_contended() => (record(Ending::GaveUp, None), None),
        Err(e) if e.is_transient() => (record(Ending::GaveUpFailing, None), None),
        Err(e) => failed(kind_error(kind, amount), ErrorChain(&e).to_string()),
    }
}
