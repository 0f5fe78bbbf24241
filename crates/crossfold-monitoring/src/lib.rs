//! # crossfold-monitoring
//!
//! Operating Crossfold: a Prometheus exporter that describes the metrics the executor and the
//! stores record, health checks across components, and the endpoints that serve both to
//! Prometheus and to orchestrators — `/metrics`, `/health/live` and `/health/ready`
//! ([`Endpoints`]). It depends on `crossfold-core`, the exporter and (with the `server`
//! feature, on by default) hyper only, so adding it to a host application pulls in no store, no
//! executor and no benchmark workload (the load harness lives in `crossfold-bench`).
//!
//! One call serves all three endpoints (see [`Endpoints::serve`]); an application with a web
//! framework of its own mounts [`Endpoints::respond`] (or, for frameworks built on the `http`
//! crate, [`Endpoints::http`]) instead, and may turn the `server` feature off.
//!
//! ```
//! use crossfold_core::{HealthCheck, HealthReport, HealthStatus};
//! use crossfold_monitoring::HealthRegistry;
//!
//! #[derive(Clone)]
//! struct Queue;
//! impl HealthCheck for Queue {
//!     async fn check_health(&self) -> HealthReport {
//!         HealthReport::healthy("queue")
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let health = HealthRegistry::new().register("queue", Queue).check().await;
//! assert_eq!(health.status, HealthStatus::Healthy);
//! assert_eq!(health.http_status(), 200);
//! # });
//! ```

mod endpoints;
mod health;
mod prometheus;
#[cfg(feature = "server")]
mod server;

pub use endpoints::{
    EndpointResponse, Endpoints, HEALTH_CONTENT_TYPE, METRICS_CONTENT_TYPE, PATHS,
};
pub use health::{HealthRegistry, SystemHealth};
pub use prometheus::{APPENDS_BUCKETS, ATTEMPT_BUCKETS, LATENCY_BUCKETS, install_prometheus};

/// The handle [`install_prometheus`] returns, which [`Endpoints`] renders.
pub use metrics_exporter_prometheus::PrometheusHandle;
#[cfg(feature = "server")]
pub use server::MonitoringServer;
