//! Commands that declare `PER_STREAM` keep one folded part per stream: a new combination of
//! streams the executor has seen costs no read, and the parts stay correct when other
//! processes write the same streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The executor's own tests' ledger domain: these tests drive the executor through the
// testkit's fault injection, so they live in this package (the executor cannot dev-depend on the
// testkit, which depends on the executor).
#[path = "../crates/crossfold-executor/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use crossfold_executor::{Executor, RetryPolicy};
use crossfold_memory::MemoryStore;
use crossfold_testkit::{Fault, FaultKind, FaultyStore, Operation};

#[tokio::test]
async fn a_new_combination_of_known_streams_reads_nothing() {
    let store = FaultyStore::in_memory();
    let executor = Executor::new(store.clone());
    executor
        .execute(Credit {
            account: sid("a"),
            amount: 100,
        })
        .await
        .unwrap();
    let mv = |from: &str, to: &str| {
        PerStream(Move {
            from: sid(from),
            to: sid(to),
            amount: 1,
        })
    };
    executor.execute(mv("a", "b")).await.unwrap();
    let reads = store.calls(Operation::ReadStreams);
    executor.execute(mv("b", "c")).await.unwrap();
    assert_eq!(
        store.calls(Operation::ReadStreams),
        reads + 1,
        "only c is new"
    );
    let reads = store.calls(Operation::ReadStreams);
    executor.execute(mv("c", "a")).await.unwrap();
    executor.execute(mv("a", "c")).await.unwrap();
    assert_eq!(
        store.calls(Operation::ReadStreams),
        reads,
        "a and c were both known"
    );
    assert_eq!(balance(store.inner(), &sid("a")).await, 99);
    assert_eq!(balance(store.inner(), &sid("b")).await, 0);
    assert_eq!(balance(store.inner(), &sid("c")).await, 1);
}

#[tokio::test]
async fn parts_catch_up_after_another_process_writes() {
    let store = MemoryStore::new();
    let here = Executor::new(store.clone());
    let elsewhere = Executor::new(store.clone());
    here.execute(Credit {
        account: sid("a"),
        amount: 5,
    })
    .await
    .unwrap();
    here.execute(PerStream(Move {
        from: sid("a"),
        to: sid("b"),
        amount: 1,
    }))
    .await
    .unwrap();
    // `here` now holds a = 4 and b = 1 as parts. Another process adds money to a.
    elsewhere
        .execute(Credit {
            account: sid("a"),
            amount: 100,
        })
        .await
        .unwrap();
    // On its parts alone this move would be refused; it must see the 100.
    let done = here
        .execute(PerStream(Move {
            from: sid("a"),
            to: sid("b"),
            amount: 50,
        }))
        .await
        .unwrap();
    assert_eq!(done.events.len(), 2);
    // And a write on a part that is behind conflicts, catches up, and is redone.
    elsewhere
        .execute(Credit {
            account: sid("b"),
            amount: 7,
        })
        .await
        .unwrap();
    let done = here
        .execute(PerStream(Move {
            from: sid("b"),
            to: sid("a"),
            amount: 10,
        }))
        .await
        .unwrap();
    assert_eq!(done.conflicts, 1);
    assert_eq!(balance(&store, &sid("a")).await, 64);
    assert_eq!(balance(&store, &sid("b")).await, 48);
}

#[tokio::test]
async fn per_stream_and_merged_folds_decide_alike() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    for (account, amount) in [("a", 10), ("b", 3), ("c", 8)] {
        executor
            .execute(Credit {
                account: sid(account),
                amount,
            })
            .await
            .unwrap();
    }
    let streams = vec![sid("a"), sid("b"), sid("c")];
    let merged = executor
        .execute(Count {
            streams: streams.clone(),
        })
        .await
        .unwrap();
    let parts = executor
        .execute(PerStream(Count { streams }))
        .await
        .unwrap();
    assert_eq!(
        merged.decode::<Ledger>().unwrap()[0].event,
        Ledger::Counted { seen: 3 }
    );
    assert_eq!(
        parts.decode::<Ledger>().unwrap()[0].event,
        Ledger::Counted { seen: 4 },
        "the first count event is seen too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_per_stream_moves_under_faults_conserve_money() {
    let store = FaultyStore::in_memory()
        .with(
            Fault::on(Operation::Append)
                .with_probability(0.1, 3)
                .fail(FaultKind::Unavailable),
        )
        .with(
            Fault::on(Operation::Append)
                .with_probability(0.1, 4)
                .after_call()
                .fail(FaultKind::Timeout),
        )
        .with(
            Fault::on(Operation::ReadStreams)
                .with_probability(0.2, 5)
                .delay(Duration::from_micros(300)),
        );
    let accounts: Vec<_> = (0..5).map(|i| sid(&format!("acct-{i}"))).collect();
    let seed = Executor::new(store.inner().clone());
    for a in &accounts {
        seed.execute(Credit {
            account: a.clone(),
            amount: 50,
        })
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..6usize {
        let executor = Executor::builder(store.clone())
            .retry(
                RetryPolicy::default()
                    .max_attempts(100)
                    .base_delay(Duration::from_micros(50)),
            )
            .build();
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            let mut moved = 0;
            for i in 0..60usize {
                let from = accounts[(t * 3 + i) % 5].clone();
                let to = accounts[(t + i * 2 + 1) % 5].clone();
                if from == to {
                    continue;
                }
                match executor
                    .execute(PerStream(Move {
                        from,
                        to,
                        amount: 9,
                    }))
                    .await
                {
                    Ok(_) => moved += 1,
                    Err(e) if e.rule() == Some("insufficient_funds") || e.is_transient() => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            moved
        }));
    }
    let mut moved = 0;
    for t in tasks {
        moved += t.await.unwrap();
    }
    assert!(moved > 50, "too few moves succeeded: {moved}");
    let mut total = 0;
    for a in &accounts {
        let b = balance(store.inner(), a).await;
        assert!(b >= 0, "{a} went negative: {b}");
        total += b;
    }
    assert_eq!(total, 250);
}
