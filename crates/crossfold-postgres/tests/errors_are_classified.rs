//! Failures are classified so the executor retries the right things: an unreachable server
//! and an exhausted pool are `Unavailable`, a statement timeout is `Timeout`, and a lost
//! connection heals on the next call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{events, fresh_store_with, raw_client, sid};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion, StoreError};
use crossfold_postgres::{PgConfig, PgEventStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    let config = PgConfig::from_url("postgres://postgres@127.0.0.1:1/postgres")
        .unwrap()
        .create_timeout(Duration::from_secs(2));
    let err = PgEventStore::connect(config).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schema_name_is_refused() {
    let config = common::config("Not-Valid");
    let err = PgEventStore::connect(config).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_a_timeout_and_writes_nothing() {
    let store = fresh_store_with(|c| c.statement_timeout(Duration::from_millis(300))).await;
    let s = sid("locked");
    store
        .append(AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, events("E", 1)))
        .await
        .unwrap();
    // Another session holds the stream row, so the append waits until its statement times out.
    let mut raw = raw_client().await;
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        &format!(
            "SELECT 1 FROM {}.streams WHERE stream_id = 'locked' FOR UPDATE",
            store.schema()
        ),
        &[],
    )
    .await
    .unwrap();
    let err = store
        .append(AppendRequest::new().stream(s.clone(), ExpectedVersion::Any, events("E", 1)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Timeout(_)), "{err:?}");
    assert!(err.is_transient());
    tx.rollback().await.unwrap();
    assert_eq!(store.stream_version(&s).await.unwrap().get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_unavailable() {
    let store = fresh_store_with(|c| c.pool_size(1).wait_timeout(Duration::from_millis(100))).await;
    let held = store.pool().get().await.unwrap();
    let err = store.stream_version(&sid("s")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(store.pool_status().waiting, 0);
    drop(held);
    store.stream_version(&sid("s")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_replaced() {
    let name = format!("cf-kill-{:08x}", fastrand::u32(..));
    let store = fresh_store_with(|mut c| {
        c.driver_config_mut().application_name(&name);
        c
    })
    .await;
    let s = sid("s");
    store
        .append(AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, events("E", 1)))
        .await
        .unwrap();
    let killed: i64 = raw_client()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    // A call may still meet a dead connection (classified as transient); the pool replaces it.
    let mut failures = Vec::new();
    let version = loop {
        match store.stream_version(&s).await {
            Ok(v) => break v,
            Err(e) => {
                assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
                failures.push(e);
                assert!(failures.len() < 10, "{failures:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(version.get(), 1);
    store
        .append(AppendRequest::new().stream(
            s.clone(),
            ExpectedVersion::Exact(version),
            events("E", 1),
        ))
        .await
        .unwrap();
}
