//! The runner records the metrics of `PROJECTION_METRICS` per projection: events applied,
//! errors by kind, lag in events and seconds, and a state gauge that is 1 for the current
//! state only. A local Prometheus recorder stands in for the application's; a current-thread
//! runtime keeps the runner's tasks on the thread where it is installed.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use crossfold_core::checkpoint::ProjectionState;
use crossfold_core::metrics::PROJECTION_METRICS;
use crossfold_memory::{MemoryCheckpoints, MemoryStore};
use crossfold_projections::{OnError, ProjectionOptions, ProjectionRunner};
use metrics_exporter_prometheus::PrometheusBuilder;

#[test]
fn the_runner_records_metrics_per_projection() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let store = MemoryStore::new();
            append(&store, 1, &[1, 2, -13, 4]).await;
            let model = Model::default();
            let mut poisoned = Balances::new("metered", model.clone());
            poisoned.poison = Some(-13);
            let mut runner =
                ProjectionRunner::new(store.clone(), MemoryCheckpoints::new(), options("a"));
            runner.spawn(
                poisoned,
                ProjectionOptions::default().on_error(OnError::DeadLetter),
            );
            eventually("applied", || model.applied(1) == 3).await;
            eventually("live", || {
                runner.status_of("metered").unwrap().status.state == ProjectionState::Live
            })
            .await;
            // The gauges follow at the next status interval.
            eventually("the gauges show the live state", || {
                let text = handle.render();
                text.contains("crossfold_projection_state{projection=\"metered\",state=\"live\"} 1")
                    && text.contains("crossfold_projection_lag_seconds{projection=\"metered\"} 0")
            })
            .await;
            runner.shutdown().await;
        });
    });
    let text = handle.render();
    for line in [
        "crossfold_projection_events_applied_total{projection=\"metered\"} 3",
        "crossfold_projection_errors_total{projection=\"metered\",kind=\"dead_letter\"} 1",
        "crossfold_projection_state{projection=\"metered\",state=\"live\"} 1",
        "crossfold_projection_state{projection=\"metered\",state=\"failed\"} 0",
        "crossfold_projection_lag_events{projection=\"metered\"} 0",
        "crossfold_projection_lag_seconds{projection=\"metered\"} 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    for m in PROJECTION_METRICS {
        assert!(text.contains(m.name), "{} was never recorded", m.name);
    }
}
