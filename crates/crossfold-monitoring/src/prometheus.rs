//! Exporting the metrics Crossfold records in the Prometheus text format.

use crossfold_core::metrics::{
    COMMAND_ATTEMPTS, COMMAND_METRICS, DEADLINE_METRICS, PROJECTION_METRICS, STORE_METRICS,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) for every `*_seconds` histogram: from 50 µs (an in-memory
/// command) to 10 s (a command stuck behind retries).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Buckets for attempt counts.
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0];

/// Buckets for every `*_appends` histogram (appends per store call, such as the PostgreSQL
/// store's `crossfold_postgres_group_commit_appends`): 1 to a group's 64.
pub const APPENDS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Installs a global Prometheus recorder with Crossfold's buckets and describes the executor's
/// metrics ([`crossfold_core::metrics::COMMAND_METRICS`]), the deadline workers' metrics
/// ([`crossfold_core::metrics::DEADLINE_METRICS`]) and the metrics common to the stores
/// ([`crossfold_core::metrics::STORE_METRICS`]; which store records which is listed in
/// `crossfold_core`'s `metrics` documentation). Serve [`PrometheusHandle::render`] from your
/// application's `/metrics` endpoint.
///
/// Install it before executing commands or calling a store: metric handles bind to the
/// recorder that is installed when they are first used. This crate depends on neither the
/// executor nor the stores, so a store's own metrics are described by that store: with
/// PostgreSQL, call `crossfold_postgres::describe_metrics()` after this.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = builder()?.install_recorder()?;
    describe();
    Ok(handle)
}

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(COMMAND_ATTEMPTS.into()), ATTEMPT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_appends".into()), APPENDS_BUCKETS)
}

/// Describes the metrics of the executor, of deadline workers and those common to the stores
/// to the recorder in scope.
fn describe() {
    for m in COMMAND_METRICS
        .iter()
        .chain(&STORE_METRICS)
        .chain(&DEADLINE_METRICS)
        .chain(&PROJECTION_METRICS)
    {
        m.describe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::metrics::{
        COMMANDS_TOTAL, STORE_ERRORS_TOTAL, STORE_OPERATION_DURATION_SECONDS,
    };

    /// The exporter's side only: the series are recorded here by hand, under a made-up store
    /// name. What each store really records is tested in that store's crate.
    #[test]
    fn store_metrics_are_described_and_bucketed() -> Result<(), BuildError> {
        let recorder = builder()?.build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::histogram!(
                STORE_OPERATION_DURATION_SECONDS,
                "store" => "example",
                "operation" => "append"
            )
            .record(0.000_3);
            metrics::counter!(
                STORE_ERRORS_TOTAL,
                "store" => "example",
                "operation" => "append",
                "kind" => "conflict"
            )
            .increment(1);
        });
        let text = handle.render();
        for line in [
            "# HELP crossfold_store_operation_duration_seconds Wall time of event store calls",
            "# TYPE crossfold_store_operation_duration_seconds histogram",
            "crossfold_store_operation_duration_seconds_bucket\
             {store=\"example\",operation=\"append\",le=\"0.0005\"} 1",
            "# HELP crossfold_store_errors_total Failed event store calls",
            r#"crossfold_store_errors_total{store="example",operation="append",kind="conflict"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        Ok(())
    }

    /// The executor's metrics are described from core's table, without the executor.
    #[test]
    fn command_metrics_are_described_and_attempts_bucketed() -> Result<(), BuildError> {
        let recorder = builder()?.build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::counter!(COMMANDS_TOTAL, "command" => "Deposit", "outcome" => "success")
                .increment(1);
            metrics::histogram!(COMMAND_ATTEMPTS, "command" => "Deposit").record(2.0);
        });
        let text = handle.render();
        for line in [
            "# HELP crossfold_commands_total Commands executed, by command and outcome.",
            r#"crossfold_commands_total{command="Deposit",outcome="success"} 1"#,
            "# HELP crossfold_command_attempts Attempts needed per command execution.",
            r#"crossfold_command_attempts_bucket{command="Deposit",le="2"} 1"#,
            r#"crossfold_command_attempts_bucket{command="Deposit",le="1"} 0"#,
        ] {
            assert!(
                text.contains(line),
                "missing {line:?} in:
{text}"
            );
        }
        Ok(())
    }
}
