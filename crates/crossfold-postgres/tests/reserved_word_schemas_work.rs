//! A store whose schema is named by an SQL reserved word (`order`, `user`) works: every
//! statement quotes it. Runs in a database of its own, since such a name cannot be made unique
//! per test run; the database is dropped afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::{database_url, events, raw_client, sid};
use crossfold_core::{
    AppendRequest, EventStore, ExpectedVersion, HealthCheck, HealthStatus, LogFilter, Position,
};
use crossfold_postgres::{PgConfig, PgEventStore};

/// Drops its database when dropped.
struct DatabaseGuard(String);

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = raw_client().await;
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_word_schemas_work() {
    let database = format!("cf_test_{}_reserved", fastrand::u32(..));
    raw_client()
        .await
        .batch_execute(&format!("CREATE DATABASE \"{database}\""))
        .await
        .unwrap();
    let _guard = DatabaseGuard(database.clone());
    let mut pg = tokio_postgres::Config::from_str(&database_url()).unwrap();
    pg.dbname(&database);
    for schema in ["order", "user"] {
        let store = PgEventStore::connect(PgConfig::new(pg.clone()).schema(schema).pool_size(2))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.check_schema().await.unwrap();
        assert!(!store.check_log_order().await.unwrap());
        store
            .append(AppendRequest::new().stream(
                sid("a-1"),
                ExpectedVersion::NoStream,
                events("E", 2),
            ))
            .await
            .unwrap();
        let appended = store
            .append(
                AppendRequest::new()
                    .stream(sid("a-1"), ExpectedVersion::Exact(2.into()), events("E", 1))
                    .check(sid("b-1"), ExpectedVersion::NoStream),
            )
            .await
            .unwrap();
        // Other sessions on the server may hold the log's visibility horizon back.
        store
            .wait_for_position(appended.position().unwrap(), Duration::from_secs(60))
            .await
            .unwrap();
        let head = store.head_position().await.unwrap();
        assert_ne!(head, Position::START);
        store
            .wait_for_events(Position::START, Duration::from_secs(5))
            .await
            .unwrap();
        for filter in [
            LogFilter::all(),
            LogFilter::streams([sid("a-1")]),
            LogFilter::categories(["a"]),
            LogFilter::event_types(["E"]),
        ] {
            let log = store.read_all(Position::START, 10, &filter).await.unwrap();
            assert_eq!(log.len(), 3, "{schema}: {filter:?}");
        }
        let read = store
            .read_streams(&[
                crossfold_core::StreamRead::all(sid("a-1")),
                crossfold_core::StreamRead::all(sid("b-1")),
            ])
            .await
            .unwrap();
        assert_eq!(read[0].events.len(), 3);
        store.quarantine(head, "test").await.unwrap();
        assert_ne!(store.check_health().await.status, HealthStatus::Unhealthy);
    }
}
