//! Appends give way to writers that take turns (migration 10): while another session holds the
//! turn on a stream, or waits for it, an append made without the turn is refused — a conflict
//! marked `turn_held`, nothing written — whether it goes through `append_one`, `append` or a
//! group; the turn's holder appends under it; other streams are not held up; and once the turn
//! is given back, plain appends go through again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Commit, config, events, fresh_store, fresh_store_in, sid};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion, StoreError, StreamVersion};
use crossfold_postgres::PgEventStore;

fn one(stream: &str, expected: ExpectedVersion) -> AppendRequest {
    AppendRequest::new().stream(sid(stream), expected, events("Happened", 1))
}

/// The conflicts of a refused append, each `(stream, turn_held)`.
fn refused(result: Result<crossfold_core::Appended, StoreError>) -> Vec<(String, bool)> {
    match result {
        Err(StoreError::Conflict(conflicts)) => conflicts
            .iter()
            .map(|c| (c.stream.as_str().to_owned(), c.turn_held))
            .collect(),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn version(store: &PgEventStore, stream: &str) -> u64 {
    store.stream_version(&sid(stream)).await.unwrap().get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_without_the_turn_are_refused_and_write_nothing() {
    let test = fresh_store().await;
    let store = &test.store;
    // Another node: its own pool on the same schema.
    let other = PgEventStore::connect(config(&test.schema.0)).await.unwrap();
    store
        .append(one("hot", ExpectedVersion::Any))
        .await
        .unwrap();
    store
        .append(one("cold", ExpectedVersion::Any))
        .await
        .unwrap();

    let turn = other.take_turn(&[sid("hot")]).await.unwrap();
    assert!(turn.is_held());

    // One stream, one event (append_one), with the right expected version: refused for the
    // turn, and the conflict says so.
    let exact = ExpectedVersion::Exact(StreamVersion::new(1));
    assert_eq!(
        refused(store.append(one("hot", exact)).await),
        [("hot".to_owned(), true)]
    );
    // Several streams (append): refused on the turn's stream only, and nothing is written to
    // the other.
    let both = one("cold", ExpectedVersion::Any).stream(
        sid("hot"),
        ExpectedVersion::Any,
        events("Happened", 2),
    );
    assert_eq!(
        refused(store.append(both).await),
        [("hot".to_owned(), true)]
    );
    // A stream only checked, not written, gives way too: a decision made on it must not beat
    // the turn's holder either.
    let checked = one("cold", ExpectedVersion::Any).check(sid("hot"), exact);
    assert_eq!(
        refused(store.append(checked).await),
        [("hot".to_owned(), true)]
    );
    // The same session's process, through its pool (not the turn's session): refused as well.
    assert_eq!(
        refused(other.append(one("hot", exact)).await),
        [("hot".to_owned(), true)]
    );
    assert_eq!(version(store, "hot").await, 1);
    assert_eq!(
        version(store, "cold").await,
        1,
        "a refused append wrote nothing"
    );

    // Other streams are not held up.
    store
        .append(one("cold", ExpectedVersion::Any))
        .await
        .unwrap();
    // A real conflict under someone else's turn is still reported with its actual version.
    match store
        .append(one("hot", ExpectedVersion::Exact(StreamVersion::new(7))))
        .await
    {
        Err(StoreError::Conflict(c)) => assert_eq!(c[0].actual.get(), 1),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // The holder appends under its turn, one stream or several.
    other
        .append_in_turn(&turn, one("hot", exact))
        .await
        .unwrap();
    let several = one("cold", ExpectedVersion::Any).stream(
        sid("hot"),
        ExpectedVersion::Exact(StreamVersion::new(2)),
        events("Happened", 2),
    );
    other.append_in_turn(&turn, several).await.unwrap();
    assert_eq!(version(store, "hot").await, 4);
    // A turn on "hot" does not cover "cold" if another holds "cold"'s turn: refused there.
    let cold_turn = store.take_turn(&[sid("cold")]).await.unwrap();
    let crossing = one("cold", ExpectedVersion::Any).stream(
        sid("hot"),
        ExpectedVersion::Any,
        events("Happened", 1),
    );
    assert_eq!(
        refused(other.append_in_turn(&turn, crossing).await),
        [("cold".to_owned(), true)]
    );
    drop(cold_turn);

    // Given back: plain appends go through again (the give-back is sent as the turn drops,
    // without waiting for its answer; allow it a moment to arrive).
    drop(turn);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.append(one("hot", ExpectedVersion::Any)).await {
            Ok(_) => break,
            Err(StoreError::Conflict(c)) if c.iter().all(|c| c.turn_held) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the turn was never given back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(version(store, "hot").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_gives_way_to_a_caller_waiting_for_the_turn() {
    let test = fresh_store().await;
    let store = &test.store;
    let other = PgEventStore::connect(config(&test.schema.0)).await.unwrap();
    let stream = sid("hot");
    store
        .append(one("hot", ExpectedVersion::Any))
        .await
        .unwrap();
    // This node holds the turn, the other waits for it.
    let mine = store
        .take_turn(std::slice::from_ref(&stream))
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let (other, stream) = (other.clone(), stream.clone());
        async move { other.take_turn(&[stream]).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    // A third writer, without a turn, gives way to the one waiting, not only to the holder.
    let third = PgEventStore::connect(config(&test.schema.0)).await.unwrap();
    assert_eq!(
        refused(third.append(one("hot", ExpectedVersion::Any)).await),
        [("hot".to_owned(), true)]
    );
    // The holder's session still gets through although someone waits behind it.
    store
        .append_in_turn(&mine, one("hot", ExpectedVersion::Any))
        .await
        .unwrap();
    drop(mine);
    let theirs = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the turn was not handed on")
        .unwrap();
    assert!(theirs.waited());
    other
        .append_in_turn(&theirs, one("hot", ExpectedVersion::Any))
        .await
        .unwrap();
    drop(theirs);
    assert_eq!(version(store, "hot").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouped_append_gives_way_and_the_rest_of_its_group_commits() {
    let test = fresh_store_in(Commit::EachInAGroup).await;
    let other = PgEventStore::connect(config(&test.schema.0)).await.unwrap();
    let turn = other.take_turn(&[sid("hot")]).await.unwrap();
    let outcomes = test
        .store
        .append_together(vec![
            one("hot", ExpectedVersion::Any),
            one("cold", ExpectedVersion::Any),
        ])
        .await;
    let mut outcomes = outcomes.into_iter();
    assert_eq!(
        refused(outcomes.next().unwrap()),
        [("hot".to_owned(), true)]
    );
    outcomes.next().unwrap().unwrap();
    assert_eq!(version(&test.store, "hot").await, 0);
    assert_eq!(version(&test.store, "cold").await, 1);
    drop(turn);
}

/// A session that does not say it gives way (a process built before migration 10, another
/// client of the app role) appends as before while a turn is held; one that does is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_sessions_that_give_way_are_refused() {
    let test = fresh_store().await;
    let schema = &test.schema.0;
    let turn = test.store.take_turn(&[sid("hot")]).await.unwrap();
    let append_one = |id: &str| {
        format!(
            "SELECT * FROM \"{schema}\".append_one('hot', -1, \
             ARRAY['0190b4d2-0000-7000-8000-00000000000{id}']::uuid[], ARRAY['E'], \
             ARRAY[1], ARRAY['{{}}']::jsonb[], ARRAY[NULL]::bytea[], ARRAY['{{}}']::jsonb[])"
        )
    };
    let old_build = common::raw_client().await;
    old_build.batch_execute(&append_one("1")).await.unwrap();
    let new_build = common::raw_client().await;
    new_build
        .batch_execute("SET crossfold.give_way = on")
        .await
        .unwrap();
    let refused = new_build.batch_execute(&append_one("2")).await.unwrap_err();
    assert_eq!(refused.code().map(|c| c.code()), Some("CF001"), "{refused}");
    assert_eq!(version(&test.store, "hot").await, 1);
    drop(turn);
}

/// The session holding a turn ends (terminated by an operator, a network failure): the server
/// gives its locks back, and the holder's appends go through the pool instead of failing on
/// the dead connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_session_ended_appends_through_the_pool() {
    let test = fresh_store().await;
    let turn = test.store.take_turn(&[sid("hot")]).await.unwrap();
    let admin = common::raw_client().await;
    let ended = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND classid = 1128682578 AND granted \
             AND objid = (hashtext($1::text || '.hot'))::oid",
            &[&test.schema.0],
        )
        .await
        .unwrap();
    assert_eq!(ended, 1, "the turn's session was found and ended");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match test
            .store
            .append_in_turn(&turn, one("hot", ExpectedVersion::Any))
            .await
        {
            Ok(_) => break,
            // The first call may still find the connection open and fail on it, and the
            // server releases the session's locks only once its process has exited.
            Err(e)
                if e.is_transient()
                    || (!e.conflicts().is_empty() && e.conflicts().iter().all(|c| c.turn_held))
                    || e.to_string().contains("unavailable") =>
            {
                assert!(tokio::time::Instant::now() < deadline, "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(version(&test.store, "hot").await, 1);
}
