//! Every store call records the common store metrics under `store="postgres"`, failures are
//! counted by kind, and health checks set the pool and transaction-age gauges. A local
//! Prometheus recorder stands in for the application's: handles bind to the recorder in scope
//! at the store's first call, and a current-thread runtime keeps every call in that scope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{events, fresh_store, fresh_store_with, sid};
use crossfold_core::{
    AppendRequest, EventStore, ExpectedVersion, HealthCheck, LogFilter, Position, StreamRead,
};
use metrics_exporter_prometheus::PrometheusBuilder;

#[test]
fn store_calls_record_durations_errors_events_and_gauges() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            crossfold_postgres::describe_metrics();
            let store = fresh_store().await;
            let s = sid("metered");
            store
                .append(AppendRequest::new().stream(
                    s.clone(),
                    ExpectedVersion::NoStream,
                    events("E", 3),
                ))
                .await
                .unwrap();
            let conflict = store
                .append(AppendRequest::new().stream(
                    s.clone(),
                    ExpectedVersion::NoStream,
                    events("E", 1),
                ))
                .await
                .unwrap_err();
            assert!(conflict.is_conflict());
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
            store.check_health().await;
            store
        })
    });
    // Dropped outside the runtime, so the schema's cleanup is waited for.
    drop(runtime);
    let schema = store.schema().to_owned();
    drop(store);

    let text = handle.render();
    let calls = |operation: &str, n: u32| {
        format!(
            "crossfold_store_operation_duration_seconds_count\
             {{store=\"postgres\",operation=\"{operation}\"}} {n}"
        )
    };
    let pool = |state: &str| {
        format!("crossfold_postgres_pool_connections{{schema=\"{schema}\",state=\"{state}\"}} ")
    };
    let expect = [
        "# HELP crossfold_store_operation_duration_seconds ".to_owned(),
        calls("append", 2),
        calls("read_streams", 1),
        calls("read_all", 1),
        calls("head_position", 1),
        calls("wait", 1),
        "# TYPE crossfold_store_errors_total counter".to_owned(),
        r#"crossfold_store_errors_total{store="postgres",operation="append",kind="conflict"} 1"#
            .to_owned(),
        "# TYPE crossfold_store_appended_events_total counter".to_owned(),
        r#"crossfold_store_appended_events_total{store="postgres"} 3"#.to_owned(),
        "# HELP crossfold_postgres_pool_connections ".to_owned(),
        pool("size"),
        pool("available"),
        format!("{}0\n", pool("waiting")),
        "# TYPE crossfold_postgres_oldest_transaction_age_seconds gauge".to_owned(),
        "\ncrossfold_postgres_oldest_transaction_age_seconds ".to_owned(),
    ];
    for line in expect {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("kind=\"unavailable\""),
        "only errors that happened are series:\n{text}"
    );
}

#[test]
fn group_commit_records_the_appends_of_each_call() {
    const APPENDS: usize = 12;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            // One call at a time: the first append goes alone, the others queue meanwhile
            // and go together as the next call.
            let store = fresh_store_with(|c| c.group_commit(true).group_commit_calls(1)).await;
            let appends = (0..APPENDS).map(|i| {
                store.append(AppendRequest::new().stream(
                    sid(&format!("grouped-{i}")),
                    ExpectedVersion::NoStream,
                    events("E", 1),
                ))
            });
            for appended in futures_util::future::join_all(appends).await {
                appended.unwrap();
            }
            store
        })
    });
    drop(runtime);
    let schema = store.schema().to_owned();
    drop(store);

    let text = handle.render();
    for line in [
        format!("crossfold_postgres_group_commit_appends_count{{schema=\"{schema}\"}} 2"),
        format!("crossfold_postgres_group_commit_appends_sum{{schema=\"{schema}\"}} {APPENDS}"),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}
