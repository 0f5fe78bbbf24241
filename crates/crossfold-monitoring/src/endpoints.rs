//! The answers of `/metrics`, `/health/live` and `/health/ready`, apart from any HTTP server,
//! so that a host application can mount them in the web framework it already runs.

use metrics_exporter_prometheus::PrometheusHandle;

use crate::health::{HealthRegistry, SystemHealth};

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of the health answers.
pub const HEALTH_CONTENT_TYPE: &str = "application/json";

/// The paths [`Endpoints`] answers.
pub const PATHS: [&str; 3] = ["/metrics", "/health/live", "/health/ready"];

/// The monitoring endpoints of a host application:
///
/// * `/metrics`: every metric recorded so far, in the Prometheus text format (from the handle
///   that [`install_prometheus`](crate::install_prometheus) returned);
/// * `/health/live`: `200` with `{"status":"healthy"}` whenever the process answers at all. It
///   runs no check, so a database outage never gets a live process restarted;
/// * `/health/ready`: runs every registered [`HealthCheck`](crossfold_core::HealthCheck) —
///   the event store, projections, anything of the application's own — and answers with a
///   JSON body listing each component ([`SystemHealth::to_json`]); `503` when one is
///   unhealthy, `200` otherwise (a degraded component still takes traffic).
///
/// [`respond`](Self::respond) answers a path for any framework; with the `server` feature
/// (on by default), [`serve`](Self::serve) is the one call that serves all three over HTTP.
///
/// ```
/// use crossfold_monitoring::{Endpoints, HealthRegistry};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let endpoints = Endpoints::new(None).health(HealthRegistry::new());
/// let live = endpoints.respond("/health/live").await;
/// assert_eq!((live.status, live.body.as_str()), (200, r#"{"status":"healthy"}"#));
/// assert_eq!(endpoints.respond("/nowhere").await.status, 404);
/// # });
/// ```
#[derive(Clone)]
pub struct Endpoints {
    metrics: Option<PrometheusHandle>,
    health: HealthRegistry,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// One answer of [`Endpoints::respond`]: what to send back, whatever the HTTP library.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header's value.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl EndpointResponse {
    fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }
}

impl Endpoints {
    /// Endpoints serving the metrics of `metrics` (with `None`, `/metrics` answers `404`: for
    /// an application exporting its metrics some other way) and no health checks yet.
    pub fn new(metrics: impl Into<Option<PrometheusHandle>>) -> Self {
        Self {
            metrics: metrics.into(),
            health: HealthRegistry::new(),
        }
    }

    /// Uses `registry`'s checks for `/health/ready`.
    pub fn health(mut self, registry: HealthRegistry) -> Self {
        self.health = registry;
        self
    }

    /// The answer for `path` (a query string is ignored). Any other path answers `404` naming
    /// the ones that exist. Never fails: a health check that fails, hangs or panics makes an
    /// unhealthy component, not an error.
    pub async fn respond(&self, path: &str) -> EndpointResponse {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match path.trim_end_matches('/') {
            "/metrics" => match &self.metrics {
                Some(handle) => EndpointResponse::new(200, METRICS_CONTENT_TYPE, handle.render()),
                None => EndpointResponse::new(
                    404,
                    "text/plain; charset=utf-8",
                    "metrics are not exported by this process\n",
                ),
            },
            "/health/live" => {
                EndpointResponse::new(200, HEALTH_CONTENT_TYPE, r#"{"status":"healthy"}"#)
            }
            "/health/ready" => {
                let health: SystemHealth = self.health.check().await;
                EndpointResponse::new(
                    health.http_status(),
                    HEALTH_CONTENT_TYPE,
                    health.to_json().to_string(),
                )
            }
            _ => EndpointResponse::new(
                404,
                "text/plain; charset=utf-8",
                format!("not found; try {}\n", PATHS.join(", ")),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{HealthCheck, HealthReport, HealthStatus};
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[derive(Clone)]
    struct Fixed(&'static str, HealthStatus);
    impl HealthCheck for Fixed {
        async fn check_health(&self) -> HealthReport {
            HealthReport {
                status: self.1,
                message: (self.1 != HealthStatus::Healthy).then(|| "lagging".to_owned()),
                ..HealthReport::healthy(self.0).detail("lag_events", 12)
            }
        }
    }

    #[tokio::test]
    async fn ready_lists_every_component_and_answers_503_when_one_is_unhealthy() {
        let endpoints = Endpoints::new(None).health(
            HealthRegistry::new()
                .register("event_store", Fixed("x", HealthStatus::Healthy))
                .register("projection:balances", Fixed("y", HealthStatus::Unhealthy)),
        );
        let ready = endpoints.respond("/health/ready?verbose=1").await;
        assert_eq!(ready.status, 503);
        assert_eq!(ready.content_type, HEALTH_CONTENT_TYPE);
        let body: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["components"][0]["component"], "event_store");
        assert_eq!(body["components"][0]["status"], "healthy");
        assert_eq!(body["components"][1]["component"], "projection:balances");
        assert_eq!(body["components"][1]["message"], "lagging");
        assert_eq!(body["components"][1]["details"]["lag_events"], 12);
        assert!(body["components"][1]["checked_in_seconds"].is_f64());
    }

    #[tokio::test]
    async fn a_degraded_component_still_takes_traffic() {
        let endpoints = Endpoints::new(None).health(
            HealthRegistry::new().register("event_store", Fixed("x", HealthStatus::Degraded)),
        );
        let ready = endpoints.respond("/health/ready").await;
        assert_eq!(ready.status, 200);
        assert!(
            ready.body.contains(r#""status":"degraded""#),
            "{}",
            ready.body
        );
    }

    #[tokio::test]
    async fn metrics_render_the_recorders_text() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("crossfold_commands_total", "command" => "Open").increment(3);
        });
        let endpoints = Endpoints::new(handle);
        let metrics = endpoints.respond("/metrics").await;
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.content_type, METRICS_CONTENT_TYPE);
        assert!(
            metrics
                .body
                .contains(r#"crossfold_commands_total{command="Open"} 3"#),
            "{}",
            metrics.body
        );
        let none = Endpoints::new(None).respond("/metrics").await;
        assert_eq!(none.status, 404);
    }
}
