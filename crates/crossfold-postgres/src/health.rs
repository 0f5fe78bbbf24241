//! What a health check reports, and how it becomes a [`HealthStatus`].

use std::time::{Duration, Instant};

use crossfold_core::{HealthCheck, HealthReport, HealthStatus, StoreError};
use deadpool_postgres::{PoolError, TimeoutType};

use crate::PgEventStore;

/// The state of the store's connection pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgPoolStatus {
    /// The most connections the pool opens.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Open connections not in use.
    pub available: usize,
    /// Calls waiting for a connection.
    pub waiting: usize,
}

impl From<deadpool_postgres::Status> for PgPoolStatus {
    fn from(s: deadpool_postgres::Status) -> Self {
        Self {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }
}

/// The result of [`PgEventStore::health`](crate::PgEventStore::health).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PgHealth {
    /// How long the health query took, including getting a connection.
    pub latency: Duration,
    /// The connection pool.
    pub pool: PgPoolStatus,
    /// Whether the `LISTEN` connection that wakes subscribers is up (always `true` when
    /// listening is turned off). While it is down, subscribers poll.
    pub listener_connected: bool,
    /// How long the oldest open writing transaction (or prepared transaction) in the cluster
    /// has been open; `None` when there is none. Subscriptions see no event committed after
    /// such a transaction started writing until it ends.
    pub oldest_transaction_age: Option<Duration>,
}

impl PgPoolStatus {
    /// Whether every connection the pool may open is open and in use, or calls are waiting.
    fn is_exhausted(&self) -> bool {
        self.waiting > 0 || (self.size >= self.max_size && self.available == 0)
    }
}

/// `Unhealthy` when the server does not answer; `Degraded` when the pool is exhausted, a
/// writing transaction has been open longer than
/// [`PgConfig::long_transaction_threshold`](crate::PgConfig::long_transaction_threshold), or
/// the `LISTEN` connection is down (subscribers then fall back to polling); `Healthy`
/// otherwise. Details: `latency_seconds`, `pool_max_size`, `pool_size`, `pool_available` and
/// `pool_waiting` (the pool as the check found it, its own connection not counted),
/// `listener_connected`, `oldest_transaction_age_seconds` (null when none is open) and
/// `long_transaction_threshold_seconds`; `error_kind` when the check failed.
impl HealthCheck for PgEventStore {
    async fn check_health(&self) -> HealthReport {
        let started = Instant::now();
        // Taken before the check borrows a connection of its own.
        let pool = self.pool_status();
        let result = self.health().await;
        let mut report =
            assess(result, pool, self.long_transaction_threshold()).detail("schema", self.schema());
        report.checked_in = started.elapsed();
        report
    }
}

const COMPONENT: &str = "event_store";

fn assess(
    result: Result<PgHealth, StoreError>,
    pool: PgPoolStatus,
    threshold: Duration,
) -> HealthReport {
    let health = match result {
        Ok(health) => health,
        Err(e) => {
            let report = if waited_for_a_connection(&e) {
                HealthReport {
                    status: HealthStatus::Degraded,
                    message: Some(format!(
                        "connection pool exhausted: no connection came free in time ({} open, \
                         {} waiting)",
                        pool.size, pool.waiting
                    )),
                    ..HealthReport::healthy(COMPONENT)
                }
            } else {
                HealthReport::unhealthy(
                    COMPONENT,
                    format!("PostgreSQL did not answer: {}", error_chain(&e)),
                )
            };
            return with_pool(report, pool).detail("error_kind", e.kind());
        }
    };

    let mut problems = Vec::new();
    if pool.is_exhausted() || health.pool.waiting > 0 {
        problems.push(format!(
            "connection pool exhausted ({} of {} connections in use, {} calls waiting)",
            pool.size - pool.available.min(pool.size),
            pool.max_size,
            pool.waiting.max(health.pool.waiting)
        ));
    }
    if let Some(age) = health.oldest_transaction_age
        && age > threshold
    {
        problems.push(format!(
            "a writing transaction has been open for {:.1} s (threshold {:.1} s); subscriptions \
             see no event committed after it started until it ends",
            age.as_secs_f64(),
            threshold.as_secs_f64()
        ));
    }
    if !health.listener_connected {
        problems.push(
            "the LISTEN connection is down; subscribers notice new events by polling".to_owned(),
        );
    }
    let report = HealthReport {
        status: if problems.is_empty() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        },
        message: (!problems.is_empty()).then(|| problems.join("; ")),
        ..HealthReport::healthy(COMPONENT)
    };
    with_pool(report, pool)
        .detail("latency_seconds", health.latency.as_secs_f64())
        .detail("listener_connected", health.listener_connected)
        .detail(
            "oldest_transaction_age_seconds",
            health.oldest_transaction_age.map(|a| a.as_secs_f64()),
        )
        .detail(
            "long_transaction_threshold_seconds",
            threshold.as_secs_f64(),
        )
}

fn with_pool(report: HealthReport, pool: PgPoolStatus) -> HealthReport {
    report
        .detail("pool_max_size", pool.max_size)
        .detail("pool_size", pool.size)
        .detail("pool_available", pool.available)
        .detail("pool_waiting", pool.waiting)
}

/// Whether the call failed only because every pooled connection stayed busy: the server may
/// be fine.
fn waited_for_a_connection(e: &StoreError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<PoolError>())
        .is_some_and(|p| matches!(p, PoolError::Timeout(TimeoutType::Wait)))
}

/// An error and its causes on one line: `StoreError`'s own message ("store unavailable") does
/// not say what went wrong.
fn error_chain(e: &StoreError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(pool: PgPoolStatus, age: Option<Duration>, listener: bool) -> PgHealth {
        PgHealth {
            latency: Duration::from_millis(1),
            pool,
            listener_connected: listener,
            oldest_transaction_age: age,
        }
    }

    fn pool(max_size: usize, size: usize, available: usize, waiting: usize) -> PgPoolStatus {
        PgPoolStatus {
            max_size,
            size,
            available,
            waiting,
        }
    }

    const THRESHOLD: Duration = Duration::from_secs(30);

    #[test]
    fn a_quiet_store_is_healthy() {
        let idle = pool(4, 2, 2, 0);
        let report = assess(Ok(health(idle, None, true)), idle, THRESHOLD);
        assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
        assert_eq!(report.message, None);
        assert_eq!(report.details["pool_available"], 2);
        assert_eq!(
            report.details["oldest_transaction_age_seconds"],
            serde_json::Value::Null
        );
        let young = Some(Duration::from_secs(29));
        assert_eq!(
            assess(Ok(health(idle, young, true)), idle, THRESHOLD).status,
            HealthStatus::Healthy
        );
    }

    #[test]
    fn each_problem_degrades_and_is_named() {
        let idle = pool(4, 2, 2, 0);
        let full = pool(4, 4, 0, 0);
        let queued = pool(4, 4, 0, 3);
        let old = Some(Duration::from_secs(31));
        let cases = [
            (full, health(idle, None, true), "pool exhausted"),
            (queued, health(idle, None, true), "3 calls waiting"),
            (idle, health(idle, old, true), "open for 31.0 s"),
            (idle, health(idle, None, false), "LISTEN"),
        ];
        for (before, after, says) in cases {
            let report = assess(Ok(after), before, THRESHOLD);
            assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
            let message = report.message.unwrap_or_default();
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn a_failed_check_is_unhealthy_and_says_why() {
        let idle = pool(4, 0, 0, 0);
        let e = StoreError::Unavailable("connection refused".into());
        let report = assess(Err(e), idle, THRESHOLD);
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(
            report
                .message
                .as_deref()
                .is_some_and(|m| m.contains("store unavailable: connection refused")),
            "{report:?}"
        );
        assert_eq!(report.details["error_kind"], "unavailable");
    }
}
