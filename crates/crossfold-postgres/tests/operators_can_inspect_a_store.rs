//! What the `crossfold` command builds on: listing streams by prefix with counts, finding one
//! event by id, where the last events of the log begin, and where a schema's migrations
//! stand — all without changing anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, LogFilter, Position, StreamId,
};
use crossfold_postgres::{PgEventStore, PgMigrationError};

async fn populated() -> TestStore {
    let store = fresh_store().await;
    for (stream, n) in [
        ("account-1", 2),
        ("account-2", 1),
        ("account_x", 1),
        ("order-9", 3),
        ("$idempotency-k", 1),
    ] {
        store
            .append(AppendRequest::new().stream(
                // The system stream too: an operator reads back whatever a store holds.
                StreamId::from_stored(stream).unwrap(),
                ExpectedVersion::NoStream,
                events("Ev", n),
            ))
            .await
            .unwrap();
    }
    // A stream checked while absent has a row at version 0: not a stream yet.
    store
        .append(AppendRequest::new().check(sid("account-3"), ExpectedVersion::NoStream))
        .await
        .unwrap();
    store
}

#[tokio::test]
async fn streams_are_listed_by_prefix_in_pages_with_counts() {
    let store = populated().await;
    let names = |list: Vec<crossfold_postgres::PgStreamInfo>| -> Vec<(String, u64)> {
        list.into_iter()
            .map(|s| (s.stream.as_str().to_owned(), s.version.get()))
            .collect()
    };
    let all = store.list_streams("", None, 100, false).await.unwrap();
    assert!(all.iter().all(|s| s.created_at <= s.updated_at));
    assert_eq!(
        names(all),
        [
            ("account-1", 2),
            ("account-2", 1),
            ("account_x", 1),
            ("order-9", 3)
        ]
        .map(|(s, n)| (s.to_owned(), n))
    );
    // `_` is a character, not a LIKE wildcard.
    let accounts = store
        .list_streams("account-", None, 100, false)
        .await
        .unwrap();
    assert_eq!(names(accounts).len(), 2);
    let page = store.list_streams("account", None, 1, false).await.unwrap();
    let next = store
        .list_streams("account", Some(&page[0].stream), 10, false)
        .await
        .unwrap();
    assert_eq!(
        names(next),
        [("account-2".to_owned(), 1), ("account_x".to_owned(), 1)]
    );
    let system = store.list_streams("$", None, 10, true).await.unwrap();
    assert_eq!(names(system), [("$idempotency-k".to_owned(), 1)]);
    assert!(
        store
            .list_streams("$", None, 10, false)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store.count_streams("account-", false).await.unwrap(),
        (2, 3)
    );
    assert_eq!(store.count_streams("", false).await.unwrap(), (4, 7));
    assert_eq!(store.count_streams("", true).await.unwrap(), (5, 8));
}

#[tokio::test]
async fn an_event_is_found_by_its_id_and_an_unknown_id_is_none() {
    let store = fresh_store().await;
    let appended = store
        .append(AppendRequest::new().stream(
            sid("order-1"),
            ExpectedVersion::NoStream,
            vec![json_event("Placed", r#"{"total": 12}"#)],
        ))
        .await
        .unwrap();
    let written = &appended.events[0];
    let found = store.read_event(written.event_id).await.unwrap().unwrap();
    assert_eq!(found.stream_id, written.stream_id);
    assert_eq!(found.position, written.position);
    assert_eq!(found.event_type.as_str(), "Placed");
    assert_eq!(store.read_event(EventId::generate()).await.unwrap(), None);
}

#[tokio::test]
async fn the_last_events_of_the_log_begin_after_the_position_found() {
    let store = populated().await;
    let everything = store
        .read_all(Position::START, 100, &LogFilter::all())
        .await
        .unwrap();
    let before = store
        .position_before_last(3, &LogFilter::all())
        .await
        .unwrap();
    let tail = store
        .read_all(before, 100, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(tail, everything[everything.len() - 3..]);

    let accounts = LogFilter::categories(["account"]);
    let before = store.position_before_last(1, &accounts).await.unwrap();
    let tail = store.read_all(before, 100, &accounts).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].stream_id.as_str(), "account-2");

    assert_eq!(
        store
            .position_before_last(1_000, &LogFilter::all())
            .await
            .unwrap(),
        Position::START
    );
}

#[tokio::test]
async fn migration_status_says_what_migrating_would_apply_and_changes_nothing() {
    let schema = SchemaGuard(fresh_schema());
    let store = PgEventStore::connect(config(&schema.0)).await.unwrap();
    let status = store.migration_status().await.unwrap();
    assert!(!status.schema_exists);
    assert_eq!(status.version, 0);
    let all: Vec<u32> = PgEventStore::migrations()
        .iter()
        .map(|m| m.version())
        .collect();
    assert_eq!(status.pending, all);
    // Still nothing there: the status only read.
    assert!(!store.migration_status().await.unwrap().schema_exists);

    store.migrate_to(1).await.unwrap();
    let status = store.migration_status().await.unwrap();
    assert_eq!(status.version, 1);
    assert_eq!(status.applied.len(), 1);
    assert_eq!(status.applied[0].0, 1);
    assert!(status.applied[0].1.is_some(), "{status:?}");
    assert_eq!(status.pending, all[1..]);
    assert!(matches!(
        store.check_schema().await,
        Err(PgMigrationError::Pending { version: 1, .. })
    ));

    store.migrate().await.unwrap();
    let status = store.migration_status().await.unwrap();
    assert!(status.pending.is_empty());
    assert_eq!(status.version, *all.last().unwrap());
}
