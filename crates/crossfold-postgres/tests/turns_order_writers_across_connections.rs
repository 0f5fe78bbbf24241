//! `take_turn` on PostgreSQL: callers on different pools (as different processes would be) take
//! turns on a common stream, the second waits until the first gives its turn back and says it
//! waited, disjoint streams do not wait for each other, and a wait that is abandoned (a time
//! limit) leaves no lock behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{config, fresh_store, raw_client, sid};
use crossfold_core::EventStore;
use crossfold_postgres::PgEventStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_caller_waits_for_the_first_turn_and_says_so() {
    let first = fresh_store().await;
    let second = PgEventStore::connect(config(&first.schema.0))
        .await
        .unwrap();
    let (a, b, c) = (sid("account-a"), sid("account-b"), sid("account-c"));

    let held = first
        .store
        .take_turn(&[b.clone(), a.clone()])
        .await
        .unwrap();
    assert!(held.is_held() && !held.waited(), "nobody else wanted it");

    // A stream the turn does not cover: no wait.
    let other = second.take_turn(std::slice::from_ref(&c)).await.unwrap();
    assert!(other.is_held() && !other.waited());
    drop(other);

    // A common stream: waits until the first turn is given back.
    let waiting = tokio::spawn({
        let (second, a) = (second.clone(), a.clone());
        async move { second.take_turn(&[a]).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "a turn on a stream another caller holds must wait"
    );
    drop(held);
    let taken = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the turn was not handed on")
        .unwrap();
    assert!(taken.is_held() && taken.waited());
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_wait_leaves_no_lock_behind() {
    let first = fresh_store().await;
    let second = PgEventStore::connect(config(&first.schema.0))
        .await
        .unwrap();
    let stream = sid("counter-1");

    let held = first
        .store
        .take_turn(std::slice::from_ref(&stream))
        .await
        .unwrap();
    // The second caller gives up waiting (as a command's time limit would make it).
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        second.take_turn(std::slice::from_ref(&stream)),
    )
    .await;
    assert!(gave_up.is_err(), "the wait must still be waiting");
    drop(held);

    // Whoever asks next gets the turn: the abandoned request holds nothing for long (its
    // session is closed, and the server drops its lock with it).
    let next = tokio::time::timeout(
        Duration::from_secs(30),
        first.store.take_turn(std::slice::from_ref(&stream)),
    )
    .await
    .expect("an abandoned wait kept the turn")
    .unwrap();
    assert!(next.is_held());
    assert_eq!(
        advisory_locks_held_for(&first.schema.0, &stream).await,
        1,
        "the turn is one advisory lock under the stream's key"
    );
    drop(next);

    // And once everyone has given their turn back, no lock of ours is left on the server.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while advisory_locks_held_for(&first.schema.0, &stream).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a turn's lock outlived it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Locks of this store's turn on `stream` (the first key is the turns' class, `CFTR`),
/// granted to any session.
async fn advisory_locks_held_for(schema: &str, stream: &crossfold_core::StreamId) -> i64 {
    // The second key is hashtext(schema || '.' || stream), as the append functions compute it
    // (migration 10): pinned here through the server's own function.
    raw_client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid = 1128682578 \
             AND objid = (hashtext($1::text || '.' || $2::text))::oid",
            &[&schema, &stream.as_str()],
        )
        .await
        .unwrap()
        .get(0)
}
