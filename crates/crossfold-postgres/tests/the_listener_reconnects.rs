//! The `LISTEN` connection comes back on its own when its server restarts, and subscribers
//! are woken by notifications again. (How soon is the reconnect policy's unit test: attempts
//! at most 500 ms apart.) Runs a cluster of its own, which it restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{events, raw_client_at, sid, store_at};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion};
use crossfold_testkit::cluster::{StopMode, TestCluster};

/// Waits until a `LISTEN` connection of the store has been set up on the server: a backend
/// of the listener whose last statement was its LISTEN.
async fn listening(url: &str) {
    let client = raw_client_at(url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'crossfold-listen' AND query LIKE 'LISTEN%' \
                   AND state = 'idle'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the listener never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_a_restart() {
    let mut cluster = TestCluster::start_new().unwrap();
    let listener = store_at(&cluster.url(), "bank").await;
    listener.migrate().await.unwrap();
    listening(&cluster.url()).await;

    cluster.restart(StopMode::Fast).unwrap();
    // The restart ended every session: a listening backend now is a new connection.
    listening(&cluster.url()).await;
    // Another process appends: its NOTIFY must reach the listener.
    let writer = store_at(&cluster.url(), "bank").await;
    let head = writer.head_position().await.unwrap();
    let waiter = {
        let listener = listener.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            listener
                .wait_for_events(head, Duration::from_secs(30))
                .await
                .unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer
        .append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 1)))
        .await
        .unwrap();
    let waited = waiter.await.unwrap();
    // Woken by the notification, not by the 30 s wait running out.
    assert!(waited < Duration::from_secs(30), "{waited:?}");
}
