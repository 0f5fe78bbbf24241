//! Reads and subscriptions from a streaming-replication standby, commands on the primary: a
//! primary and a standby of its own are started by the test (`initdb`, `pg_basebackup`, free
//! ports) and removed afterwards. Through the standby every event is delivered once and in the
//! primary's order while writers append concurrently; a write sent to the standby is refused
//! with a typed error and writes nothing; its replay lag shows in health and in the metrics;
//! and a subscriber following the standby goes on, skipping nothing, after the standby is
//! promoted and takes the writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{events, raw_client_at, sid, store_at};
use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, HealthCheck, HealthStatus, LogFilter,
    Position, RecordedEvent, SubscriptionExt, SubscriptionOptions,
};
use crossfold_postgres::{PgConfig, PgEventStore, PgReadOnly};
use crossfold_testkit::cluster::{StopMode, TestCluster};
use metrics_exporter_prometheus::PrometheusBuilder;

const DELIVERY: Duration = Duration::from_secs(60);

/// A store in `bank` on `url` (a standby's: it polls instead of listening).
async fn store_on(url: &str) -> PgEventStore {
    PgEventStore::connect(
        PgConfig::from_url(url)
            .unwrap()
            .schema("bank")
            .pool_size(4)
            .long_transaction_threshold(Duration::from_secs(1)),
    )
    .await
    .unwrap()
}

/// `writers` tasks each appending `each` one-event appends on `store`; the ids written.
async fn write(store: &PgEventStore, tag: &str, writers: usize, each: usize) -> Vec<EventId> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..each {
                let batch = events("Appended", 1);
                ids.push(batch[0].event_id);
                store
                    .append(AppendRequest::new().stream(
                        sid(&format!("{tag}{w}-{}", i % 7)),
                        ExpectedVersion::Any,
                        batch,
                    ))
                    .await
                    .unwrap();
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    ids
}

/// The whole log as `store` shows it, in order.
async fn whole_log(store: &PgEventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(after, 1_000, &LogFilter::all())
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return all;
        };
        after = last.position;
        all.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_delivers_every_event_once_in_order_and_follows_its_promotion() {
    let mut primary = TestCluster::start_new().unwrap();
    let store = store_at(&primary.url(), "bank").await;
    store.migrate().await.unwrap();
    let mut standby = TestCluster::standby_of(&primary).unwrap();
    standby.start().unwrap();
    let replica = store_on(&standby.url()).await;
    let health = replica.health().await.unwrap();
    assert!(health.in_recovery);
    let listener = replica.listener_health().check_health().await;
    assert_eq!(
        listener.details["listening"], false,
        "a standby's store does not listen"
    );
    assert_eq!(listener.status, HealthStatus::Healthy);
    assert!(!store.health().await.unwrap().in_recovery);

    // A subscriber on the standby follows the log while four writers append on the primary.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RecordedEvent>();
    let follower = tokio::spawn({
        let replica = replica.clone();
        async move {
            let mut subscription = replica.subscribe(SubscriptionOptions::all());
            loop {
                match subscription.next_batch().await {
                    Ok(batch) => {
                        for event in batch.events {
                            if tx.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    // A recovery conflict, or the promotion: read again.
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("the subscriber on the standby failed: {e}"),
                }
            }
        }
    });
    let receive = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<RecordedEvent>,
                         got: &mut Vec<RecordedEvent>,
                         n: usize| {
        let deadline = tokio::time::Instant::now() + DELIVERY;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(event)) => got.push(event),
                _ => panic!("the standby delivered {} of {n} events", got.len()),
            }
        }
    };
    let written = write(&store, "w", 4, 100).await;
    let mut delivered = Vec::new();
    receive(&mut rx, &mut delivered, written.len()).await;
    let on_primary = whole_log(&store).await;
    assert_eq!(on_primary.len(), written.len());
    assert_eq!(
        delivered.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        on_primary.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        "the standby delivers the primary's log, each event once, in its order"
    );

    // A write sent to the standby is refused, typed, and writes nothing.
    let refused = replica
        .append(AppendRequest::new().stream(
            sid("on-the-standby"),
            ExpectedVersion::NoStream,
            events("Appended", 1),
        ))
        .await
        .unwrap_err();
    assert!(PgReadOnly::find(&refused).is_some(), "{refused:?}");
    assert!(!refused.is_transient(), "{refused:?}");
    assert_eq!(whole_log(&store).await.len(), written.len());

    // More writes, all delivered through the standby; then the primary goes away and the
    // standby is promoted, and writes go to it.
    let before = write(&store, "x", 2, 25).await;
    receive(&mut rx, &mut delivered, written.len() + before.len()).await;
    let epochs = async |url: &str| -> i64 {
        raw_client_at(url)
            .await
            .query_one("SELECT count(*) FROM bank.log_epochs", &[])
            .await
            .unwrap()
            .get(0)
    };
    let epochs_before = epochs(&standby.url()).await;
    drop(store);
    primary.stop(StopMode::Fast).unwrap();
    standby.promote().unwrap();
    let deadline = tokio::time::Instant::now() + DELIVERY;
    while replica.health().await.unwrap().in_recovery {
        assert!(tokio::time::Instant::now() < deadline, "never promoted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted = store_at(&standby.url(), "bank").await;
    let after = write(&promoted, "y", 2, 25).await;
    assert!(
        epochs(&standby.url()).await > epochs_before,
        "the promoted server's log starts a new epoch"
    );
    let total = written.len() + before.len() + after.len();
    receive(&mut rx, &mut delivered, total).await;

    // The subscriber that followed the standby went on after its promotion: every event once,
    // in the promoted server's log order, positions rising across the failover.
    let log = whole_log(&promoted).await;
    assert_eq!(log.len(), total);
    assert_eq!(
        delivered.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        log.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert!(delivered.windows(2).all(|w| w[0].position < w[1].position));
    let mut ids: Vec<EventId> = delivered.iter().map(|e| e.event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total);
    // And nothing more comes, after more than two of its polls: no event twice.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    follower.abort();
    assert!(rx.try_recv().is_err(), "an event delivered twice");
}

#[test]
fn a_standby_reports_its_replay_lag_in_health_and_metrics() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let primary = TestCluster::start_new().unwrap();
    let mut standby = TestCluster::standby_of(&primary).unwrap();
    standby.start().unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            crossfold_postgres::describe_metrics();
            let store = store_at(&primary.url(), "bank").await;
            store.migrate().await.unwrap();
            let replica = store_on(&standby.url()).await;
            let append = async || {
                store
                    .append(AppendRequest::new().stream(
                        sid("lagging"),
                        ExpectedVersion::Any,
                        events("Appended", 1),
                    ))
                    .await
                    .unwrap()
            };
            // Caught up: no lag.
            append().await;
            let deadline = tokio::time::Instant::now() + DELIVERY;
            loop {
                let health = replica.health().await.unwrap();
                if health
                    .replay_lag
                    .is_some_and(|l| l < Duration::from_secs(1))
                {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{health:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(replica.check_health().await.status, HealthStatus::Healthy);

            // Replay paused while the primary goes on: the lag grows, health degrades past
            // the threshold (1 s here), and the gauge says so.
            let standby_sql = raw_client_at(&standby.url()).await;
            standby_sql
                .batch_execute("SELECT pg_wal_replay_pause()")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            append().await;
            let deadline = tokio::time::Instant::now() + DELIVERY;
            let report = loop {
                let report = replica.check_health().await;
                let lag = report.details["replay_lag_seconds"].as_f64().unwrap_or(0.0);
                if lag >= 1.5 && report.details["replay_lag_bytes"].as_u64().unwrap_or(0) > 0 {
                    break report;
                }
                assert!(tokio::time::Instant::now() < deadline, "{report:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
            assert!(
                report
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("replay trails the primary")),
                "{report:?}"
            );
            assert_eq!(report.details["in_recovery"], true);
            let text = handle.render();
            let gauge = text
                .lines()
                .find(|l| l.starts_with("crossfold_postgres_replay_lag_seconds{schema=\"bank\"}"))
                .unwrap_or_else(|| panic!("no replay lag gauge in:\n{text}"));
            let value: f64 = gauge.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(value >= 1.5, "{gauge}");

            // Replay resumed: the lag goes back to zero.
            standby_sql
                .batch_execute("SELECT pg_wal_replay_resume()")
                .await
                .unwrap();
            let deadline = tokio::time::Instant::now() + DELIVERY;
            loop {
                let health = replica.health().await.unwrap();
                if health.replay_lag == Some(Duration::ZERO) {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{health:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(replica.check_health().await.status, HealthStatus::Healthy);
            // The primary has no replay lag.
            let on_primary = store.health().await.unwrap();
            assert!(!on_primary.in_recovery);
            assert_eq!(on_primary.replay_lag, None);
        });
    });
}
