//! The memory store records the store metrics it documents, under `store="memory"`: appended
//! events, and failed appends by kind. It times no call, so it has no duration series. A local
//! Prometheus recorder stands in for the application's: the store's handles bind to the
//! recorder in scope at its first append, and a current-thread runtime keeps every call there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crossfold_core::{
    AppendRequest, EventData, EventStore, ExpectedVersion, LogFilter, Payload, Position,
    StoreError, StreamId, StreamRead,
};
use crossfold_memory::MemoryStore;
use metrics_exporter_prometheus::PrometheusBuilder;

fn events(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|_| EventData::new("E", Payload::json("{}")))
        .collect()
}

#[test]
fn appends_count_their_events_and_failures_and_no_call_is_timed() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let store = MemoryStore::new();
            let s = StreamId::new("metered").unwrap();
            let first = events(3);
            let reused = first[0].clone();
            store
                .append(AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, first))
                .await
                .unwrap();
            store
                .append(AppendRequest::new().stream(
                    StreamId::new("other").unwrap(),
                    ExpectedVersion::NoStream,
                    events(2),
                ))
                .await
                .unwrap();
            let conflict = store
                .append(AppendRequest::new().stream(
                    s.clone(),
                    ExpectedVersion::NoStream,
                    events(1),
                ))
                .await
                .unwrap_err();
            assert!(
                matches!(conflict, StoreError::Conflict(_)),
                "expected a conflict, got {conflict:?}"
            );
            let duplicate = store
                .append(AppendRequest::new().stream(
                    StreamId::new("again").unwrap(),
                    ExpectedVersion::Any,
                    vec![reused],
                ))
                .await
                .unwrap_err();
            assert!(
                matches!(duplicate, StoreError::DuplicateEvent(_)),
                "expected a duplicate event, got {duplicate:?}"
            );
            // Calls that are neither counted nor timed.
            store.read_streams(&[StreamRead::all(s)]).await.unwrap();
            store
                .read_all(Position::START, 10, &LogFilter::all())
                .await
                .unwrap();
            let head = store.head_position().await.unwrap();
            store
                .wait_for_events(head, Duration::from_millis(1))
                .await
                .unwrap();
        })
    });

    let text = handle.render();
    for line in [
        r#"crossfold_store_appended_events_total{store="memory"} 5"#,
        r#"crossfold_store_errors_total{store="memory",operation="append",kind="conflict"} 1"#,
        r#"crossfold_store_errors_total{store="memory",operation="append",kind="duplicate"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("crossfold_store_operation_duration_seconds"),
        "the memory store times no call, yet:\n{text}"
    );
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(series, 3, "only the three series above, got:\n{text}");
}

/// Without a recorder the counters are no-ops: appends and their failures work as before.
#[tokio::test]
async fn appends_work_without_a_recorder() {
    let store = MemoryStore::new();
    let s = StreamId::new("unmetered").unwrap();
    store
        .append(AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, events(2)))
        .await
        .unwrap();
    let conflict = store
        .append(AppendRequest::new().stream(s, ExpectedVersion::NoStream, events(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, StoreError::Conflict(_)),
        "expected a conflict, got {conflict:?}"
    );
    assert_eq!(store.len(), 2);
}
