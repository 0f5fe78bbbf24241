//! Executions under one idempotency key write once, however often and however concurrently they
//! run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use common::*;
use crossfold_core::{
    Command, CommandError, Emit, EventStore, LogFilter, Position, StreamId, StreamRef,
};
use crossfold_executor::{ExecutionContext, Executor};
use crossfold_memory::MemoryStore;

/// A payment that must happen at most once per payment id, whatever the retries of the caller.
#[derive(Clone)]
struct Pay {
    account: StreamId,
    payment_id: String,
    amount: i64,
}

impl Command for Pay {
    type Event = Ledger;
    type State = Balances;
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.account.clone()
    }
    fn handle<'x>(
        &self,
        _: &Balances,
        account: StreamRef<'x>,
        out: &mut Emit<'x, Ledger>,
    ) -> Result<(), CommandError> {
        out.append(
            account,
            Ledger::Credited {
                amount: self.amount,
            },
        );
        Ok(())
    }
}

/// The context a caller runs a payment in: its key derives from the payment id, so a retried
/// payment reuses it.
fn keyed(pay: &Pay) -> ExecutionContext {
    ExecutionContext::new().idempotency_key(format!("pay-{}", pay.payment_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_executions_with_one_key_write_once() {
    let store = MemoryStore::new();
    // Two executors: like two processes, they share nothing but the store.
    let first = Executor::new(store.clone());
    let second = Executor::new(store.clone());
    let pay = || Pay {
        account: sid("acct"),
        payment_id: "p-1".into(),
        amount: 40,
    };
    let (a, b) = tokio::join!(
        tokio::spawn({
            let e = first.clone();
            async move { e.execute_with(pay(), &keyed(&pay())).await }
        }),
        tokio::spawn({
            let e = second.clone();
            async move { e.execute_with(pay(), &keyed(&pay())).await }
        }),
    );
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_eq!(
        a.replayed as u8 + b.replayed as u8,
        1,
        "exactly one of them is a replay"
    );
    assert_eq!(a.events, b.events, "both report the same, single outcome");
    assert_eq!(balance(&store, &sid("acct")).await, 40);
    let again = first.execute_with(pay(), &keyed(&pay())).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.events, a.events);
    assert_eq!(balance(&store, &sid("acct")).await, 40);
    let credited = store
        .read_all(Position::START, 100, &LogFilter::event_types(["Credited"]))
        .await
        .unwrap();
    assert_eq!(credited.len(), 1);
}

#[tokio::test]
async fn a_different_key_writes_again() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    for id in ["p-1", "p-2", "p-1"] {
        let pay = Pay {
            account: sid("acct"),
            payment_id: id.into(),
            amount: 5,
        };
        executor
            .execute_with(pay.clone(), &keyed(&pay))
            .await
            .unwrap();
    }
    assert_eq!(balance(&store, &sid("acct")).await, 10);
}

#[tokio::test]
async fn without_a_key_the_same_command_writes_each_time() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    let pay = Pay {
        account: sid("acct"),
        payment_id: "p-1".into(),
        amount: 5,
    };
    executor.execute(pay.clone()).await.unwrap();
    let again = executor.execute(pay).await.unwrap();
    assert!(!again.replayed);
    assert_eq!(balance(&store, &sid("acct")).await, 10);
}
