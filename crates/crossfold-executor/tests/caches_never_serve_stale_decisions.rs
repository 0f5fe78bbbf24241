//! The executor caches folded states and stream events, but a cache is only a hint: a second
//! process writing the same streams must never make the first decide on old data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use common::*;
use crossfold_executor::Executor;
use crossfold_memory::MemoryStore;

#[tokio::test]
async fn a_refusal_made_on_a_cached_state_is_confirmed_first() {
    let store = MemoryStore::new();
    let here = Executor::new(store.clone());
    let elsewhere = Executor::new(store.clone());
    here.execute(Credit {
        account: sid("a"),
        amount: 5,
    })
    .await
    .unwrap();
    // `here` now has a = 5 cached. Another process adds money.
    elsewhere
        .execute(Credit {
            account: sid("a"),
            amount: 100,
        })
        .await
        .unwrap();
    // With the cached state alone this debit would be refused; it must see the 100.
    let done = here
        .execute(Debit {
            account: sid("a"),
            amount: 50,
        })
        .await
        .unwrap();
    assert_eq!(done.events.len(), 1);
    assert_eq!(balance(&store, &sid("a")).await, 55);
}

#[tokio::test]
async fn a_write_made_on_a_cached_state_conflicts_and_is_redone_on_fresh_data() {
    let store = MemoryStore::new();
    let here = Executor::new(store.clone());
    let elsewhere = Executor::new(store.clone());
    here.execute(Credit {
        account: sid("a"),
        amount: 60,
    })
    .await
    .unwrap();
    elsewhere
        .execute(Debit {
            account: sid("a"),
            amount: 50,
        })
        .await
        .unwrap();
    // `here` believes a = 60; the truth is 10. Debiting 30 must be refused, not overdraw.
    let err = here
        .execute(Debit {
            account: sid("a"),
            amount: 30,
        })
        .await
        .unwrap_err();
    assert_eq!(err.rule(), Some("insufficient_funds"));
    assert_eq!(balance(&store, &sid("a")).await, 10);
}

#[tokio::test]
async fn commands_with_caches_off_behave_the_same() {
    let store = MemoryStore::new();
    let executor = Executor::builder(store.clone())
        .state_cache_bytes(0)
        .event_cache_bytes(0)
        .build();
    executor
        .execute(Credit {
            account: sid("a"),
            amount: 10,
        })
        .await
        .unwrap();
    executor
        .execute(Move {
            from: sid("a"),
            to: sid("b"),
            amount: 4,
        })
        .await
        .unwrap();
    let refused = executor
        .execute(Move {
            from: sid("a"),
            to: sid("b"),
            amount: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.rule(), Some("insufficient_funds"), "{refused:?}");
    assert_eq!(balance(&store, &sid("a")).await, 6);
    assert_eq!(balance(&store, &sid("b")).await, 4);
    assert_eq!(executor.cache_usage(), (0, 0));
}

#[tokio::test]
async fn the_caches_stay_within_their_budgets() {
    let store = MemoryStore::new();
    let executor = Executor::builder(store)
        .state_cache_bytes(64 * 1024)
        .event_cache_bytes(256 * 1024)
        .build();
    for i in 0..5_000 {
        executor
            .execute(Credit {
                account: sid(&format!("acct-{i}")),
                amount: 1,
            })
            .await
            .unwrap();
    }
    let (states, events) = executor.cache_usage();
    assert!(states <= 64 * 1024, "state cache holds {states} bytes");
    assert!(events <= 256 * 1024, "event cache holds {events} bytes");
    assert!(states > 0 && events > 0);
}
