//! An archived stream (migration 14) leaves the log and every read of it, keeps every event in
//! the archive (readable on request), takes no new event, and a read of it answers as the
//! store is configured: a typed error or the archived events. On an unpartitioned and on a
//! partitioned log alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config, events, fresh_store, raw_client, sid};
use crossfold_core::{
    AppendRequest, EventStore, ExpectedVersion, LogFilter, Position, StoreError, StreamRead,
};
use crossfold_postgres::{PgArchivedReads, PgEventStore, PgLogPartitioning, PgStreamArchived};

async fn log_streams(store: &PgEventStore) -> Vec<String> {
    store
        .read_all(Position::START, 1_000, &LogFilter::all())
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_id.as_str().to_owned())
        .collect()
}

async fn archived_stream_lifecycle(partitioned: bool) {
    let store = fresh_store().await;
    if partitioned {
        store
            .partition_log(PgLogPartitioning::new(1_000).margin(50))
            .await
            .unwrap();
    }
    let schema = store.schema().to_owned();
    let client = raw_client().await;
    for (stream, expected, n) in [
        ("acc-1", ExpectedVersion::NoStream, 3),
        ("acc-2", ExpectedVersion::NoStream, 3),
        ("acc-1", ExpectedVersion::Exact(3.into()), 2),
    ] {
        store
            .append(AppendRequest::new().stream(sid(stream), expected, events("E", n)))
            .await
            .unwrap();
    }
    let before = store
        .read_stream(&sid("acc-1"), Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(before.events.len(), 5);

    // A projection that has not read the stream's last event holds the archive back.
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.projections (name) VALUES ('balances')"
        ))
        .await
        .unwrap();
    let err = store
        .archive_stream(&sid("acc-1"), false)
        .await
        .unwrap_err();
    match &err {
        StoreError::InvalidRequest(message) => assert!(message.contains("balances"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .read_stream(&sid("acc-1"), Default::default(), usize::MAX)
            .await
            .unwrap()
            .events,
        before.events,
        "a refused archive moves nothing"
    );
    assert_eq!(store.archive_stream(&sid("acc-1"), true).await.unwrap(), 5);

    // Gone from the log and from every read of the stream.
    assert_eq!(log_streams(&store).await, vec!["acc-2"; 3]);
    for err in [
        store
            .read_stream(&sid("acc-1"), Default::default(), usize::MAX)
            .await
            .unwrap_err(),
        store
            .read_stream(&sid("acc-1"), 2.into(), 1)
            .await
            .unwrap_err(),
        store
            .read_streams(&[StreamRead::all(sid("acc-2")), StreamRead::all(sid("acc-1"))])
            .await
            .unwrap_err(),
    ] {
        assert_eq!(
            PgStreamArchived::find(&err).map(PgStreamArchived::stream),
            Some("acc-1"),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }

    // Every event kept, as it was.
    let archived = store
        .read_archived_stream(&sid("acc-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archived.events, before.events);
    assert_eq!(archived.version, before.version);
    assert!(
        store
            .read_archived_stream(&sid("acc-2"))
            .await
            .unwrap()
            .is_none()
    );
    let id = before.events[0].event_id;
    assert_eq!(
        store.read_event(id).await.unwrap().unwrap(),
        before.events[0]
    );

    // No new event: refused, typed, and nothing written.
    let err = store
        .append(AppendRequest::new().stream(sid("acc-1"), ExpectedVersion::Any, events("E", 1)))
        .await
        .unwrap_err();
    assert_eq!(
        PgStreamArchived::find(&err).map(PgStreamArchived::stream),
        Some("acc-1"),
        "{err:?}"
    );
    let err = store
        .append(
            AppendRequest::new()
                .stream(sid("acc-3"), ExpectedVersion::NoStream, events("E", 1))
                .stream(
                    sid("acc-1"),
                    ExpectedVersion::Exact(5.into()),
                    events("E", 1),
                ),
        )
        .await
        .unwrap_err();
    assert!(PgStreamArchived::find(&err).is_some(), "{err:?}");
    assert!(
        store
            .append(AppendRequest::new().stream(
                sid("acc-1"),
                ExpectedVersion::NoStream,
                events("E", 1)
            ))
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert_eq!(log_streams(&store).await, vec!["acc-2"; 3]);
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT version FROM {schema}.streams WHERE stream_id = 'acc-1'), \
                        (SELECT count(*) FROM {schema}.archived_events), \
                        (SELECT count(*) FROM {schema}.streams WHERE stream_id = 'acc-3')"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 5);
    assert_eq!(row.get::<_, i64>(1), 5);
    assert_eq!(row.get::<_, i64>(2), 0);

    // Read back by a store configured so.
    let reading =
        PgEventStore::connect(config(&schema).archived_streams(PgArchivedReads::ReadBack))
            .await
            .unwrap();
    let back = reading
        .read_stream(&sid("acc-1"), Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(back.events, before.events);
    assert_eq!(back.version, before.version);
    let tail = reading
        .read_stream(&sid("acc-1"), 3.into(), 1)
        .await
        .unwrap();
    assert_eq!(tail.events, before.events[3..4]);
    let both = reading
        .read_streams(&[StreamRead::all(sid("acc-1")), StreamRead::all(sid("acc-2"))])
        .await
        .unwrap();
    assert_eq!(both[0].events, before.events);
    assert_eq!(both[1].events.len(), 3);

    // Refused: again, a system stream, a stream without events, and for everyone a change of
    // the events or the archive by hand.
    for stream in ["acc-1", "$idempotency-x", "nobody"] {
        let stream = crossfold_core::StreamId::from_stored(stream).unwrap();
        let err = store.archive_stream(&stream, true).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidRequest(_)),
            "{stream}: {err:?}"
        );
    }
    for statement in [
        format!("DELETE FROM {schema}.archived_events"),
        format!("UPDATE {schema}.archived_events SET event_type = 'X'"),
        format!("TRUNCATE {schema}.archived_events"),
        format!("DELETE FROM {schema}.events WHERE stream_id = 'acc-2'"),
        format!("UPDATE {schema}.streams SET archived = false WHERE stream_id = 'acc-1'"),
    ] {
        let err = client.batch_execute(&statement).await.unwrap_err();
        assert!(
            matches!(err.code().unwrap().code(), "CF002" | "CF012"),
            "{statement}: {err:?}"
        );
    }
}

#[tokio::test]
async fn an_archived_stream_leaves_the_log_and_loses_nothing() {
    archived_stream_lifecycle(false).await;
}

#[tokio::test]
async fn an_archived_stream_of_a_partitioned_log_leaves_it_and_loses_nothing() {
    archived_stream_lifecycle(true).await;
}
