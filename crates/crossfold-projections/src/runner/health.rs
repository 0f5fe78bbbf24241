//! A projection's health, for a health registry.

use std::sync::Arc;
use std::time::Instant;

use crossfold_core::checkpoint::ProjectionState;
use crossfold_core::{HealthCheck, HealthReport, HealthStatus};

use super::status::Shared;

/// One projection's health (`projection:NAME`): unhealthy when failed or stalled, degraded
/// when paused, stopped, lagging longer than the runner's `degraded_lag`, or waiting that long
/// for an open append; healthy otherwise, also when another process holds its lease (this one
/// is a standby). A waiting projection names the append (`waiting_pid`,
/// `waiting_seconds`).
#[derive(Clone, Debug)]
pub struct ProjectionHealth {
    shared: Arc<Shared>,
}

impl ProjectionHealth {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The report, now.
    pub fn report(&self) -> HealthReport {
        let started = Instant::now();
        let snapshot = self.shared.snapshot();
        let status = &snapshot.status;
        let component = format!("projection:{}", snapshot.name);
        let mut report = HealthReport::healthy(component)
            .detail("owned", snapshot.owned)
            .detail("state", status.state.as_str())
            .detail("position", snapshot.position.to_string())
            .detail("generation", snapshot.generation)
            .detail("lag_events", status.lag_events)
            .detail("lag_seconds", status.lag_seconds)
            .detail("events_per_second", status.events_per_second)
            .detail("retries", status.retries);
        if let Some(append) = &status.waiting_for {
            report = report
                .detail("waiting_pid", append.pid)
                .detail("waiting_seconds", append.open_seconds);
        }
        let why = |what: &str| match &status.last_error {
            Some(e) => format!("{what}: {e}"),
            None => what.to_owned(),
        };
        let (level, message) = match status.state {
            _ if !snapshot.owned => (HealthStatus::Healthy, None),
            ProjectionState::Failed => (HealthStatus::Unhealthy, Some(why("failed"))),
            ProjectionState::Stalled => (HealthStatus::Unhealthy, Some(why("stalled"))),
            ProjectionState::Paused | ProjectionState::Stopped => (
                HealthStatus::Degraded,
                Some(format!("{} by a control request", status.state)),
            ),
            ProjectionState::Waiting
                if status.lag_seconds > self.shared.degraded_lag.as_secs_f64() =>
            {
                (
                    HealthStatus::Degraded,
                    Some(format!(
                        "waiting for {}: {}{} committed events cannot be applied until it ends",
                        status
                            .waiting_for
                            .as_ref()
                            .map_or_else(|| "an open append".to_owned(), ToString::to_string),
                        if status.lag_events_capped {
                            "at least "
                        } else {
                            ""
                        },
                        status.lag_events
                    )),
                )
            }
            _ if status.lag_seconds > self.shared.degraded_lag.as_secs_f64() => (
                HealthStatus::Degraded,
                Some(format!(
                    "lagging: last caught up {:.0} s ago, {}{} events behind",
                    status.lag_seconds,
                    if status.lag_events_capped {
                        "at least "
                    } else {
                        ""
                    },
                    status.lag_events
                )),
            ),
            _ if status.retries > 0 => (HealthStatus::Degraded, Some(why("retrying"))),
            _ => (HealthStatus::Healthy, None),
        };
        report.status = level;
        report.message = message;
        report.checked_in = started.elapsed();
        report
    }
}

impl HealthCheck for ProjectionHealth {
    fn check_health(&self) -> impl Future<Output = HealthReport> + Send {
        let report = self.report();
        async move { report }
    }
}
