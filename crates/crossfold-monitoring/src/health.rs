//! Running every component's health check at once, with a time limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossfold_core::{HealthCheck, HealthReport, HealthStatus};
use serde::Serialize;

type BoxedCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = HealthReport> + Send>> + Send + Sync>;

/// The health of the whole system: the worst of its components.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SystemHealth {
    /// The worst component status.
    pub status: HealthStatus,
    /// Each component's report.
    pub components: Vec<HealthReport>,
}

impl SystemHealth {
    /// The HTTP status a health endpoint should answer with: 200 unless unhealthy (503).
    pub fn http_status(&self) -> u16 {
        match self.status {
            HealthStatus::Unhealthy => 503,
            _ => 200,
        }
    }

    /// The body of a readiness answer: the overall `status`, and per component its name,
    /// `status`, `message` (null when healthy), `checked_in_seconds` and `details`
    /// ([`HealthReport::document`], which `crossfold health --json` prints too).
    ///
    /// ```json
    /// {"status":"degraded","components":[{"component":"event_store","status":"degraded",
    ///   "message":"connection pool exhausted (...)","checked_in_seconds":0.0021,
    ///   "details":{"pool_size":16,"pool_waiting":3}}]}
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        HealthReport::document(self.status, &self.components)
    }
}

/// A set of named health checks, run together with a time limit each.
#[derive(Clone, Default)]
pub struct HealthRegistry {
    checks: Vec<(String, BoxedCheck)>,
    timeout: Option<Duration>,
}

impl HealthRegistry {
    /// An empty registry; each check gets 5 s unless [`timeout`](Self::timeout) says otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time limit of each check; a check that takes longer is reported unhealthy.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a component under `name` (its report's component name is replaced by `name`).
    pub fn register<C: HealthCheck + Clone + 'static>(
        mut self,
        name: impl Into<String>,
        check: C,
    ) -> Self {
        let boxed: BoxedCheck = Arc::new(move || {
            let check = check.clone();
            Box::pin(async move { check.check_health().await })
        });
        self.checks.push((name.into(), boxed));
        self
    }

    /// Runs every check concurrently, each as a task of its own: a check that panics is
    /// reported unhealthy instead of taking the whole health answer down with it.
    pub async fn check(&self) -> SystemHealth {
        let limit = self.timeout.unwrap_or(Duration::from_secs(5));
        let runs: Vec<_> = self
            .checks
            .iter()
            .map(|(_, check)| {
                let fut = check();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let report = tokio::time::timeout(limit, fut).await;
                    (report, started.elapsed())
                })
            })
            .collect();
        let mut components = Vec::with_capacity(runs.len());
        for ((name, _), run) in self.checks.iter().zip(runs) {
            let (mut report, checked_in) = match run.await {
                Ok((Ok(report), took)) => (report, took),
                Ok((Err(_), took)) => (
                    HealthReport::unhealthy(name, format!("no answer within {limit:?}")),
                    took,
                ),
                Err(e) => (
                    HealthReport::unhealthy(name, format!("the check failed: {e}")),
                    Duration::ZERO,
                ),
            };
            report.component = name.clone();
            report.checked_in = checked_in;
            components.push(report);
        }
        SystemHealth {
            status: components
                .iter()
                .map(|c| c.status)
                .max()
                .unwrap_or(HealthStatus::Healthy),
            components,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Fixed(HealthStatus);
    impl HealthCheck for Fixed {
        async fn check_health(&self) -> HealthReport {
            HealthReport {
                status: self.0,
                ..HealthReport::healthy("x")
            }
        }
    }

    #[derive(Clone)]
    struct Hangs;
    impl HealthCheck for Hangs {
        async fn check_health(&self) -> HealthReport {
            tokio::time::sleep(Duration::from_secs(60)).await;
            HealthReport::healthy("never")
        }
    }

    #[derive(Clone)]
    struct Panics;
    impl HealthCheck for Panics {
        #[allow(clippy::panic)]
        async fn check_health(&self) -> HealthReport {
            panic!("a bug in the check")
        }
    }

    #[tokio::test]
    async fn the_worst_component_decides() {
        let health = HealthRegistry::new()
            .register("store", Fixed(HealthStatus::Healthy))
            .register("projection", Fixed(HealthStatus::Degraded))
            .check()
            .await;
        assert_eq!(health.status, HealthStatus::Degraded);
        assert_eq!(health.http_status(), 200);
        assert_eq!(health.components[1].component, "projection");
    }

    #[tokio::test]
    async fn a_check_that_does_not_answer_is_unhealthy() {
        let health = HealthRegistry::new()
            .timeout(Duration::from_millis(20))
            .register("stuck", Hangs)
            .check()
            .await;
        assert_eq!(health.status, HealthStatus::Unhealthy);
        assert_eq!(health.http_status(), 503);
    }

    #[tokio::test]
    async fn a_check_that_panics_is_unhealthy_and_the_others_still_answer() {
        let health = HealthRegistry::new()
            .register("broken", Panics)
            .register("store", Fixed(HealthStatus::Healthy))
            .check()
            .await;
        assert_eq!(health.status, HealthStatus::Unhealthy);
        assert_eq!(health.components[0].component, "broken");
        assert_eq!(health.components[0].status, HealthStatus::Unhealthy);
        assert_eq!(health.components[1].status, HealthStatus::Healthy);
    }
}
