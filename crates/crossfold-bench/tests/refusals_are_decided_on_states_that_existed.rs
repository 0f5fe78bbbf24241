//! Every decision the executor returns — a write or a refusal — is made on a state in which
//! all streams read were at versions that coexisted. Pairs of streams are only ever written
//! together, so they agree at every committed point; a command that refuses when the two
//! disagree must therefore never have its refusal reach the caller, under any interleaving of
//! many tasks over several executors (separate caches, like processes), with one state per
//! combination of streams or per-stream parts, on the memory store and on PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failures by panicking"
)]

use crossfold_bench::pairs::{PairsOptions, PairsReport, run_pairs};
use crossfold_memory::MemoryStore;
use crossfold_postgres::{PgConfig, PgEventStore};

fn assert_no_impossible_refusal(report: &PairsReport, what: &str) {
    assert_eq!(
        report.impossible_refusals, 0,
        "{what}: {} of {} executions refused on a state that never existed; first: {:?}",
        report.impossible_refusals, report.executions, report.first_impossible
    );
    assert_eq!(report.errors, 0, "{what}: {:?}", report.first_error);
    assert!(
        report.broken_pairs.is_empty(),
        "{what}: {:?}",
        report.broken_pairs
    );
    // The check only means something if the commands met: most executions write, and the
    // writes of different executors collided.
    assert!(report.written > report.executions / 2, "{what}: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_memory_store_with_one_state_per_combination() {
    let options = PairsOptions::new(100_000);
    let report = run_pairs(MemoryStore::new(), &options).await.unwrap();
    assert_no_impossible_refusal(&report, "memory, per combination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_memory_store_with_per_stream_parts() {
    let mut options = PairsOptions::new(100_000);
    options.per_stream = true;
    let report = run_pairs(MemoryStore::new(), &options).await.unwrap();
    assert_no_impossible_refusal(&report, "memory, per stream");
}

/// A migrated store in a schema of its own on the server named by `DATABASE_URL`; the 100,000
/// execution run on PostgreSQL is `crossfold-bench pairs --store postgres` (docs/benchmarks.md).
async fn postgres(schema: &str) -> PgEventStore {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let config = PgConfig::from_url(&url)
        .unwrap()
        .schema(schema)
        .pool_size(8);
    let store = PgEventStore::connect(config)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url} ({e}); set DATABASE_URL"));
    store.migrate().await.unwrap();
    store
}

async fn drop_schema(schema: &str) {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_both_ways() {
    for per_stream in [false, true] {
        let schema = format!("cf_test_pairs_{}_{per_stream}", std::process::id());
        let store = postgres(&schema).await;
        let mut options = PairsOptions::new(4_000);
        options.per_stream = per_stream;
        let report = run_pairs(store, &options).await.unwrap();
        drop_schema(&schema).await;
        assert_no_impossible_refusal(&report, &format!("postgres, per_stream={per_stream}"));
    }
}
