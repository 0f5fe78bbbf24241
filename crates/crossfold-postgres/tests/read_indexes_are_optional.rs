//! The stream, category and event-type indexes of the log are optional: a new store has none,
//! reads filtered by category or type scan the log index (by stream, the primary key), and
//! `create_read_index` builds one that the reads then use — those of the store that built it at
//! once, a store connecting later from the start — with the same events returned either way.
//! Dropping one takes the reads back; a build left invalid is replaced. Migration 7 drops the
//! indexes of migration 3 that no read has used and keeps those that reads have.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{SchemaGuard, config, fresh_schema, fresh_store, raw_client};
use crossfold_core::{EventStore, LogFilter, Position, RecordedEvent, StreamId};
use crossfold_postgres::{PgEventStore, PgReadIndexState, ReadIndex};

/// 3,000 events on 300 streams of three categories (1,000 events each), of two types (1,500
/// each). Inserted in one statement with transaction ids long finished, so that no
/// transaction open elsewhere on the server keeps them from readers.
async fn fill(store: &PgEventStore) {
    let schema = store.schema();
    raw_client()
        .await
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".events (transaction_id, event_id, stream_id, \
                 stream_version, event_type, schema_version, payload_json, metadata) \
             SELECT (3 + g / 100)::text::xid8, \
                    overlay(overlay(md5('{schema}' || g)::uuid::text placing '7' from 15) \
                            placing '8' from 20)::uuid, \
                    (ARRAY['account', 'order', 'audit'])[g % 3 + 1] || '-' || (g % 300), \
                    g / 300 + 1, \
                    CASE WHEN g % 2 = 0 THEN 'Opened' ELSE 'Noted' END, \
                    1, '{{}}', '{{\"recorded_at\": 1700000000000000}}' \
             FROM generate_series(0, 2999) g; \
             INSERT INTO \"{schema}\".streams (stream_id, version) \
             SELECT stream_id, max(stream_version) FROM \"{schema}\".events GROUP BY stream_id; \
             ANALYZE \"{schema}\".events"
        ))
        .await
        .unwrap();
}

/// The indexes the generic plan of `filter`'s read uses.
async fn plan_of(store: &PgEventStore, filter: &LogFilter) -> String {
    store
        .explain_read_all(Position::START, 100, filter, true)
        .await
        .unwrap()
}

fn positions(events: &[RecordedEvent]) -> Vec<Position> {
    events.iter().map(|e| e.position).collect()
}

fn state(indexes: &[crossfold_postgres::PgReadIndex], index: ReadIndex) -> PgReadIndexState {
    indexes.iter().find(|i| i.index == index).unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_read_indexes_are_created_on_request_and_used() {
    let store = fresh_store().await;
    fill(&store).await;
    let listed = store.read_indexes().await.unwrap();
    assert_eq!(listed.len(), ReadIndex::ALL.len());
    for index in ReadIndex::ALL {
        assert_eq!(state(&listed, index), PgReadIndexState::Absent, "{index}");
    }

    let by_category = LogFilter::categories(["order"]);
    let by_type = LogFilter::event_types(["Noted"]);
    let by_stream = LogFilter::streams([StreamId::new("audit-2").unwrap()]);
    let plan = plan_of(&store, &by_stream).await;
    assert!(
        plan.contains("events_pkey") && !plan.contains("events_stream_log_idx"),
        "{plan}"
    );
    let stream = store
        .read_all(Position::START, 2000, &by_stream)
        .await
        .unwrap();
    assert_eq!(stream.len(), 10);
    assert!(store.create_read_index(ReadIndex::Stream).await.unwrap());
    let plan = plan_of(&store, &by_stream).await;
    assert!(plan.contains("events_stream_log_idx"), "{plan}");
    assert_eq!(
        positions(
            &store
                .read_all(Position::START, 2000, &by_stream)
                .await
                .unwrap()
        ),
        positions(&stream)
    );
    let plan = plan_of(&store, &by_category).await;
    assert!(
        plan.contains("events_log_idx") && !plan.contains("events_category_log_idx"),
        "{plan}"
    );
    let scanned = store
        .read_all(Position::START, 2000, &by_category)
        .await
        .unwrap();
    assert_eq!(scanned.len(), 1000);
    assert!(scanned.iter().all(|e| by_category.matches(e)));
    let typed = store
        .read_all(Position::START, 2000, &by_type)
        .await
        .unwrap();
    assert_eq!(typed.len(), 1500);
    assert!(typed.iter().all(|e| by_type.matches(e)));

    assert!(store.create_read_index(ReadIndex::Category).await.unwrap());
    assert!(!store.create_read_index(ReadIndex::Category).await.unwrap());
    let listed = store.read_indexes().await.unwrap();
    let category = listed
        .iter()
        .find(|i| i.index == ReadIndex::Category)
        .unwrap();
    assert_eq!(category.state, PgReadIndexState::Ready);
    assert!(category.size_bytes.unwrap() > 0);
    assert!(category.scans.is_some());
    assert_eq!(
        state(&listed, ReadIndex::EventType),
        PgReadIndexState::Absent
    );
    // The store that built it reads through it at once, with the same answer.
    let plan = plan_of(&store, &by_category).await;
    assert!(plan.contains("events_category_log_idx"), "{plan}");
    let indexed = store
        .read_all(Position::START, 2000, &by_category)
        .await
        .unwrap();
    assert_eq!(positions(&indexed), positions(&scanned));
    // The type's reads still scan the log.
    assert!(
        !plan_of(&store, &by_type)
            .await
            .contains("events_type_log_idx")
    );

    // A store connecting later uses what is there from the start.
    let later = PgEventStore::connect(config(store.schema())).await.unwrap();
    let plan = plan_of(&later, &by_category).await;
    assert!(plan.contains("events_category_log_idx"), "{plan}");
    assert_eq!(
        positions(
            &later
                .read_all(Position::START, 2000, &by_category)
                .await
                .unwrap()
        ),
        positions(&scanned)
    );

    assert!(store.create_read_index(ReadIndex::EventType).await.unwrap());
    assert!(
        plan_of(&store, &by_type)
            .await
            .contains("events_type_log_idx")
    );
    assert_eq!(
        positions(
            &store
                .read_all(Position::START, 2000, &by_type)
                .await
                .unwrap()
        ),
        positions(&typed)
    );

    assert!(store.drop_read_index(ReadIndex::Category).await.unwrap());
    assert!(!store.drop_read_index(ReadIndex::Category).await.unwrap());
    let plan = plan_of(&store, &by_category).await;
    assert!(!plan.contains("events_category_log_idx"), "{plan}");
    assert_eq!(
        positions(
            &store
                .read_all(Position::START, 2000, &by_category)
                .await
                .unwrap()
        ),
        positions(&scanned)
    );
    let listed = store.read_indexes().await.unwrap();
    assert_eq!(
        state(&listed, ReadIndex::Category),
        PgReadIndexState::Absent
    );
    assert_eq!(
        state(&listed, ReadIndex::EventType),
        PgReadIndexState::Ready
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_left_invalid_is_not_used_and_is_replaced() {
    let store = fresh_store().await;
    fill(&store).await;
    assert!(store.create_read_index(ReadIndex::Category).await.unwrap());
    // What a failed or interrupted concurrent build leaves behind.
    raw_client()
        .await
        .batch_execute(&format!(
            "UPDATE pg_index SET indisvalid = false \
             WHERE indexrelid = '\"{}\".events_category_log_idx'::regclass",
            store.schema()
        ))
        .await
        .unwrap();
    let listed = store.read_indexes().await.unwrap();
    assert_eq!(
        state(&listed, ReadIndex::Category),
        PgReadIndexState::Invalid
    );
    let by_category = LogFilter::categories(["account"]);
    assert!(
        !plan_of(&store, &by_category)
            .await
            .contains("events_category_log_idx")
    );
    assert!(store.create_read_index(ReadIndex::Category).await.unwrap());
    let listed = store.read_indexes().await.unwrap();
    assert_eq!(state(&listed, ReadIndex::Category), PgReadIndexState::Ready);
    assert!(
        plan_of(&store, &by_category)
            .await
            .contains("events_category_log_idx")
    );
    assert_eq!(
        store
            .read_all(Position::START, 2000, &by_category)
            .await
            .unwrap()
            .len(),
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_7_keeps_the_read_indexes_that_reads_used() {
    let schema = fresh_schema();
    let _guard = SchemaGuard(schema.clone());
    let store = PgEventStore::connect(config(&schema)).await.unwrap();
    store.migrate_to(5).await.unwrap();
    let listed = store.read_indexes().await.unwrap();
    for index in ReadIndex::ALL {
        assert_eq!(state(&listed, index), PgReadIndexState::Ready, "{index}");
    }
    fill(&store).await;
    // A subscription by category reads through its index; nothing reads by type.
    let by_category = LogFilter::categories(["audit"]);
    assert_eq!(
        store
            .read_all(Position::START, 2000, &by_category)
            .await
            .unwrap()
            .len(),
        1000
    );
    // The server counts index scans a moment later (when the reading session goes idle).
    let client = raw_client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = client
            .query_one(
                "SELECT coalesce(idx_scan, 0) FROM pg_stat_all_indexes \
                 WHERE indexrelid = to_regclass($1)",
                &[&format!("\"{schema}\".events_category_log_idx")],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the category read was never counted as a scan of its index"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let report = store.migrate().await.unwrap();
    assert!(report.applied.contains(&7), "{report:?}");
    let listed = store.read_indexes().await.unwrap();
    assert_eq!(state(&listed, ReadIndex::Category), PgReadIndexState::Ready);
    assert_eq!(
        state(&listed, ReadIndex::EventType),
        PgReadIndexState::Absent
    );
    assert_eq!(state(&listed, ReadIndex::Stream), PgReadIndexState::Absent);
    // What the migration changed for every append: no deduplication on the kept index, and
    // the sequence hands out values in blocks.
    let row = client
        .query_one(
            "SELECT c.reloptions::text, s.seqcache FROM pg_class c, pg_sequence s \
             WHERE c.oid = to_regclass($1) \
               AND s.seqrelid = pg_get_serial_sequence($2, 'sequence')::regclass",
            &[
                &format!("\"{schema}\".events_category_log_idx"),
                &format!("\"{schema}\".events"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("{deduplicate_items=off}")
    );
    assert_eq!(row.get::<_, i64>(1), 64);
    assert!(
        plan_of(&store, &by_category)
            .await
            .contains("events_category_log_idx")
    );
    let by_type = LogFilter::event_types(["Opened"]);
    assert_eq!(
        store
            .read_all(Position::START, 2000, &by_type)
            .await
            .unwrap()
            .len(),
        1500
    );
}

/// On a partitioned log (migration 14) an index is built partition by partition, each
/// concurrently, and serves the reads once every partition has it; partitions created later
/// get it when they are attached; dropping it takes it from every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_log_gets_and_loses_an_index_in_every_partition() {
    use crossfold_core::{AppendRequest, EventData, ExpectedVersion, Payload};
    let store = fresh_store().await;
    store
        .partition_log(
            crossfold_postgres::PgLogPartitioning::new(20)
                .ahead(3)
                .margin(50),
        )
        .await
        .unwrap();
    fill(&store).await;
    let append = |i: usize| {
        let store = store.store.clone();
        async move {
            store
                .append(AppendRequest::new().stream(
                    StreamId::new(format!("account-x{i}")).unwrap(),
                    ExpectedVersion::NoStream,
                    vec![EventData::new("Opened", Payload::json(&b"{}"[..]))],
                ))
                .await
                .unwrap();
        }
    };
    for i in 0..20 {
        append(i).await;
    }
    assert!(store.create_read_index(ReadIndex::Category).await.unwrap());
    let listed = store.read_indexes().await.unwrap();
    assert_eq!(state(&listed, ReadIndex::Category), PgReadIndexState::Ready);
    let by_category = LogFilter::categories(["account"]);
    assert!(
        plan_of(&store, &by_category)
            .await
            .contains("_category_log_idx"),
        "{}",
        plan_of(&store, &by_category).await
    );
    // Partitions created from now on have it too.
    for i in 20..40 {
        append(i).await;
    }
    store.ensure_log_partitions().await.unwrap();
    let client = raw_client().await;
    let missing: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits p \
             WHERE p.inhparent = to_regclass($1) \
               AND NOT EXISTS (SELECT FROM pg_index x JOIN pg_inherits pi ON pi.inhrelid = x.indexrelid \
                               WHERE x.indrelid = p.inhrelid \
                                 AND pi.inhparent = to_regclass($2))",
            &[
                &format!("{}.events", store.schema()),
                &format!("{}.events_category_log_idx", store.schema()),
            ],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(missing, 0, "every partition has the index");
    assert_eq!(
        store
            .read_all(Position::START, 5_000, &by_category)
            .await
            .unwrap()
            .len(),
        1_040
    );
    assert!(store.drop_read_index(ReadIndex::Category).await.unwrap());
    let listed = store.read_indexes().await.unwrap();
    assert_eq!(
        state(&listed, ReadIndex::Category),
        PgReadIndexState::Absent
    );
    assert!(
        !plan_of(&store, &by_category)
            .await
            .contains("_category_log_idx")
    );
}
