//! A log partitioned by position (migration 14) keeps every guarantee of the unpartitioned
//! one: converted while appends go on, a million events over several partitions are read back
//! once each and in order; a partition detached leaves the log whole but for its events (a
//! stream read that needs them fails, typed) and attached again brings every one back; event
//! ids stay unique across partitions, detached ones included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{events, fresh_store, raw_client, sid};
use crossfold_core::{
    AppendRequest, EventData, EventId, EventStore, ExpectedVersion, LogFilter, Position, StoreError,
};
use crossfold_postgres::{PgEventStore, PgEventsDetached, PgLogPartitioning};

/// Reads the whole log; asserts positions rise and returns each event's id and stream.
async fn read_log(store: &PgEventStore) -> Vec<(EventId, String)> {
    let mut out = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store
            .read_all(after, 5_000, &LogFilter::all())
            .await
            .unwrap();
        let Some(last) = batch.last() else {
            return out;
        };
        for event in &batch {
            assert!(event.position > after, "{} after {after}", event.position);
            after = event.position;
            out.push((event.event_id, event.stream_id.as_str().to_owned()));
        }
        assert_eq!(last.position, after);
    }
}

/// How many events are in the default partition of `schema`'s log.
async fn in_default_partition(schema: &str) -> i64 {
    raw_client()
        .await
        .query_one(
            &format!("SELECT count(*) FROM {schema}.events_default"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Appends `calls` calls of 10 streams × `per_stream` events, from 4 tasks; stream names start
/// with `prefix`. Returns the ids written.
async fn load(store: &PgEventStore, prefix: &str, calls: usize, per_stream: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let next = next.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut written = 0;
                loop {
                    let call = next.fetch_add(1, Ordering::Relaxed);
                    if call >= calls {
                        return written;
                    }
                    let mut request = AppendRequest::new();
                    for s in 0..10 {
                        request = request.stream(
                            sid(&format!("{prefix}-{call}-{s}")),
                            ExpectedVersion::NoStream,
                            events("Loaded", per_stream),
                        );
                    }
                    written += store.append(request).await.unwrap().len();
                }
            })
        })
        .collect();
    let mut written = 0;
    for task in tasks {
        written += task.await.unwrap();
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_events_over_partitions_are_read_back_once_each() {
    let store = fresh_store().await;
    // 100,000 events before the conversion.
    assert_eq!(load(&store, "before", 100, 100).await, 100_000);

    // Converted while appends go on: each append succeeds (none reaches the bound here).
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let store = store.store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut written = 0;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                store
                    .append(AppendRequest::new().stream(
                        sid(&format!("during-{i}")),
                        ExpectedVersion::NoStream,
                        events("During", 3),
                    ))
                    .await
                    .unwrap();
                written += 3;
                i += 1;
            }
            written
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    store
        .partition_log(PgLogPartitioning::new(200).ahead(3).margin(1_000))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let during = during.await.unwrap();
    assert!(during > 0);
    let again = store
        .partition_log(PgLogPartitioning::new(200))
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::InvalidRequest(_)), "{again:?}");

    // Appends of one event until the log is past the first partition's margin, then the rest
    // in calls of 1,000 events, over partitions the store creates ahead as it goes.
    let first = store.log_partitions().await.unwrap()[0].upper.unwrap();
    let mut past = 0;
    loop {
        let appended = store
            .append(AppendRequest::new().stream(
                sid(&format!("past-{past}")),
                ExpectedVersion::NoStream,
                events("Past", 1),
            ))
            .await
            .unwrap();
        past += 1;
        if appended.events[0].position.commit() >= first {
            break;
        }
    }
    assert_eq!(load(&store, "after", 900, 100).await, 900_000);
    let total = 1_000_000 + during + past;
    let client = raw_client().await;

    let partitions = store.log_partitions().await.unwrap();
    let holding: Vec<_> = partitions.iter().filter(|p| p.upper.is_some()).collect();
    let schema = store.schema().to_owned();
    let mut counts = Vec::new();
    for p in &holding {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {schema}.{}", p.name), &[])
            .await
            .unwrap();
        counts.push((p.name.clone(), row.get::<_, i64>(0)));
    }
    let with_events = counts.iter().filter(|(_, n)| *n > 0).count();
    assert!(with_events >= 4, "{counts:?}");
    let default = in_default_partition(&schema).await;
    assert_eq!(default, 0, "no event fell outside the partitions");
    assert_eq!(
        counts.iter().map(|(_, n)| *n as usize).sum::<usize>(),
        total
    );

    // Every event once, in order.
    let log = read_log(&store).await;
    assert_eq!(log.len(), total);
    let ids: HashSet<EventId> = log.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), total);

    // The first partition (the converted table) detached: its events leave the log.
    let detached = store
        .detach_log_partition("events_000000", false)
        .await
        .unwrap();
    assert_eq!(detached as i64, counts[0].1);
    let without = read_log(&store).await;
    assert_eq!(without.len(), total - detached as usize);
    // A stream whose events it held cannot be read as if it were empty.
    let err = store
        .read_stream(&sid("before-0-0"), Default::default(), usize::MAX)
        .await
        .unwrap_err();
    let missing = PgEventsDetached::find(&err).expect("a typed error");
    assert_eq!(missing.missing(), (1, 100));
    // Its event ids stay taken: appending one again is a duplicate.
    let (old_id, _) = log.iter().find(|(_, s)| s == "before-0-0").unwrap().clone();
    let mut event = EventData::new("Again", crossfold_core::Payload::json(b"{}".to_vec()));
    event.event_id = old_id;
    let err = store
        .append(AppendRequest::new().stream(sid("fresh-stream"), ExpectedVersion::Any, vec![event]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateEvent(id) if id == old_id),
        "{err:?}"
    );
    // Nobody changes it while it is out.
    let refused = client
        .batch_execute(&format!("DELETE FROM {schema}.events_000000"))
        .await
        .unwrap_err();
    assert_eq!(refused.code().unwrap().code(), "CF002");
    // Nor can a partition the log has not passed be detached.
    let open = holding.last().unwrap();
    let err = store
        .detach_log_partition(&open.name, false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");

    // Attached again: every event once, in order, as before.
    assert_eq!(
        store.attach_log_partition("events_000000").await.unwrap(),
        detached
    );
    let back = read_log(&store).await;
    assert_eq!(back, log);
    assert_eq!(
        store
            .read_stream(&sid("before-0-0"), Default::default(), usize::MAX)
            .await
            .unwrap()
            .events
            .len(),
        100
    );
    // Stream versions stay unique across partitions: the stream's row guards them.
    assert!(
        store
            .append(AppendRequest::new().stream(
                sid("before-0-0"),
                ExpectedVersion::Exact(99.into()),
                events("Late", 1)
            ))
            .await
            .unwrap_err()
            .is_conflict()
    );
}

#[tokio::test]
async fn the_store_keeps_partitions_ahead_of_its_appends() {
    let store = fresh_store().await;
    store
        .partition_log(PgLogPartitioning::new(100).ahead(3).margin(50))
        .await
        .unwrap();
    let before = store.log_partitions().await.unwrap().len();
    for i in 0..1_000 {
        store
            .append(AppendRequest::new().stream(
                sid(&format!("s-{i}")),
                ExpectedVersion::NoStream,
                events("E", 1),
            ))
            .await
            .unwrap();
    }
    // Created in the background: wait for the last call to be done.
    let mut partitions = store.log_partitions().await.unwrap();
    for _ in 0..50 {
        if partitions.len() >= before + 9 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        partitions = store.log_partitions().await.unwrap();
    }
    assert!(partitions.len() >= before + 9, "{partitions:#?}");
    let client = raw_client().await;
    let default = in_default_partition(store.schema()).await;
    assert_eq!(default, 0);
    assert_eq!(read_log(&store).await.len(), 1_000);
    let health = store.health().await.unwrap();
    assert!(health.partitions_ahead.unwrap() >= 2, "{health:?}");
    assert!(!health.events_outside_partitions);

    // An event beyond every partition (written by hand: appends use the next transaction id)
    // lands in the default partition, and health says so.
    client
        .batch_execute(&format!(
            "INSERT INTO {}.events (transaction_id, event_id, stream_id, stream_version, \
                 event_type, schema_version, payload_json, metadata) \
             VALUES ('900000000000', '0190b4d2-0000-7000-8000-0000000000aa', 'by-hand', 1, 'E', 1, \
                     '{{}}', '{{\"recorded_at\": 1}}')",
            store.schema()
        ))
        .await
        .unwrap();
    let health = store.health().await.unwrap();
    assert!(health.events_outside_partitions, "{health:?}");
    let report = crossfold_core::HealthCheck::check_health(&*store).await;
    assert_eq!(
        report.status,
        crossfold_core::HealthStatus::Degraded,
        "{report:?}"
    );
}

/// After a new log epoch (the store moved to another cluster: positions jump by at least
/// 2^32) appends land in partitions created at the new positions, not in the default one, and
/// the log reads on in order.
#[tokio::test]
async fn a_new_log_epoch_gets_partitions_of_its_own() {
    let store = fresh_store().await;
    store
        .partition_log(PgLogPartitioning::new(1_000).ahead(2).margin(50))
        .await
        .unwrap();
    let before = store
        .append(AppendRequest::new().stream(
            sid("before"),
            ExpectedVersion::NoStream,
            events("E", 1),
        ))
        .await
        .unwrap();
    // What a restore into another cluster looks like to the log-order check.
    raw_client()
        .await
        .batch_execute(&format!(
            "UPDATE {}.log_state SET system_identifier = system_identifier + 1",
            store.schema()
        ))
        .await
        .unwrap();
    assert!(store.check_log_order().await.unwrap());
    assert!(store.ensure_log_partitions().await.unwrap() > 0);
    let after = store
        .append(AppendRequest::new().stream(
            sid("after"),
            ExpectedVersion::NoStream,
            events("E", 1),
        ))
        .await
        .unwrap();
    let (was, is) = (before.events[0].position, after.events[0].position);
    assert!(is.commit() >= was.commit() + (1 << 32), "{was} then {is}");
    let health = store.health().await.unwrap();
    assert!(!health.events_outside_partitions, "{health:?}");
    assert!(health.partitions_ahead.unwrap() >= 1, "{health:?}");
    let log = read_log(&store).await;
    assert_eq!(
        log.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["before", "after"]
    );
}

/// A store connected before another process partitioned the log learns of it when it looks at
/// the schema again (with its read indexes; here through `migrate`), and keeps partitions
/// ahead of its own appends from then on.
#[tokio::test]
async fn a_store_connected_before_the_conversion_keeps_partitions_ahead() {
    let early = fresh_store().await;
    let converter = PgEventStore::connect(common::config(early.schema()))
        .await
        .unwrap();
    converter
        .partition_log(PgLogPartitioning::new(100).ahead(3).margin(50))
        .await
        .unwrap();
    early.migrate().await.unwrap();
    for i in 0..1_000 {
        early
            .append(AppendRequest::new().stream(
                sid(&format!("s-{i}")),
                ExpectedVersion::NoStream,
                events("E", 1),
            ))
            .await
            .unwrap();
    }
    // The last extension runs in the background: wait for it before looking.
    for _ in 0..50 {
        if early.log_partitions().await.unwrap().len() >= 12 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let default = in_default_partition(early.schema()).await;
    assert_eq!(default, 0, "the early store kept partitions ahead");
    assert_eq!(read_log(&early).await.len(), 1_000);
}
