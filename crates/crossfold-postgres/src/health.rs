//! What a health check asks the server, what it reports, and how that becomes a
//! [`HealthStatus`]; the pool and the `LISTEN` connection as health components of their own.

use std::time::{Duration, Instant};

use crossfold_core::{ErrorChain, HealthCheck, HealthReport, HealthStatus, OpenAppend, StoreError};
use deadpool_postgres::{Pool, PoolError, TimeoutType};

use crate::db::Db;
use crate::error::{NotMigrated, classify};
use crate::notify::ListenerState;
use crate::read::Blocker;
use crate::sql::quoted;
use crate::types::{Xid8, get};

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
    /// has been open; `None` when there is none. Informational: such a transaction holds back
    /// the server's vacuum, but since migration 6 only an append of this store holds back its
    /// subscriptions ([`oldest_append`](Self::oldest_append)).
    ///
    /// Read from `pg_stat_activity`, which shows other roles' sessions only to roles with
    /// `pg_read_all_stats`.
    pub oldest_transaction_age: Option<Duration>,
    /// The oldest open append of this store that holds back the log's visibility horizon, with
    /// its server process and age; `None` when there is none. Subscriptions and projections see
    /// no event committed after it started until it ends. Its age is exact where the schema's
    /// owner may see the session's start in `pg_stat_activity` (sessions of its own role, or
    /// every session with `pg_read_all_stats`); otherwise it is how long this store's health
    /// checks have seen it hold the horizon.
    pub oldest_append: Option<OpenAppend>,
    /// How many transaction ids the log's visibility horizon trails the newest one by
    /// (the snapshot's xmax − the horizon): 0 when no append holds it.
    pub horizon_lag: u64,
    /// How long the log's visibility horizon has stayed where it is while newer transactions
    /// started, as seen by this store's health checks (the horizon must not move between two
    /// checks to count; `None` when it moved or nothing holds it). Subscriptions see nothing
    /// committed after the horizon until it moves. Readable by every role.
    pub horizon_age: Option<Duration>,
    /// Whether the server is a hot standby (in recovery): it serves reads and subscriptions,
    /// and refuses writes ([`PgReadOnly`](crate::PgReadOnly)).
    pub in_recovery: bool,
    /// On a hot standby, how far its replay trails what it has received from the primary: the
    /// time since the last transaction it replayed committed on the primary, zero when it has
    /// replayed everything it received (or receives nothing: recovery from an archive); `None`
    /// on a primary, or before it replayed anything.
    /// (A standby that lost its primary has replayed all it received and shows zero: the
    /// primary's `pg_stat_replication` tells that case.)
    pub replay_lag: Option<Duration>,
    /// On a hot standby, the bytes of WAL received but not replayed yet.
    pub replay_lag_bytes: Option<u64>,
    /// For a log partitioned by position (migration 14), how many attached partitions lie
    /// wholly beyond the next transaction id (the health check creates the ones missing
    /// first); `None` when the log is not partitioned. Zero means appends are about to go
    /// to the default partition.
    pub partitions_ahead: Option<u32>,
    /// Whether events went to the default partition of a partitioned log: appends outran its
    /// partitions (or the log started a new epoch). They are read like any other, but stay
    /// in a partition that cannot be detached.
    pub events_outside_partitions: bool,
}

/// Where the horizon stood when a health check first saw it stuck, so a later check can tell
/// for how long it has not moved.
#[derive(Debug, Default)]
pub(crate) struct HorizonWatch {
    since: std::sync::Mutex<Option<(u64, Instant)>>,
}

impl HorizonWatch {
    /// Records a snapshot's bounds seen at `now`; returns the lag in transaction ids and how
    /// long the horizon has stayed at `xmin` while transactions were open.
    pub(crate) fn observe(&self, xmin: u64, xmax: u64, now: Instant) -> (u64, Option<Duration>) {
        let lag = xmax.saturating_sub(xmin);
        let mut since = self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lag == 0 {
            *since = None;
            return (0, None);
        }
        match *since {
            Some((held, first)) if held == xmin => {
                (lag, Some(now.saturating_duration_since(first)))
            }
            _ => {
                *since = Some((xmin, now));
                (lag, None)
            }
        }
    }
}

impl PgPoolStatus {
    /// Whether every connection the pool may open is open and in use, or calls are waiting.
    fn is_exhausted(&self) -> bool {
        self.waiting > 0 || (self.size >= self.max_size && self.available == 0)
    }
}

/// Asks the server: round-trip latency (getting a connection included), the age of the oldest
/// open writing transaction, the oldest open append and how far the log's visibility horizon
/// trails, recorded in `horizon`. The pool's state is read after the connection went back, so
/// it does not count the check's own.
pub(crate) async fn check(
    db: &Db,
    listener: &ListenerState,
    horizon: &HorizonWatch,
) -> Result<PgHealth, StoreError> {
    let start = Instant::now();
    let client = db.client().await?;
    // Only transactions holding a transaction id count. Other roles' sessions show in
    // pg_stat_activity only with pg_read_all_stats.
    let statement = client
        .prepare_cached(
            "SELECT extract(epoch FROM now() - least( \
                 (SELECT min(xact_start) FROM pg_stat_activity \
                  WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()), \
                 (SELECT min(prepared) FROM pg_prepared_xacts)))::float8, \
                    pg_snapshot_xmin(s), pg_snapshot_xmax(s), pg_is_in_recovery(), \
                    CASE WHEN NOT pg_is_in_recovery() THEN NULL \
                         WHEN pg_last_wal_receive_lsn() IS NULL \
                              OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 \
                         ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) \
                    END::float8, \
                    CASE WHEN pg_is_in_recovery() THEN greatest(0, \
                         pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())) \
                    END::float8 \
             FROM pg_current_snapshot() AS s",
        )
        .await
        .map_err(classify)?;
    let row = client.query_one(&statement, &[]).await.map_err(classify)?;
    let latency = start.elapsed();
    // The log's horizon and the append holding it, computed afresh (every role may ask). A
    // schema without migration 6 has neither: its horizon is the snapshot's xmin.
    let log = client
        .query_opt(
            &format!(
                "SELECT {q}.log_horizon(s), pg_snapshot_xmax(s), b.pid, \
                        b.transaction_id::text::int8, \
                        (extract(epoch FROM b.xact_start) * 1000000)::int8 \
                 FROM pg_current_snapshot() AS s \
                 LEFT JOIN LATERAL {q}.oldest_append() b ON true",
                q = quoted(&db.schema)
            ),
            &[],
        )
        .await
        .map_err(classify);
    // Returned first, so the pool state does not count the health check's own connection.
    drop(client);
    let partitions = partitions(db).await;
    let age: Option<f64> = get(&row, 0)?;
    let in_recovery: bool = get(&row, 3)?;
    let replay_lag: Option<f64> = get(&row, 4)?;
    let replay_lag_bytes: Option<f64> = get(&row, 5)?;
    let (mut low, mut high): (Xid8, Xid8) = (get(&row, 1)?, get(&row, 2)?);
    let mut oldest_append = None;
    match log {
        Ok(Some(log)) => {
            (low, high) = (get(&log, 0)?, get(&log, 1)?);
            oldest_append = Blocker::from_row(&log, 2)?.open_append(&db.horizon);
        }
        Ok(None) => {}
        Err(StoreError::Backend(e)) if e.downcast_ref::<NotMigrated>().is_some() => {}
        Err(e) => return Err(e),
    }
    let (horizon_lag, horizon_age) = horizon.observe(low.0, high.0, start);
    Ok(PgHealth {
        latency,
        pool: PgPoolStatus::from(db.pool.status()),
        listener_connected: !listener.listening() || listener.connected(),
        oldest_transaction_age: age
            .filter(|s| s.is_finite())
            .map(|s| Duration::from_secs_f64(s.max(0.0))),
        oldest_append,
        horizon_lag,
        horizon_age,
        in_recovery,
        replay_lag: replay_lag
            .filter(|s| s.is_finite())
            .map(|s| Duration::from_secs_f64(s.max(0.0))),
        replay_lag_bytes: replay_lag_bytes
            .filter(|b| b.is_finite())
            .map(|b| b.max(0.0) as u64),
        partitions_ahead: partitions.map(|(ahead, _)| ahead),
        events_outside_partitions: partitions.is_some_and(|(_, outside)| outside),
    })
}

/// For a partitioned log: partitions ahead of the next transaction id (after creating the
/// missing ones), and whether the default partition holds events. `None` when the log is not
/// partitioned, on a standby's store (partitions come from the primary), and when the schema
/// lacks migration 14 or the question fails (health reports the rest).
async fn partitions(db: &Db) -> Option<(u32, bool)> {
    let q = quoted(&db.schema);
    // Creating the missing ones may fail (a lock not granted in time): what is there is
    // reported all the same.
    if let Err(e) = crate::archive::ensure(db).await {
        tracing::debug!(error = %ErrorChain(&e), schema = %db.schema, "crossfold: log partitions not created ahead");
    }
    let client = db.client().await.ok()?;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE p.detached_at IS NULL \
                                           AND p.upper_bound IS NOT NULL \
                                           AND coalesce(p.lower_bound::text::numeric, 0) >= x.next)::int8, \
                        count(*)::int8 \
                 FROM {q}.log_partitions p, \
                      (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::numeric + ls.shift \
                              AS next FROM {q}.log_state ls) x"
            ),
            &[],
        )
        .await
        .ok()?;
    let ahead: i64 = row.try_get(0).ok()?;
    let all: i64 = row.try_get(1).ok()?;
    if all == 0 {
        return None;
    }
    let outside: bool = client
        .query_one(
            &format!("SELECT EXISTS (SELECT FROM {q}.events_default)"),
            &[],
        )
        .await
        .ok()?
        .try_get(0)
        .ok()?;
    Some((u32::try_from(ahead).unwrap_or(u32::MAX), outside))
}

const COMPONENT: &str = "event_store";

/// The report of a health check that found `result`, with the pool as it was before the check
/// took a connection.
pub(crate) fn assess(
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
                    format!("PostgreSQL did not answer: {}", ErrorChain(&e)),
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
    if let Some(append) = &health.oldest_append
        && append.open_seconds > threshold.as_secs_f64()
    {
        problems.push(format!(
            "{append}{} (threshold {:.1} s); subscriptions and projections see no event \
             committed after it started until it ends",
            append
                .transaction
                .map(|x| format!(", transaction {x}"))
                .unwrap_or_default(),
            threshold.as_secs_f64()
        ));
    } else if let Some(age) = health.horizon_age
        && age > threshold
    {
        problems.push(format!(
            "the log's visibility horizon has not moved for {:.1} s (threshold {:.1} s, {} newer \
             transactions); subscriptions see no event committed after it until it moves",
            age.as_secs_f64(),
            threshold.as_secs_f64(),
            health.horizon_lag
        ));
    }
    if let Some(lag) = health.replay_lag
        && lag > threshold
    {
        problems.push(format!(
            "this hot standby's replay trails the primary by {:.1} s (threshold {:.1} s); its \
             subscriptions and projections see events that much late",
            lag.as_secs_f64(),
            threshold.as_secs_f64()
        ));
    }
    if health.partitions_ahead == Some(0) {
        problems.push(
            "no partition of the log lies ahead of it: appends are about to go to the default \
             partition (`crossfold partitions create`)"
                .to_owned(),
        );
    }
    if health.events_outside_partitions {
        problems.push(
            "events went to the default partition of the log: appends outran its partitions \
             (they are read like any other, but that partition cannot be detached)"
                .to_owned(),
        );
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
            "oldest_append_pid",
            health.oldest_append.as_ref().and_then(|a| a.pid),
        )
        .detail(
            "oldest_append_age_seconds",
            health.oldest_append.as_ref().map(|a| a.open_seconds),
        )
        .detail("horizon_lag_transactions", health.horizon_lag)
        .detail(
            "horizon_age_seconds",
            health.horizon_age.map(|a| a.as_secs_f64()),
        )
        .detail("in_recovery", health.in_recovery)
        .detail(
            "replay_lag_seconds",
            health.replay_lag.map(|l| l.as_secs_f64()),
        )
        .detail("replay_lag_bytes", health.replay_lag_bytes)
        .detail("partitions_ahead", health.partitions_ahead)
        .detail(
            "events_outside_partitions",
            health.events_outside_partitions,
        )
        .detail(
            "long_transaction_threshold_seconds",
            threshold.as_secs_f64(),
        )
}

/// The store's connection pool as a health component of its own, for a readiness answer
/// that lists components separately
/// ([`PgEventStore::pool_health`](crate::PgEventStore::pool_health)). Degraded while the pool
/// is exhausted (every connection it may open is in use, or calls wait for one); healthy
/// otherwise. Takes no connection and sends no query. Details: `pool_max_size`, `pool_size`,
/// `pool_available`, `pool_waiting`. (The store's own check reports the pool too.)
#[derive(Clone, Debug)]
pub struct PgPoolHealth {
    pool: Pool,
    schema: String,
}

impl PgPoolHealth {
    pub(crate) fn new(pool: Pool, schema: String) -> Self {
        Self { pool, schema }
    }
}

impl HealthCheck for PgPoolHealth {
    async fn check_health(&self) -> HealthReport {
        let pool = PgPoolStatus::from(self.pool.status());
        let report = if pool.is_exhausted() {
            HealthReport {
                status: HealthStatus::Degraded,
                message: Some(format!(
                    "connection pool exhausted ({} of {} connections in use, {} calls waiting)",
                    pool.size - pool.available.min(pool.size),
                    pool.max_size,
                    pool.waiting
                )),
                ..HealthReport::healthy("pool")
            }
        } else {
            HealthReport::healthy("pool")
        };
        with_pool(report, pool).detail("schema", self.schema.as_str())
    }
}

/// The `LISTEN` connection that wakes subscribers, as a health component of its own
/// ([`PgEventStore::listener_health`](crate::PgEventStore::listener_health)). Degraded while
/// it is down (subscribers then poll, so events arrive late, never lost); healthy while it is
/// up or listening is turned off. Sends no query. Details: `listening`, `listener_connected`.
#[derive(Clone, Debug)]
pub struct PgListenerHealth(ListenerState);

impl PgListenerHealth {
    pub(crate) fn new(listener: ListenerState) -> Self {
        Self(listener)
    }
}

impl HealthCheck for PgListenerHealth {
    async fn check_health(&self) -> HealthReport {
        let (listening, connected) = (self.0.listening(), self.0.connected());
        let report = if listening && !connected {
            HealthReport {
                status: HealthStatus::Degraded,
                message: Some(
                    "the LISTEN connection is down: subscribers poll until it reconnects"
                        .to_owned(),
                ),
                ..HealthReport::healthy("listener")
            }
        } else {
            HealthReport::healthy("listener")
        };
        report
            .detail("listening", listening)
            .detail("listener_connected", connected)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn health(pool: PgPoolStatus, age: Option<Duration>, listener: bool) -> PgHealth {
        PgHealth {
            latency: Duration::from_millis(1),
            pool,
            listener_connected: listener,
            oldest_transaction_age: age,
            oldest_append: None,
            horizon_lag: 0,
            horizon_age: None,
            in_recovery: false,
            replay_lag: None,
            replay_lag_bytes: None,
            partitions_ahead: None,
            events_outside_partitions: false,
        }
    }

    #[test]
    fn a_partitioned_log_without_room_ahead_is_degraded() {
        let threshold = Duration::from_secs(30);
        let mut log = health(pool(8, 1, 1, 0), None, true);
        log.partitions_ahead = Some(3);
        let report = assess(Ok(log.clone()), pool(8, 1, 1, 0), threshold);
        assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
        log.partitions_ahead = Some(0);
        let report = assess(Ok(log.clone()), pool(8, 1, 1, 0), threshold);
        assert_eq!(report.status, HealthStatus::Degraded);
        assert!(report.message.unwrap().contains("no partition"));
        log.partitions_ahead = Some(2);
        log.events_outside_partitions = true;
        let report = assess(Ok(log), pool(8, 1, 1, 0), threshold);
        assert_eq!(report.status, HealthStatus::Degraded);
        assert!(report.message.unwrap().contains("default partition"));
    }

    #[test]
    fn a_standby_replaying_late_is_degraded() {
        let threshold = Duration::from_secs(30);
        let mut standby = health(pool(8, 1, 1, 0), None, true);
        standby.in_recovery = true;
        standby.replay_lag = Some(Duration::from_secs(5));
        let report = assess(Ok(standby.clone()), pool(8, 1, 1, 0), threshold);
        assert_eq!(report.status, HealthStatus::Healthy);
        assert_eq!(report.details["in_recovery"], true);
        assert_eq!(report.details["replay_lag_seconds"], 5.0);
        standby.replay_lag = Some(Duration::from_secs(31));
        let report = assess(Ok(standby), pool(8, 1, 1, 0), threshold);
        assert_eq!(report.status, HealthStatus::Degraded);
        assert!(
            report
                .message
                .as_deref()
                .is_some_and(|m| m.contains("replay trails the primary by 31.0 s")),
            "{:?}",
            report.message
        );
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
    fn a_pool_is_exhausted_when_full_or_queueing() {
        assert!(!pool(4, 2, 2, 0).is_exhausted());
        assert!(!pool(4, 4, 1, 0).is_exhausted());
        assert!(pool(4, 4, 0, 0).is_exhausted());
        assert!(pool(4, 3, 0, 1).is_exhausted());
    }

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
        let mut held = health(idle, None, true);
        held.oldest_append = Some(OpenAppend::new(Some(4242), 31.0).transaction(77));
        let cases = [
            (full, health(idle, None, true), "pool exhausted"),
            (queued, health(idle, None, true), "3 calls waiting"),
            (
                idle,
                held,
                "an append (pid 4242) open for 31.0 s, transaction 77",
            ),
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
    fn a_long_transaction_that_is_not_an_append_is_only_reported() {
        let idle = pool(4, 2, 2, 0);
        let old = Some(Duration::from_secs(3600));
        let report = assess(Ok(health(idle, old, true)), idle, THRESHOLD);
        assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
        assert_eq!(report.details["oldest_transaction_age_seconds"], 3600.0);
        assert_eq!(report.details["oldest_append_pid"], serde_json::Value::Null);
        let mut young = health(idle, None, true);
        young.oldest_append = Some(OpenAppend::new(Some(7), 29.0));
        let report = assess(Ok(young), idle, THRESHOLD);
        assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
        assert_eq!(report.details["oldest_append_pid"], 7);
        assert_eq!(report.details["oldest_append_age_seconds"], 29.0);
    }

    #[test]
    fn a_horizon_that_stands_still_ages_and_degrades() {
        let watch = HorizonWatch::default();
        let t0 = Instant::now();
        assert_eq!(watch.observe(10, 10, t0), (0, None));
        assert_eq!(watch.observe(10, 15, t0), (5, None));
        let later = t0 + Duration::from_secs(40);
        assert_eq!(
            watch.observe(10, 30, later),
            (20, Some(Duration::from_secs(40)))
        );
        assert_eq!(watch.observe(12, 30, later), (18, None), "it moved");
        let idle = pool(4, 2, 2, 0);
        let mut stuck = health(idle, None, true);
        stuck.horizon_lag = 20;
        stuck.horizon_age = Some(Duration::from_secs(40));
        let report = assess(Ok(stuck), idle, THRESHOLD);
        assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
        assert!(
            report
                .message
                .unwrap_or_default()
                .contains("horizon has not moved")
        );
        assert_eq!(report.details["horizon_lag_transactions"], 20);
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
