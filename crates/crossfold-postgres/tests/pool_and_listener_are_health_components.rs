//! The pool and the `LISTEN` connection as health components of their own, for a readiness
//! answer that lists them separately: the pool degrades while every connection is taken, the
//! listener reports whether it listens and is connected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::fresh_store_with;
use crossfold_core::{HealthCheck, HealthStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_every_connection_taken_is_degraded() {
    let store = fresh_store_with(|c| c.pool_size(1).listen(false)).await;
    let report = store.pool_health().check_health().await;
    assert_eq!(report.component, "pool");
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    assert_eq!(report.details["pool_max_size"], 1);

    let held = store.pool().get().await.unwrap();
    let report = store.pool_health().check_health().await;
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(
        report
            .message
            .as_deref()
            .is_some_and(|m| m.contains("1 of 1 connections in use")),
        "{report:?}"
    );
    drop(held);
    let report = store.pool_health().check_health().await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reports_whether_it_listens_and_is_connected() {
    let quiet = fresh_store_with(|c| c.listen(false)).await;
    let report = quiet.listener_health().check_health().await;
    assert_eq!(report.component, "listener");
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    assert_eq!(report.details["listening"], false);

    let listening = fresh_store_with(|c| c.listen(true)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = listening.listener_health().check_health().await;
        assert_eq!(report.details["listening"], true);
        if report.details["listener_connected"] == true {
            assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
            break;
        }
        // Not connected yet: degraded, and it says what that means.
        assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
        assert!(
            Instant::now() < deadline,
            "the LISTEN connection never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
