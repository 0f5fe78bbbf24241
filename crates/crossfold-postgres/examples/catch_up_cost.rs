//! Run with: `cargo run --release -p crossfold-postgres --example catch_up_cost`
//! (`DATABASE_URL` names the server; default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! What one batch of a catch-up read costs on a log of 1,000,000 events, from the start of the
//! log and near its head, unfiltered and filtered, with the store's read statements — with the
//! optional stream, category and type indexes, then without them — and with the statements of the
//! first schema (before the log read indexes), on the same data in the same run. Prints how
//! long building each optional index took (`create_read_index`, concurrently), the server's
//! execution time (median of 11 `EXPLAIN ANALYZE` runs, generic plans as prepared statements
//! settle on, and custom plans for the type filter) and the buffers read. Works in a schema of
//! its own, dropped at the end; takes a few minutes.

use std::time::Instant;

use crossfold_core::{LogFilter, Position, StreamId};
use crossfold_postgres::{PgConfig, PgEventStore, ReadIndex};
use serde_json::Value;

const EVENTS: i64 = 1_000_000;
const BATCH: i64 = 500;
const RUNS: usize = 11;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A read to measure: name, filter, the first schema's filter condition and its parameter,
/// and whether to measure the generic plan (else the custom one).
type Case = (
    &'static str,
    LogFilter,
    &'static str,
    Option<Vec<String>>,
    bool,
);

/// The first schema's read of the log (migration 0001 and its statements), for comparison.
fn old_read_all(schema: &str, filter: &str) -> String {
    let horizon = "pg_snapshot_xmin(pg_current_snapshot())";
    let columns = "transaction_id, sequence, event_id, stream_id, stream_version, event_type, \
                   schema_version, payload_json, payload_bytes, metadata";
    format!(
        "SELECT p.horizon, p.pending, e.* \
         FROM (SELECT {horizon} AS horizon, \
                      (SELECT max(transaction_id) FROM {schema}.events \
                       WHERE (transaction_id, sequence) > ($1, $2) \
                         AND transaction_id >= {horizon}{filter}) AS pending) p \
         LEFT JOIN LATERAL ( \
             SELECT {columns} FROM {schema}.events \
             WHERE (transaction_id, sequence) > ($1, $2) \
               AND transaction_id < {horizon}{filter} \
             ORDER BY transaction_id, sequence LIMIT $3) e ON true"
    )
}

/// Execution time (ms) and buffers of an `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` result.
fn measured(plan: &Value) -> (f64, f64) {
    let top = &plan[0];
    let root = &top["Plan"];
    let buffers = root["Shared Hit Blocks"].as_f64().unwrap_or(0.0)
        + root["Shared Read Blocks"].as_f64().unwrap_or(0.0);
    (top["Execution Time"].as_f64().unwrap_or(f64::NAN), buffers)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = format!("cf_catch_up_{}", std::process::id());
    let store = PgEventStore::connect(PgConfig::from_url(&url)?.schema(&schema)).await?;
    store.migrate().await?;
    let result = run(&store, &url, &schema).await;
    let client = store.pool().get().await?;
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    result
}

async fn run(store: &PgEventStore, url: &str, schema: &str) -> Result<(), Error> {
    let client = store.pool().get().await?;
    println!("filling {EVENTS} events ...");
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".events (transaction_id, event_id, stream_id, \
                 stream_version, event_type, schema_version, payload_json, metadata) \
             SELECT (3 + g / 2500)::text::xid8, \
                    overlay(overlay(md5('{schema}' || g)::uuid::text placing '7' from 15) \
                            placing '8' from 20)::uuid, \
                    CASE WHEN g % 5 = 0 THEN 'hot-1' ELSE 'account-' || (g % 20000) END, \
                    CASE WHEN g % 5 = 0 THEN g / 5 ELSE g / 20000 + 1 END, \
                    CASE WHEN g % 1000 = 7 THEN 'Opened' ELSE 'Deposited' END, \
                    1, '{{\"amount\": 1}}', '{{\"recorded_at\": 1700000000000000}}' \
             FROM generate_series(1, {EVENTS}) g; \
             INSERT INTO \"{schema}\".streams (stream_id, version) \
             SELECT stream_id, max(stream_version) FROM \"{schema}\".events GROUP BY stream_id; \
             ANALYZE \"{schema}\".events; ANALYZE \"{schema}\".streams"
        ))
        .await?;
    drop(client);

    let near_head = Position::new(3 + (EVENTS as u64 - 1000) / 2500, EVENTS as u64 - 1000);
    let hot = StreamId::new("hot-1")?;
    let small = StreamId::new("account-1")?;
    let cases: Vec<Case> = vec![
        ("all", LogFilter::all(), "", None, true),
        (
            "stream of 200,000",
            LogFilter::streams([hot.clone()]),
            " AND stream_id = ANY($4)",
            Some(vec!["hot-1".into()]),
            true,
        ),
        (
            "stream of 50",
            LogFilter::streams([small.clone()]),
            " AND stream_id = ANY($4)",
            Some(vec!["account-1".into()]),
            true,
        ),
        (
            "rare type (custom plan)",
            LogFilter::event_types(["Opened"]),
            " AND event_type = ANY($4)",
            Some(vec!["Opened".into()]),
            false,
        ),
        (
            "rare type (generic plan)",
            LogFilter::event_types(["Opened"]),
            " AND event_type = ANY($4)",
            Some(vec!["Opened".into()]),
            true,
        ),
        (
            "category (new only)",
            LogFilter::categories(["account"]),
            "",
            None,
            true,
        ),
    ];
    let limit = usize::try_from(BATCH)?;

    for index in ReadIndex::ALL {
        let started = Instant::now();
        store.create_read_index(index).await?;
        println!(
            "built {} over {EVENTS} events in {:.1} s",
            index.index_name(),
            started.elapsed().as_secs_f64()
        );
    }
    println!("\nwith the store's statements (every log read index in place):");
    measure_store(store, &cases, limit, near_head).await?;
    for index in ReadIndex::ALL {
        store.drop_read_index(index).await?;
    }
    println!("\nwith the store's statements, without the optional read indexes:");
    measure_store(store, &cases, limit, near_head).await?;

    // The first schema had none of the log read indexes either.
    let (old_client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    println!("\nwith the first schema's statements and indexes:");
    println!("| read | from | execution (median) | buffers |\n|---|---|---|---|");
    let quoted = format!("\"{schema}\"");
    for (i, (name, _, condition, param, generic)) in cases.iter().enumerate() {
        if name.contains("new only") {
            continue;
        }
        let mode = if *generic {
            "force_generic_plan"
        } else {
            "force_custom_plan"
        };
        old_client
            .batch_execute(&format!(
                "SET plan_cache_mode = {mode}; \
                 PREPARE old_{i}(xid8, int8, int8, text[]) AS {}",
                old_read_all(&quoted, condition)
            ))
            .await?;
        let keys = param
            .as_ref()
            .map_or_else(|| "NULL".to_owned(), |p| format!("'{{{}}}'", p.join(",")));
        for (from, after) in [("start", Position::START), ("near head", near_head)] {
            let explain = format!(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE old_{i}('{}', {}, {BATCH}, {keys})",
                after.commit(),
                after.sequence()
            );
            let mut times = Vec::new();
            let mut buffers = 0.0;
            for _ in 0..RUNS {
                let plan: Value = old_client.query_one(&explain, &[]).await?.try_get(0)?;
                let (ms, b) = measured(&plan);
                times.push(ms);
                buffers = b;
            }
            println!("| {name} | {from} | {:.3} ms | {buffers} |", median(times));
        }
    }
    Ok(())
}

/// The store's read of each case from the start and near the head: median execution time and
/// buffers, as a table.
async fn measure_store(
    store: &PgEventStore,
    cases: &[Case],
    limit: usize,
    near_head: Position,
) -> Result<(), Error> {
    let mut rows = Vec::new();
    for (name, filter, _, _, generic) in cases {
        for (from, after) in [("start", Position::START), ("near head", near_head)] {
            let mut times = Vec::new();
            let mut buffers = 0.0;
            for _ in 0..RUNS {
                let plan: Value = serde_json::from_str(
                    &store
                        .explain_read_all(after, limit, filter, *generic)
                        .await?,
                )?;
                let (ms, b) = measured(&plan);
                times.push(ms);
                buffers = b;
            }
            rows.push(format!(
                "| {name} | {from} | {:.3} ms | {buffers} |",
                median(times)
            ));
        }
    }
    println!("| read | from | execution (median) | buffers |\n|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }

    Ok(())
}
