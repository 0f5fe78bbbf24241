//! A projection reads events stored in old shapes through its upcasters: a typed step turns an
//! old payload into today's, and the events of a retired type are skipped — in a whole batch,
//! and one at a time after a rejection, where the checkpoint still moves past them.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use crossfold_core::checkpoint::{ProjectionControl, ProjectionState};
use crossfold_core::{
    AppendRequest, EventData, EventStore, ExpectedVersion, LogFilter, Payload, Recorded, StreamId,
    Upcasters,
};
use crossfold_memory::{MemoryCheckpoints, MemoryStore, MemoryUnit};
use crossfold_projections::{
    ApplyContext, HandlerError, Projection, ProjectionOptions, ProjectionRunner,
};
use serde::{Deserialize, Serialize};

/// `Balances`, reading through upcasters: `Deposited` version 1 stored `{"value": n}`, and
/// `Frozen` is retired.
struct Evolved(Balances);

#[derive(Deserialize)]
struct DepositedV1 {
    value: i64,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum DepositedV2 {
    Deposited { amount: i64 },
}

impl Projection for Evolved {
    type Event = Bank;
    type Unit = MemoryUnit;

    fn name(&self) -> &str {
        self.0.name()
    }

    fn filter(&self) -> LogFilter {
        self.0.filter()
    }

    fn upcasters(&self) -> Upcasters {
        let mut upcasters = Upcasters::new();
        upcasters
            .register_typed("Deposited", 1, |old: DepositedV1| DepositedV2::Deposited {
                amount: old.value,
            })
            .retire("Frozen");
        upcasters
    }

    async fn apply(
        &self,
        unit: &mut MemoryUnit,
        context: &ApplyContext,
        events: &[Recorded<Bank>],
    ) -> Result<(), HandlerError> {
        self.0.apply(unit, context, events).await
    }

    async fn reset(
        &self,
        unit: &mut MemoryUnit,
        context: &ApplyContext,
    ) -> Result<(), HandlerError> {
        self.0.reset(unit, context).await
    }
}

fn old_deposit(value: i64) -> EventData {
    let mut event = EventData::new(
        "Deposited",
        Payload::json(format!(r#"{{"type":"Deposited","value":{value}}}"#)),
    );
    event.schema_version = 1;
    event
}

/// Today's deposit: version 2.
fn new_deposit(amount: i64) -> EventData {
    let mut event = deposit(amount);
    event.schema_version = 2;
    event
}

fn frozen() -> EventData {
    EventData::new("Frozen", Payload::json(r#"{"type":"Frozen"}"#))
}

async fn append_events(
    store: &MemoryStore,
    events: Vec<EventData>,
) -> Vec<crossfold_core::Position> {
    let appended = store
        .append(AppendRequest::new().stream(
            StreamId::new("account-1").unwrap(),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .unwrap();
    appended.events.iter().map(|e| e.position).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_payloads_are_upcast_and_retired_types_skipped() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    append_events(&store, vec![old_deposit(5), frozen(), new_deposit(3)]).await;
    let model = Model::default();
    let mut balances = Balances::new("evolved", model.clone());
    balances.poison = Some(-13);
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("a"));
    runner.spawn(
        Evolved(balances),
        ProjectionOptions::default().batch_size(100),
    );
    eventually("both deposits applied", || {
        let status = runner.status_of("evolved").map(|s| s.status);
        assert!(
            status
                .as_ref()
                .is_none_or(|s| s.state != ProjectionState::Failed),
            "{status:?}"
        );
        model.applied(1) == 2
    })
    .await;
    assert_eq!(model.balances(1)["account-1"], 8);

    // A batch with a retired event and one the handler rejects: applied one at a time, the
    // retired one is skipped and the checkpoint moves past it before the rejection stops the
    // projection.
    let positions = append_events(&store, vec![frozen(), new_deposit(-13)]).await;
    eventually("failed", || {
        runner.status_of("evolved").unwrap().status.state == ProjectionState::Failed
    })
    .await;
    let stored = checkpoints.get("evolved").await.unwrap().unwrap();
    assert_eq!(
        stored.position, positions[0],
        "moved past the skipped event"
    );
    assert_eq!(
        runner.status_of("evolved").unwrap().status.error_position,
        Some(positions[1])
    );
    assert_eq!(model.applied(1), 2);
    runner.shutdown().await;
}
