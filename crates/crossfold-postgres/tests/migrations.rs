//! Migrations: idempotent, safe when two migrate at once, refusing (and changing nothing) when
//! the database records different migrations than this build embeds; schemas are isolated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{SchemaGuard, config, events, fresh_schema, fresh_store, raw_client, sid};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion, LogFilter, Position, StoreError};
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

    // A breaking migration from a newer build is refused too.
    client
        .batch_execute(&format!(
            "UPDATE {schema}.schema_migrations SET checksum = '{}' WHERE version = 1;
             INSERT INTO {schema}.schema_migrations (version, name, checksum, breaking)
             VALUES (999, 'future', 'x', true)",
            recorded_checksum_of_build(&schema).await
        ))
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(err, PgMigrationError::Incompatible { version: 999, .. }),
        "{err:?}"
    );
    let err = store.check_schema().await.unwrap_err();
    assert!(
        matches!(err, PgMigrationError::Incompatible { version: 999, .. }),
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
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("migrate"), "{source}");
    assert!(!err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_migrations_apply_over_the_first_with_data_in_it() {
    let schema = fresh_schema();
    let _guard = SchemaGuard(schema.clone());
    let store = PgEventStore::connect(config(&schema)).await.unwrap();
    let first = store.migrate_to(1).await.unwrap();
    assert_eq!(first.applied, [1]);
    // The first schema's own functions write some history.
    let client = raw_client().await;
    client
        .batch_execute(&format!(
            "SELECT * FROM {schema}.append_one('account-1', 0, \
                 ARRAY['0190b4d2-0000-7000-8000-000000000001'::uuid, \
                       '0190b4d2-0000-7000-8000-000000000002'::uuid], '{{A,B}}', '{{1,1}}', \
                 '{{\"{{}}\",\"{{}}\"}}'::jsonb[], '{{NULL,NULL}}'::bytea[], \
                 '{{\"{{\\\"recorded_at\\\": 1}}\"}}'::jsonb[])"
        ))
        .await
        .unwrap();
    let rest = store.migrate().await.unwrap();
    let later: Vec<u32> = PgEventStore::migrations()[1..]
        .iter()
        .map(|m| m.version())
        .collect();
    assert_eq!(rest.applied, later);
    // The old events read on, and the stream goes on from its version.
    let read = store
        .read_stream(&sid("account-1"), Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(read.events.len(), 2);
    store
        .append(AppendRequest::new().stream(
            sid("account-1"),
            ExpectedVersion::Exact(2.into()),
            events("C", 1),
        ))
        .await
        .unwrap();
    let log = store
        .read_all(Position::START, 10, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.is_sorted_by_key(|e| e.position));
    // The concurrently built indexes are valid.
    let invalid: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND NOT i.indisvalid",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(invalid, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_gives_up_on_a_lock_instead_of_queueing_appends() {
    let schema = fresh_schema();
    let _guard = SchemaGuard(schema.clone());
    let store = PgEventStore::connect(
        config(&schema).migration_lock_timeout(std::time::Duration::from_millis(200)),
    )
    .await
    .unwrap();
    store.migrate_to(1).await.unwrap();
    // An append in an open transaction holds the events table (ROW EXCLUSIVE); migration 2
    // needs a lock that conflicts with it.
    let mut holder = raw_client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SELECT * FROM {schema}.append_one('held', -1, \
             ARRAY['0190b4d2-0000-7000-8000-0000000000aa'::uuid], '{{A}}', '{{1}}', \
             '{{\"{{}}\"}}'::jsonb[], '{{NULL}}'::bytea[], '{{\"{{}}\"}}'::jsonb[])"
    ))
    .await
    .unwrap();
    let err = store.migrate().await.unwrap_err();
    match &err {
        PgMigrationError::Store(e) => assert_eq!(e.kind(), "timeout", "{err:?}"),
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    assert_eq!(
        recorded(&schema).await.len(),
        1,
        "nothing of migration 2 applied"
    );
    tx.commit().await.unwrap();
    let report = store.migrate().await.unwrap();
    assert_eq!(
        report.version,
        PgEventStore::migrations().last().unwrap().version()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_migrated_by_a_newer_compatible_build_keeps_working() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    raw_client()
        .await
        .batch_execute(&format!(
            "INSERT INTO {schema}.schema_migrations (version, name, checksum, breaking) \
             VALUES (999, 'future', 'x', false)"
        ))
        .await
        .unwrap();
    let report = store.migrate().await.unwrap();
    assert_eq!(report.newer, [999]);
    assert_eq!(report.version, 999);
    assert!(report.applied.is_empty());
    store.check_schema().await.unwrap();
    store
        .append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 1)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_recorded_by_earlier_builds_still_migrates() {
    // Builds before comment-insensitive checksums recorded migration 1 by its whole text.
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    raw_client()
        .await
        .batch_execute(&format!(
            "UPDATE {schema}.schema_migrations SET checksum = \
             '1c23000c49f876206f8b36cfa9e36e9bcffc833d1763f54976d52dfc2f14ef42' WHERE version = 1"
        ))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.check_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_is_told_what_is_missing() {
    let schema = fresh_schema();
    let _guard = SchemaGuard(schema.clone());
    let store = PgEventStore::connect(config(&schema)).await.unwrap();
    store.migrate_to(1).await.unwrap();
    let err = store.check_schema().await.unwrap_err();
    match &err {
        PgMigrationError::Pending { version, pending } => {
            assert_eq!(*version, 1);
            assert_eq!(pending[0], 2);
        }
        other => panic!("expected pending migrations, got {other:?}"),
    }
    assert!(err.to_string().contains("migrate()"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_work_under_repeatable_read_by_default() {
    let schema = fresh_schema();
    let _guard = SchemaGuard(schema.clone());
    let rr = || {
        let mut c = config(&schema);
        c.driver_config_mut()
            .options("-c default_transaction_isolation=repeatable\\ read");
        c
    };
    let a = PgEventStore::connect(rr()).await.unwrap();
    let b = PgEventStore::connect(rr()).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        PgEventStore::migrations().len(),
        "{ra:?} {rb:?}"
    );
    let isolation: String = a
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(isolation, "repeatable read");
    a.append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 1)))
        .await
        .unwrap();
    assert_eq!(b.migrate().await.unwrap().applied, Vec::<u32>::new());
}
