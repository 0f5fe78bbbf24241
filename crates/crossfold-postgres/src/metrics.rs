//! What the store records through the `metrics` facade: the metrics every store records (see
//! [`crossfold_core::metrics::STORE_METRICS`]), plus the pool, the ages of the oldest open
//! append (which holds the log's visibility horizon back) and of the oldest open writing
//! transaction, and a hot standby's replay lag. Recording is a no-op until the application installs a recorder.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::StoreError;
use crossfold_core::metrics::{
    MetricDescription, MetricKind, STORE_APPENDED_EVENTS_TOTAL, STORE_ERRORS_TOTAL, STORE_METRICS,
    STORE_OPERATION_DURATION_SECONDS, StoreOperation,
};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::health::{PgHealth, PgPoolStatus};

/// Connections of a store's pool: a gauge labelled `schema` (the store's) and `state` —
/// `size` (open), `available` (open and idle) or `waiting` (calls waiting for one). Set by
/// health checks, and by appends at most once a second.
pub const POOL_CONNECTIONS: &str = "crossfold_postgres_pool_connections";

/// How long the oldest open writing transaction in the cluster has been open, in seconds (0
/// when there is none). Since migration 6 only an open append of the store holds its
/// subscriptions back ([`OLDEST_APPEND_AGE_SECONDS`]); other long transactions still hold back
/// the server's vacuum. Set by health checks.
pub const OLDEST_TRANSACTION_AGE_SECONDS: &str =
    "crossfold_postgres_oldest_transaction_age_seconds";

/// How long the oldest open append of the store that holds back the log's visibility horizon
/// has been open, in seconds (0 when there is none): subscriptions and projections see no event
/// committed after it started until it ends. Labelled `schema`. Set by health checks.
pub const OLDEST_APPEND_AGE_SECONDS: &str = "crossfold_postgres_oldest_append_age_seconds";

/// How far a hot standby's replay trails what it has received from the primary, in seconds:
/// the time since the last transaction it replayed committed on the primary, 0 when it has
/// replayed everything it received (and on a primary). Labelled `schema`. Set by health checks
/// of a store connected to a standby (only by those): its subscribers see events that much
/// late.
pub const REPLAY_LAG_SECONDS: &str = "crossfold_postgres_replay_lag_seconds";

/// Appends per call of a store with group commit on: a histogram labelled `schema`, one
/// observation per call (1 for an append that went alone). A histogram whose observations stay
/// at 1 says group commit forms no groups at this load; see `docs/operations.md`.
pub const GROUP_COMMIT_APPENDS: &str = "crossfold_postgres_group_commit_appends";

/// The `store` label of the metrics every store records.
const STORE: &str = "postgres";

/// Appends refresh the pool gauges at most this often; sampling the pool takes its lock.
const POOL_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

const PG_METRICS: [MetricDescription; 5] = [
    MetricDescription::new(
        POOL_CONNECTIONS,
        MetricKind::Gauge,
        Some("count"),
        "Connections of the PostgreSQL store's pool, by schema and state \
         (size, available, waiting).",
    ),
    MetricDescription::new(
        OLDEST_TRANSACTION_AGE_SECONDS,
        MetricKind::Gauge,
        Some("seconds"),
        "Age of the oldest open writing transaction in the cluster.",
    ),
    MetricDescription::new(
        OLDEST_APPEND_AGE_SECONDS,
        MetricKind::Gauge,
        Some("seconds"),
        "Age of the store's oldest open append holding back event delivery, by schema.",
    ),
    MetricDescription::new(
        REPLAY_LAG_SECONDS,
        MetricKind::Gauge,
        Some("seconds"),
        "How far a hot standby's replay trails the primary (0 on a primary), by schema.",
    ),
    MetricDescription::new(
        GROUP_COMMIT_APPENDS,
        MetricKind::Histogram,
        Some("count"),
        "Appends per call with group commit on (1: the append went alone), by schema.",
    ),
];

/// Registers the help texts and units of every metric this store records — the common store
/// metrics and the PostgreSQL ones — with the installed recorder. Call it once after installing
/// a recorder (after `crossfold_monitoring::install_prometheus()`, which describes only the
/// common ones because it does not depend on this crate).
pub fn describe_metrics() {
    for m in STORE_METRICS.iter().chain(&PG_METRICS) {
        m.describe();
    }
}

const OPERATIONS: usize = StoreOperation::ALL.len();
const KINDS: usize = StoreError::KINDS.len();

/// One store's metric handles, resolved once: a lookup by name and labels costs more than the
/// rest of the bookkeeping of a call.
pub(crate) struct StoreMetrics {
    durations: [Histogram; OPERATIONS],
    /// Resolved on first use, so only errors that happen show up as series.
    errors: [[OnceLock<Counter>; KINDS]; OPERATIONS],
    appended: Counter,
    pool_size: Gauge,
    pool_available: Gauge,
    pool_waiting: Gauge,
    oldest_transaction_age: Gauge,
    oldest_append_age: Gauge,
    replay_lag: Gauge,
    epoch: Instant,
    /// Milliseconds after `epoch` at which an append next refreshes the pool gauges.
    next_pool_sample: AtomicU64,
}

impl StoreMetrics {
    pub(crate) fn new(schema: &str) -> Self {
        let pool = |state: &'static str| {
            let labels = [("schema", schema.to_owned()), ("state", state.to_owned())];
            gauge!(POOL_CONNECTIONS, &labels)
        };
        Self {
            durations: StoreOperation::ALL.map(|op| {
                let labels = [("store", STORE), ("operation", op.as_str())];
                histogram!(STORE_OPERATION_DURATION_SECONDS, &labels)
            }),
            errors: Default::default(),
            appended: counter!(STORE_APPENDED_EVENTS_TOTAL, "store" => STORE),
            pool_size: pool("size"),
            pool_available: pool("available"),
            pool_waiting: pool("waiting"),
            oldest_transaction_age: gauge!(OLDEST_TRANSACTION_AGE_SECONDS),
            oldest_append_age: gauge!(OLDEST_APPEND_AGE_SECONDS, "schema" => schema.to_owned()),
            replay_lag: gauge!(REPLAY_LAG_SECONDS, "schema" => schema.to_owned()),
            epoch: Instant::now(),
            next_pool_sample: AtomicU64::new(0),
        }
    }

    /// Records a call that started at `started` and ended at `finished`.
    pub(crate) fn record<T>(
        &self,
        operation: StoreOperation,
        started: Instant,
        finished: Instant,
        result: &Result<T, StoreError>,
    ) {
        self.durations[operation.index()].record(finished.saturating_duration_since(started));
        if let Err(e) = result {
            self.errors[operation.index()][e.kind_index()]
                .get_or_init(|| {
                    counter!(
                        STORE_ERRORS_TOTAL,
                        "store" => STORE,
                        "operation" => operation.as_str(),
                        "kind" => e.kind()
                    )
                })
                .increment(1);
        }
    }

    /// Counts appended events, and says whether the pool gauges are due for a refresh (at
    /// most once per [`POOL_SAMPLE_INTERVAL`] across all of the store's appends).
    pub(crate) fn appended(&self, events: usize, finished: Instant) -> bool {
        self.appended.increment(events as u64);
        let now = u64::try_from(finished.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let due = self.next_pool_sample.load(Ordering::Relaxed);
        now >= due
            && self
                .next_pool_sample
                .compare_exchange(
                    due,
                    now.saturating_add(POOL_SAMPLE_INTERVAL.as_millis() as u64),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    pub(crate) fn pool(&self, pool: PgPoolStatus) {
        self.pool_size.set(pool.size as f64);
        self.pool_available.set(pool.available as f64);
        self.pool_waiting.set(pool.waiting as f64);
    }

    /// Sets the gauges a health check measured. A store on a hot standby sets only the replay
    /// lag, and a store on a primary everything else: two stores of one schema, one on each,
    /// share the series, and each leaves the other's alone.
    pub(crate) fn health(&self, health: &PgHealth) {
        if health.in_recovery {
            self.replay_lag
                .set(health.replay_lag.unwrap_or(Duration::ZERO).as_secs_f64());
            return;
        }
        self.pool(health.pool);
        self.oldest_transaction_age.set(
            health
                .oldest_transaction_age
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
        );
        self.oldest_append_age.set(
            health
                .oldest_append
                .as_ref()
                .map_or(0.0, |a| a.open_seconds),
        );
    }
}
