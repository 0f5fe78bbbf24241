//! Health checks: a component reports whether it can do its job, and why not.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;

/// How well a component works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working normally.
    Healthy,
    /// Working, but something needs attention (slow, nearly full, lagging).
    Degraded,
    /// Not working.
    Unhealthy,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// One component's answer to a health check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthReport {
    /// The component (`"event_store"`, `"projection:balances"`, ...).
    pub component: String,
    /// Its status.
    pub status: HealthStatus,
    /// How long the check took.
    pub checked_in: Duration,
    /// Measurements that explain the status (pool usage, lag, ...).
    pub details: BTreeMap<String, serde_json::Value>,
    /// Why it is not healthy, if it is not.
    pub message: Option<String>,
}

impl HealthReport {
    /// A healthy report with no details.
    pub fn healthy(component: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            status: HealthStatus::Healthy,
            checked_in: Duration::ZERO,
            details: BTreeMap::new(),
            message: None,
        }
    }

    /// An unhealthy report saying why.
    pub fn unhealthy(component: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: HealthStatus::Unhealthy,
            message: Some(message.into()),
            ..Self::healthy(component)
        }
    }

    /// Adds a detail.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// The health document of a system of components, whose overall status is `status`: the
    /// body of `crossfold-monitoring`'s `/health/ready` answer and what `crossfold health
    /// --json` prints, so that one parser reads both. It holds the overall `status` and per
    /// component its name, `status`, `message` (null when healthy), `checked_in_seconds` and
    /// `details` ([`to_json`](Self::to_json)).
    ///
    /// ```
    /// use crossfold_core::{HealthReport, HealthStatus};
    ///
    /// let store = HealthReport::healthy("event_store").detail("pool_size", 16);
    /// let document = HealthReport::document(HealthStatus::Healthy, &[store]);
    /// assert_eq!(
    ///     document.to_string(),
    ///     r#"{"components":[{"checked_in_seconds":0.0,"component":"event_store","details":{"pool_size":16},"message":null,"status":"healthy"}],"status":"healthy"}"#
    /// );
    /// ```
    pub fn document(status: HealthStatus, components: &[HealthReport]) -> serde_json::Value {
        let components: Vec<serde_json::Value> =
            components.iter().map(HealthReport::to_json).collect();
        serde_json::json!({ "status": status, "components": components })
    }

    /// This report as a component of the health [`document`](Self::document): the time the
    /// check took in seconds (`checked_in_seconds`), the rest under the field names.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "component": self.component,
            "status": self.status,
            "message": self.message,
            "checked_in_seconds": self.checked_in.as_secs_f64(),
            "details": self.details,
        })
    }
}

/// Something that can say whether it is healthy. Stores implement it; so can projections and
/// application components.
pub trait HealthCheck: Send + Sync {
    /// Checks now. Never fails: a failure is an [`HealthStatus::Unhealthy`] report.
    fn check_health(&self) -> impl Future<Output = HealthReport> + Send;
}

impl<T: HealthCheck> HealthCheck for std::sync::Arc<T> {
    fn check_health(&self) -> impl Future<Output = HealthReport> + Send {
        (**self).check_health()
    }
}

impl<T: HealthCheck> HealthCheck for &T {
    fn check_health(&self) -> impl Future<Output = HealthReport> + Send {
        (**self).check_health()
    }
}
