//! Migrations: idempotent, safe when two migrate at once, refusing (and changing nothing) when
//! the database records different migrations than this build embeds; schemas are isolated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{SchemaGuard, config, events, fresh_schema, fresh_store, raw_client, sid};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion, LogFilter, Position};
use crossfold_postgres::{PgEventStore, PgMigrationError};

async fn recorded(schema: &str) -> Vec<(i32, String)> {
    raw_client()
        .await
        .query(
            &format!("SELECT version, checksum FROM {schema}.schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent() {
    let store = fresh_store().await;
    let latest = PgEventStore::migrations().last().unwrap().version();
    let again = store.migrate().await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.version, latest);
    let rows = recorded(store.schema()).await;
    assert_eq!(rows.len(), PgEventStore::migrations().len());
    assert_eq!(rows[0].1.len(), 64, "sha-256 hex checksum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_take_turns() {
    let schema = fresh_schema();
    let _guard = SchemaGuard(schema.clone());
    let a = PgEventStore::connect(config(&schema)).await.unwrap();
    let b = PgEventStore::connect(config(&schema)).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let all = PgEventStore::migrations().len();
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        all,
        "each migration applied exactly once: {ra:?} {rb:?}"
    );
    assert_eq!(ra.version, rb.version);
    assert_eq!(recorded(&schema).await.len(), all);
    a.append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 1)))
        .await
        .unwrap();
    assert_eq!(b.stream_version(&sid("s")).await.unwrap().get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_checksum_is_refused_and_nothing_changes() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    let client = raw_client().await;
    client
        .execute(
            &format!("UPDATE {schema}.schema_migrations SET checksum = 'edited' WHERE version = 1"),
            &[],
        )
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    match &err {
        PgMigrationError::ChecksumMismatch {
            version, recorded, ..
        } => {
            assert_eq!(*version, 1);
            assert_eq!(recorded, "edited");
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("refusing"), "{err}");
    assert_eq!(recorded(&schema).await[0].1, "edited");

    // A migration from a newer build is refused too.
    client
        .batch_execute(&format!(
            "UPDATE {schema}.schema_migrations SET checksum = '{}' WHERE version = 1;
             INSERT INTO {schema}.schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')",
            recorded_checksum_of_build(&schema).await
        ))
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(err, PgMigrationError::Unknown { version: 999, .. }),
        "{err:?}"
    );
}

/// The checksum this build records for migration 1, computed by migrating a scratch schema.
async fn recorded_checksum_of_build(_: &str) -> String {
    let scratch = fresh_store().await;
    recorded(scratch.schema()).await[0].1.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_in_different_schemas_are_isolated() {
    let a = fresh_store().await;
    let b = fresh_store().await;
    a.append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 2)))
        .await
        .unwrap();
    assert_eq!(b.stream_version(&sid("s")).await.unwrap().get(), 0);
    assert!(
        b.read_all(Position::START, 10, &LogFilter::all())
            .await
            .unwrap()
            .is_empty()
    );
    b.append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 1)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_schema_says_so() {
    let schema = fresh_schema();
    let store = PgEventStore::connect(config(&schema)).await.unwrap();
    let err = store.stream_version(&sid("s")).await.unwrap_err();
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("migrate"), "{source}");
    assert!(!err.is_transient());
}
