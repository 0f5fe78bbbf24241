//! A read of the global log costs O(batch), wherever in the log it starts and however it is
//! filtered, so catching up on N events costs O(N). Proven on the executed plans of reads of a
//! log of 1,000,000 events: the rows each read touches (returned by its scans or removed by
//! their filters) and the buffers it reads stay within a small multiple of the batch — from
//! the start of the log as near and at its head, by stream (a 200,000-event stream and a 50-event
//! one), category and event type (a common one and a rare one), under generic and custom
//! plans. A read that scanned the rest of the log, a stream or a type touches hundreds of
//! thousands of rows or thousands of buffers and fails (the earlier form of the unfiltered
//! read: 3,838 buffers from the start of this log). A filter on two kinds of key reads through
//! one of them and checks the other, so it is O(batch) only while most events of the first
//! pass the second: here, a common type within a stream or a category.
//!
//! Reads by stream, category and event type are O(batch) through their optional read indexes,
//! which the test creates. Without them (dropped at the end) the same reads return the same
//! events, and stay O(batch) where the category or type is a fair share of the log and for a
//! short stream; a rare type is then a scan of the log, and a long stream a read of the whole
//! stream, which is what the indexes are for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fresh_store, raw_client, sid};
use crossfold_core::{EventStore, LogFilter, Position, RecordedEvent};
use crossfold_postgres::{PgEventStore, ReadIndex};
use serde_json::Value;

const EVENTS: i64 = 1_000_000;
const BATCH: usize = 500;

/// Rows a plan's scans produced or filtered away, over all their loops.
fn rows_touched(node: &Value) -> f64 {
    let mut total = 0.0;
    let node_type = node["Node Type"].as_str().unwrap_or_default();
    if node_type.contains("Scan") {
        let loops = node["Actual Loops"].as_f64().unwrap_or(1.0);
        let rows = node["Actual Rows"].as_f64().unwrap_or(0.0)
            + node["Rows Removed by Filter"].as_f64().unwrap_or(0.0)
            + node["Rows Removed by Index Recheck"]
                .as_f64()
                .unwrap_or(0.0);
        total += rows * loops;
    }
    if let Some(children) = node["Plans"].as_array() {
        total += children.iter().map(rows_touched).sum::<f64>();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_reads_are_linear() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    let client = raw_client().await;
    // Built in one statement rather than by appends. Every 5th event goes to one hot stream
    // (200,000 events); the rest spread over 16,000 `account-N` streams of 50 events each.
    // One event in 1,000 is of a rare type. 2,500 events per transaction id, all long
    // finished (ids 3 to 403 lie below any live horizon).
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
        .await
        .unwrap();

    // Migrating left the optional read indexes out; reads by stream, category and type need
    // them.
    for index in ReadIndex::ALL {
        assert!(store.create_read_index(index).await.unwrap(), "{index}");
    }

    let all = store
        .read_all(Position::START, BATCH, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(all.len(), BATCH, "the built log is readable");
    let near_head = store
        .read_all(
            Position::new(3 + (EVENTS as u64 - 1000) / 2500, EVENTS as u64 - 1000),
            BATCH,
            &LogFilter::all(),
        )
        .await
        .unwrap();
    assert_eq!(near_head.len(), BATCH);
    let middle = near_head[0].position;
    let head = store.head_position().await.unwrap();

    let filters: Vec<(&str, LogFilter)> = vec![
        ("all", LogFilter::all()),
        ("hot stream", LogFilter::streams([sid("hot-1")])),
        ("small stream", LogFilter::streams([sid("account-1")])),
        (
            "two streams",
            LogFilter::streams([sid("account-1"), sid("hot-1")]),
        ),
        ("category", LogFilter::categories(["account"])),
        ("common type", LogFilter::event_types(["Deposited"])),
        ("rare type", LogFilter::event_types(["Opened"])),
        (
            "stream and type",
            LogFilter::streams([sid("hot-1")]).with_event_types(["Deposited"]),
        ),
        (
            "category and common type",
            LogFilter::categories(["account"]).with_event_types(["Deposited"]),
        ),
    ];
    let mut indexed: Vec<Vec<RecordedEvent>> = Vec::new();
    for (name, filter) in &filters {
        assert_linear(&store, name, filter, [Position::START, middle, head]).await;
        // And the read itself returns the filtered log in order.
        for after in [Position::START, middle] {
            let events = store.read_all(after, BATCH, filter).await.unwrap();
            assert!(after != Position::START || !events.is_empty(), "{name}");
            assert!(events.is_sorted_by_key(|e| e.position), "{name}");
            assert!(events.iter().all(|e| filter.matches(e)), "{name}");
            indexed.push(events);
        }
    }

    // Without the optional indexes: the same events, and O(batch) still where the category or
    // type is a fair share of the log and for a short stream (not so for the rare type, which
    // scans the log, nor for the long stream, read whole through the primary key).
    for index in ReadIndex::ALL {
        assert!(store.drop_read_index(index).await.unwrap(), "{index}");
    }
    let mut indexed = indexed.into_iter();
    for (name, filter) in &filters {
        if !(name.contains("rare") || filter_has_hot(filter)) {
            assert_linear(&store, name, filter, [Position::START, middle, head]).await;
        }
        for after in [Position::START, middle] {
            let events = store.read_all(after, BATCH, filter).await.unwrap();
            let expected = indexed.next().unwrap();
            assert_eq!(
                events.iter().map(|e| e.position).collect::<Vec<_>>(),
                expected.iter().map(|e| e.position).collect::<Vec<_>>(),
                "{name} after {after} without the optional indexes"
            );
        }
    }
}

/// Whether `filter` names the 200,000-event stream.
fn filter_has_hot(filter: &LogFilter) -> bool {
    filter
        .streams
        .as_ref()
        .is_some_and(|s| s.iter().any(|s| s.as_str() == "hot-1"))
}

/// The read of `filter` from each of `positions`, under generic and custom plans, touches at
/// most a small multiple of the batch in rows and buffers.
async fn assert_linear(
    store: &PgEventStore,
    name: &str,
    filter: &LogFilter,
    positions: [Position; 3],
) {
    let keys = filter.streams.as_ref().map_or(1, Vec::len);
    for (from, after) in ["start", "near the head", "the head"]
        .into_iter()
        .zip(positions)
    {
        for generic in [true, false] {
            let plan = store
                .explain_read_all(after, BATCH, filter, generic)
                .await
                .unwrap();
            let plan: Value = serde_json::from_str(&plan).unwrap();
            let top = &plan[0]["Plan"];
            let touched = rows_touched(top);
            // The root's counts include every node below it. At worst each event of the
            // batch lies on a page of its own; the indexes add a few pages per key.
            let buffers = top["Shared Hit Blocks"].as_f64().unwrap()
                + top["Shared Read Blocks"].as_f64().unwrap();
            let row_bound = (4 * BATCH * keys + 100) as f64;
            let buffer_bound = ((BATCH + 50) * keys + 50) as f64;
            assert!(
                touched <= row_bound && buffers <= buffer_bound,
                "{name} from {from} ({}) touched {touched} rows (at most {row_bound}) and \
                 {buffers} buffers (at most {buffer_bound}):\n{}",
                if generic {
                    "generic plan"
                } else {
                    "custom plan"
                },
                serde_json::to_string_pretty(&plan).unwrap()
            );
        }
    }
}
