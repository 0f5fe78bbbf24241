//! Waking subscribers: an append in one process wakes a waiter in another through
//! LISTEN/NOTIFY, the listener comes back after its connection is killed, and the health check
//! reports the pool, the listener and the oldest open transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{config, events, fresh_store_with, raw_client, sid};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion, LogFilter, SubscriptionOptions};
use crossfold_postgres::PgEventStore;

/// A long wait, so returning well before it proves a wake-up rather than a timeout.
const LONG: Duration = Duration::from_secs(30);

async fn until_listening(store: &PgEventStore) {
    for _ in 0..200 {
        if store.health().await.unwrap().listener_connected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the LISTEN connection did not come up");
}

/// Appends with `writer` while `reader` waits; returns how long the wait took.
async fn woken_by_other_store(
    reader: &PgEventStore,
    writer: &PgEventStore,
    stream: &str,
) -> Duration {
    let head = reader.head_position().await.unwrap();
    let waiter = {
        let reader = reader.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            reader.wait_for_events(head, LONG).await.unwrap();
            start.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer
        .append(AppendRequest::new().stream(sid(stream), ExpectedVersion::Any, events("E", 1)))
        .await
        .unwrap();
    let waited = waiter.await.unwrap();
    assert!(waited < LONG / 2, "not woken: waited {waited:?}");
    let new = reader.read_all(head, 10, &LogFilter::all()).await.unwrap();
    assert_eq!(new.len(), 1);
    waited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_elsewhere_wakes_a_waiter_and_the_listener_recovers() {
    let name = format!("cf-listen-{:08x}", fastrand::u32(..));
    let reader = fresh_store_with(|mut c| {
        c.driver_config_mut().application_name(&name);
        c
    })
    .await;
    // A second store on the same schema stands for another process.
    let writer = PgEventStore::connect(config(reader.schema()))
        .await
        .unwrap();
    until_listening(&reader).await;
    woken_by_other_store(&reader, &writer, "first").await;

    // Kill the reader's LISTEN connection: it reconnects, and wake-ups work again.
    let killed: i64 = raw_client()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    until_listening(&reader).await;
    woken_by_other_store(&reader, &writer, "second").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_in_another_process_receives_live_events_in_order() {
    let reader = fresh_store_with(|c| c).await;
    let writer = PgEventStore::connect(config(reader.schema()))
        .await
        .unwrap();
    let mut subscription = reader.subscribe(
        SubscriptionOptions::all()
            .filter(LogFilter::streams([sid("live-0"), sid("live-2")]))
            .max_wait(LONG),
    );
    assert!(subscription.poll_batch().await.unwrap().is_empty());
    let appends = tokio::spawn(async move {
        let mut wanted = Vec::new();
        for i in 0..30 {
            let batch = events("E", 1);
            if i % 3 != 1 {
                wanted.push(batch[0].event_id);
            }
            writer
                .append(AppendRequest::new().stream(
                    sid(&format!("live-{}", i % 3)),
                    ExpectedVersion::Any,
                    batch,
                ))
                .await
                .unwrap();
        }
        wanted
    });
    let wanted = appends.await.unwrap();
    let mut got = Vec::new();
    while got.len() < wanted.len() {
        let event = tokio::time::timeout(LONG, subscription.next())
            .await
            .expect("subscription stalled")
            .unwrap();
        got.push(event.event_id);
    }
    assert_eq!(got, wanted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_an_open_writing_transaction() {
    let store = fresh_store_with(|c| c.pool_size(3)).await;
    store.ping().await.unwrap();
    let health = store.health().await.unwrap();
    assert_eq!(health.pool.max_size, 3);
    assert!(health.pool.size >= 1);

    let mut raw = raw_client().await;
    let tx = raw.transaction().await.unwrap();
    tx.query_one("SELECT pg_current_xact_id()", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let age = store.health().await.unwrap().oldest_transaction_age;
    assert!(
        age.is_some_and(|a| a >= Duration::from_millis(250)),
        "{age:?}"
    );
    tx.rollback().await.unwrap();
}
