//! A read of the log filtered by a common category, in a store without the optional category
//! index, walks the log index and stays O(batch) under a custom plan too — the plan a prepared
//! statement gets on its first executions on each connection. Without statistics on the
//! category expression (migration 13 creates them) the planner guessed that 0.5 % of the rows
//! match, and on a log of 200,000 account events a batch of 1,000 from the start was planned as
//! a scan of the whole table and a sort: the test shows that plan too, so that it can fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fresh_store, raw_client};
use crossfold_core::{EventStore, LogFilter, Position};
use crossfold_postgres::PgEventStore;
use serde_json::Value;

const EVENTS: i64 = 200_000;
const BATCH: usize = 1_000;

/// Rows the scans of a plan produced or filtered away, over all their loops.
fn rows_touched(node: &Value) -> f64 {
    let mut total = 0.0;
    if node["Node Type"]
        .as_str()
        .unwrap_or_default()
        .contains("Scan")
    {
        let loops = node["Actual Loops"].as_f64().unwrap_or(1.0);
        let rows = node["Actual Rows"].as_f64().unwrap_or(0.0)
            + node["Rows Removed by Filter"].as_f64().unwrap_or(0.0);
        total += rows * loops;
    }
    if let Some(children) = node["Plans"].as_array() {
        total += children.iter().map(rows_touched).sum::<f64>();
    }
    total
}

async fn touched_from_start(store: &PgEventStore) -> (f64, String) {
    let plan = store
        .explain_read_all(
            Position::START,
            BATCH,
            &LogFilter::categories(["account"]),
            false,
        )
        .await
        .unwrap();
    let plan: Value = serde_json::from_str(&plan).unwrap();
    // Parallel workers' rows are counted in their node's loops.
    (
        rows_touched(&plan[0]["Plan"]),
        serde_json::to_string_pretty(&plan).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_common_category_is_read_through_the_log_index_under_custom_plans() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    let client = raw_client().await;
    if client
        .query_one("SELECT current_setting('server_version_num')::integer", &[])
        .await
        .unwrap()
        .get::<_, i32>(0)
        < 140_000
    {
        eprintln!("expression statistics need PostgreSQL 14; nothing to check on 13");
        return;
    }
    // 10,000 account streams of 20 events, 2,500 events per transaction id, all long finished.
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".events (transaction_id, event_id, stream_id, \
                 stream_version, event_type, schema_version, payload_json, metadata) \
             SELECT (3 + g / 2500)::text::xid8, \
                    overlay(overlay(md5('{schema}' || g)::uuid::text placing '7' from 15) \
                            placing '8' from 20)::uuid, \
                    'account-' || (g % 10000), g / 10000 + 1, 'Deposited', 1, \
                    '{{\"amount\": 1}}', '{{\"recorded_at\": 1700000000000000}}' \
             FROM generate_series(0, {EVENTS} - 1) g; \
             INSERT INTO \"{schema}\".streams (stream_id, version) \
             SELECT stream_id, max(stream_version) FROM \"{schema}\".events GROUP BY stream_id; \
             ANALYZE \"{schema}\".events; ANALYZE \"{schema}\".streams"
        ))
        .await
        .unwrap();

    let bound = (4 * BATCH + 100) as f64;
    let (touched, plan) = touched_from_start(&store).await;
    assert!(
        touched <= bound,
        "the custom plan touched {touched} rows (at most {bound}):\n{plan}"
    );
    let events = store
        .read_all(Position::START, BATCH, &LogFilter::categories(["account"]))
        .await
        .unwrap();
    assert_eq!(events.len(), BATCH);

    // Without the statistics, the planner's guess scans the table.
    client
        .batch_execute(&format!(
            "DROP STATISTICS \"{schema}\".events_category_stats; ANALYZE \"{schema}\".events"
        ))
        .await
        .unwrap();
    let (touched, plan) = touched_from_start(&store).await;
    assert!(
        touched >= EVENTS as f64 / 2.0,
        "without statistics the custom plan was expected to scan the table, and touched \
         {touched} rows:\n{plan}"
    );
}
