//! Exporting the metrics Crossfold records in the Prometheus text format.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) for every `*_seconds` histogram: from 50 µs (an in-memory
/// command) to 10 s (a command stuck behind retries).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Buckets for attempt counts.
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0];

/// Installs a global Prometheus recorder with Crossfold's buckets and describes the
/// executor's metrics. Serve [`PrometheusHandle::render`] from your application's `/metrics`
/// endpoint. Install it before executing commands: metric handles bind to the recorder that
/// is installed when they are first used.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(crossfold_executor::COMMAND_ATTEMPTS.into()),
            ATTEMPT_BUCKETS,
        )?
        .install_recorder()?;
    crossfold_executor::describe_metrics();
    Ok(handle)
}
