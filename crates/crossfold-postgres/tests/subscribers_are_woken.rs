//! Waking subscribers: an append in one process wakes a waiter in another through
//! LISTEN/NOTIFY, the listener comes back after its connection is killed, and the health check
//! reports the pool, the listener and the oldest open transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{config, events, fresh_store_with, raw_client, sid};
use crossfold_core::{
    AppendRequest, EventStore, ExpectedVersion, LogFilter, SubscriptionExt, SubscriptionOptions,
};
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

/// A caught-up subscription is woken by each append of another process: every matching event
/// arrives long before the subscription's own polling interval (`LONG`) would have found it,
/// and events the filter leaves out wake it without being delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_in_another_process_is_woken_by_each_live_event() {
    let reader = fresh_store_with(|c| c).await;
    let writer = PgEventStore::connect(config(reader.schema()))
        .await
        .unwrap();
    until_listening(&reader).await;
    let mut subscription = reader.store.subscribe(
        SubscriptionOptions::all()
            .filter(LogFilter::streams([sid("live-0"), sid("live-2")]))
            .max_wait(LONG),
    );
    assert!(
        subscription
            .read_available()
            .await
            .unwrap()
            .events
            .is_empty()
    );
    assert!(subscription.is_caught_up());
    for i in 0..9 {
        let batch = events("E", 1);
        let id = batch[0].event_id;
        let started = Instant::now();
        writer
            .append(AppendRequest::new().stream(
                sid(&format!("live-{}", i % 3)),
                ExpectedVersion::Any,
                batch,
            ))
            .await
            .unwrap();
        if i % 3 == 1 {
            continue;
        }
        // Polling alone would take `LONG`: arriving within half of it proves a wake-up.
        let event = tokio::time::timeout(LONG / 2, subscription.next_event())
            .await
            .unwrap_or_else(|_| panic!("event {i} was not delivered by a wake-up"))
            .unwrap();
        assert_eq!(event.event_id, id, "event {i} in order");
        assert!(started.elapsed() < LONG / 2);
    }
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
