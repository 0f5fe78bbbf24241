//! Conflicts and transient store failures are retried with backoff until the policy gives up;
//! permanent failures are not; a lost acknowledgement never makes an idempotent command write
//! twice (nor any other: see `an_append_in_doubt_is_never_applied_twice`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The executor's own tests' ledger domain: these tests drive the executor through the
// testkit's fault injection, so they live in this package (the executor cannot dev-depend on the
// testkit, which depends on the executor).
#[path = "../crates/crossfold-executor/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use crossfold_core::{
    Command, CommandError, Emit, EventStore, LogFilter, Position, StoreError, StreamId, StreamRef,
};
use crossfold_executor::{Error, ExecutionContext, Executor, RetryPolicy};
use crossfold_testkit::{Fault, FaultKind, FaultyStore, Operation};

fn fast_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .base_delay(Duration::from_micros(100))
        .max_delay(Duration::from_millis(2))
}

async fn events_in(store: &impl EventStore) -> usize {
    store
        .read_all(Position::START, usize::MAX, &LogFilter::all())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn an_unavailable_store_is_retried() {
    let store = FaultyStore::in_memory()
        .with(
            Fault::on(Operation::Append)
                .nth(1)
                .fail(FaultKind::Unavailable),
        )
        .with(
            Fault::on(Operation::ReadStreams)
                .nth(1)
                .fail(FaultKind::Contention),
        );
    let executor = Executor::builder(store.clone())
        .retry(fast_retries(5))
        .build();
    let done = executor
        .execute(Credit {
            account: sid("a"),
            amount: 3,
        })
        .await
        .unwrap();
    assert!(done.attempts >= 2, "attempts: {}", done.attempts);
    assert_eq!(store.injected(), 2);
    assert_eq!(balance(store.inner(), &sid("a")).await, 3);
    assert_eq!(events_in(store.inner()).await, 1);
}

#[tokio::test]
async fn conflicts_are_retried_until_the_policy_gives_up_and_nothing_is_written() {
    let store = FaultyStore::in_memory().with(Fault::on(Operation::Append).conflict());
    let executor = Executor::builder(store.clone())
        .retry(fast_retries(4))
        .build();
    match executor
        .execute(Credit {
            account: sid("a"),
            amount: 3,
        })
        .await
    {
        Err(Error::Store {
            attempts,
            source: StoreError::Conflict(conflicts),
        }) => {
            assert_eq!(attempts, 4);
            assert_eq!(conflicts[0].stream, sid("a"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.calls(Operation::Append), 4);
    assert_eq!(events_in(store.inner()).await, 0);
}

#[tokio::test]
async fn a_permanent_store_failure_is_not_retried() {
    let store =
        FaultyStore::in_memory().with(Fault::on(Operation::Append).fail(FaultKind::Backend));
    let executor = Executor::builder(store.clone())
        .retry(fast_retries(5))
        .build();
    let err = executor
        .execute(Credit {
            account: sid("a"),
            amount: 3,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                source: StoreError::Backend(_),
                attempts: 1
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(store.calls(Operation::Append), 1);
}

#[tokio::test]
async fn a_store_that_stays_down_is_reported_unavailable() {
    let store = FaultyStore::in_memory().with(Fault::on_any().fail(FaultKind::Unavailable));
    let executor = Executor::builder(store.clone())
        .retry(fast_retries(3))
        .build();
    let err = executor
        .execute(Credit {
            account: sid("a"),
            amount: 3,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                source: StoreError::Unavailable(_),
                attempts: 3
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_slow_store_hits_the_execution_timeout() {
    let store = FaultyStore::in_memory()
        .with(Fault::on(Operation::Append).delay(Duration::from_millis(500)));
    let executor = Executor::builder(store.clone())
        .timeout(Duration::from_millis(30))
        .build();
    let err = executor
        .execute(Credit {
            account: sid("a"),
            amount: 3,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(30)),
        "{err:?}"
    );
}

struct Pay {
    account: StreamId,
}

impl Command for Pay {
    type Event = Ledger;
    type State = ();
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.account.clone()
    }
    fn handle<'x>(
        &self,
        _: &(),
        s: StreamRef<'x>,
        out: &mut Emit<'x, Ledger>,
    ) -> Result<(), CommandError> {
        out.append(s, Ledger::Credited { amount: 10 });
        Ok(())
    }
}

#[tokio::test]
async fn a_lost_acknowledgement_does_not_make_an_idempotent_command_write_twice() {
    // The first append commits, but the caller sees "unavailable" (a dropped connection).
    let store = FaultyStore::in_memory().with(
        Fault::on(Operation::Append)
            .nth(1)
            .after_call()
            .fail(FaultKind::Unavailable),
    );
    let executor = Executor::builder(store.clone())
        .retry(fast_retries(5))
        .build();
    let done = executor
        .execute_with(
            Pay { account: sid("a") },
            &ExecutionContext::new().idempotency_key("pay-1"),
        )
        .await
        .unwrap();
    // The executor finds its own first attempt's events before deciding again, so it never
    // gets as far as the idempotency record: the outcome is that attempt's, not a replay.
    assert!(!done.replayed);
    assert_eq!(store.calls(Operation::Append), 1);
    assert_eq!(done.events.len(), 1);
    assert_eq!(balance(store.inner(), &sid("a")).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_under_concurrency_never_break_the_books() {
    let store = FaultyStore::in_memory()
        .with(
            Fault::on(Operation::Append)
                .with_probability(0.15, 7)
                .fail(FaultKind::Unavailable),
        )
        .with(
            Fault::on(Operation::Append)
                .with_probability(0.1, 8)
                .conflict(),
        )
        .with(
            Fault::on(Operation::ReadStreams)
                .with_probability(0.1, 9)
                .fail(FaultKind::Contention),
        )
        .with(
            Fault::on(Operation::ReadStreams)
                .with_probability(0.2, 10)
                .delay(Duration::from_micros(200)),
        );
    let accounts: Vec<StreamId> = (0..4).map(|i| sid(&format!("acct-{i}"))).collect();
    let seed = Executor::new(store.inner().clone());
    for a in &accounts {
        seed.execute(Credit {
            account: a.clone(),
            amount: 100,
        })
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..8usize {
        // Separate executors: they contend through the store, like processes.
        let executor = Executor::builder(store.clone())
            .retry(fast_retries(50))
            .build();
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40usize {
                let from = accounts[(t + i) % 4].clone();
                let to = accounts[(t + 2 * i + 1) % 4].clone();
                if from == to {
                    continue;
                }
                match executor
                    .execute(Move {
                        from,
                        to,
                        amount: 7,
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.rule() == Some("insufficient_funds") || e.is_retryable() => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        store.injected() > 10,
        "the faults must actually fire ({})",
        store.injected()
    );
    let mut total = 0;
    for a in &accounts {
        let b = balance(store.inner(), a).await;
        assert!(b >= 0, "{a} is negative: {b}");
        total += b;
    }
    assert_eq!(total, 400);
}
