//! The metrics the event stores and the executor record, named here so that exporters,
//! dashboards and alerts can refer to them without depending on a particular store or on the
//! executor.
//!
//! This crate records nothing: stores and the executor record these names with the labels
//! documented on each, and exporters describe them to a recorder from [`STORE_METRICS`] and
//! [`COMMAND_METRICS`] (with the `metrics` feature, `MetricDescription::describe` does it;
//! without it the crate has no `metrics` dependency).
//!
//! Which store records what:
//!
//! | metric | `store="postgres"` | `store="memory"` |
//! |---|---|---|
//! | [`STORE_APPENDED_EVENTS_TOTAL`] | yes | yes |
//! | [`STORE_ERRORS_TOTAL`] | every operation | `append` (the other calls cannot fail) |
//! | [`STORE_OPERATION_DURATION_SECONDS`] | every operation | no: timing an in-memory call would cost more than the metrics' budget; time commands with [`COMMAND_DURATION_SECONDS`] |

use std::fmt;

/// Wall time of store calls in seconds: a histogram labelled `store` and `operation` (a
/// [`StoreOperation`]). Failed calls are timed too. Recorded by the PostgreSQL store; the
/// memory store does not time its calls (see the table above).
pub const STORE_OPERATION_DURATION_SECONDS: &str = "crossfold_store_operation_duration_seconds";

/// Failed store calls: a counter labelled `store` (`memory`, `postgres`), `operation` and
/// `kind` (one of [`StoreError::KINDS`](crate::StoreError::KINDS)).
pub const STORE_ERRORS_TOTAL: &str = "crossfold_store_errors_total";

/// Events written by successful appends: a counter labelled `store` (`memory`, `postgres`).
pub const STORE_APPENDED_EVENTS_TOTAL: &str = "crossfold_store_appended_events_total";

/// Commands executed: a counter labelled `command` and `outcome` (`success`, `rejected`,
/// `conflict`, `unauthorized`, `timeout`, `overloaded`, `error`).
pub const COMMANDS_TOTAL: &str = "crossfold_commands_total";

/// Wall time of whole executions (all attempts) in seconds: a histogram labelled `command`.
pub const COMMAND_DURATION_SECONDS: &str = "crossfold_command_duration_seconds";

/// Attempts per execution: a histogram labelled `command`.
pub const COMMAND_ATTEMPTS: &str = "crossfold_command_attempts";

/// Version conflicts met while executing: a counter labelled `command`.
pub const COMMAND_CONFLICTS_TOTAL: &str = "crossfold_command_conflicts_total";

/// Attempts repeated after a conflict or a transient store error: a counter labelled `command`.
pub const COMMAND_RETRIES_TOTAL: &str = "crossfold_command_retries_total";

/// Executions waiting for admission (the executor runs at most its concurrency limit at once
/// and queues the others in arrival order): a gauge, the sum over the process's executors.
pub const ADMISSION_QUEUE_DEPTH: &str = "crossfold_executor_admission_queue_depth";

/// How long executions that had to queue for admission waited, in seconds, whether they were
/// then admitted or refused (executions admitted at once are not recorded): a histogram.
pub const ADMISSION_WAIT_SECONDS: &str = "crossfold_executor_admission_wait_seconds";

/// Executions refused at admission, which wrote nothing: a counter labelled `command` and
/// `reason` (`queue_full`: the queue was full when it arrived; `timeout`: not admitted within
/// the admission timeout or its own time limit).
pub const ADMISSION_REFUSALS_TOTAL: &str = "crossfold_executor_admission_refusals_total";

/// Turns taken on streams other writers contend for (see `RetryPolicy` in the executor): a
/// counter labelled `command` and `waited` (`true`: another writer held a turn on one of the
/// streams first; `false`: nobody did).
pub const TURNS_TOTAL: &str = "crossfold_executor_turns_total";

/// How long taking a turn on contended streams took, in seconds, waiting for other writers'
/// turns included: a histogram labelled `command`.
pub const TURN_WAIT_SECONDS: &str = "crossfold_executor_turn_wait_seconds";

/// Executor cache lookups that found what they needed: a counter labelled `cache` (`state`,
/// `events`).
pub const CACHE_HITS_TOTAL: &str = "crossfold_executor_cache_hits_total";

/// Executor cache lookups that had to go to the store: a counter labelled `cache`.
pub const CACHE_MISSES_TOTAL: &str = "crossfold_executor_cache_misses_total";

/// Snapshots of command state the executor used, took or passed over: a counter labelled
/// `state` (the state's snapshot name) and `outcome` — `loaded` (a command started from one),
/// `saved`, `stale` (taken under another state version: ignored and folded again), `invalid`
/// (did not decode, or claims versions its streams never reached), `failed` (the snapshot
/// store failed; the command went on without it).
pub const SNAPSHOTS_TOTAL: &str = "crossfold_executor_snapshots_total";

/// Deadlines scheduled and not yet fired, refused or cancelled: a gauge, set by deadline
/// workers after each poll.
pub const DEADLINES_PENDING: &str = "crossfold_deadlines_pending";

/// Pending deadlines already due: a gauge, set by deadline workers after each poll. One that
/// stays above zero means no worker fires them.
pub const DEADLINES_OVERDUE: &str = "crossfold_deadlines_overdue";

/// Deadlines a worker finished: a counter labelled `outcome` (`fired`, `refused`,
/// `superseded` — another worker's later claim finished it, or it was cancelled meanwhile —
/// and `error`, left for a later claim).
pub const DEADLINES_FIRED_TOTAL: &str = "crossfold_deadlines_fired_total";
/// Matching events past a projection's checkpoint (counted up to the runner's limit): a gauge
/// labelled `projection`.
pub const PROJECTION_LAG_EVENTS: &str = "crossfold_projection_lag_events";

/// Seconds since a projection was last caught up (zero while live): a gauge labelled
/// `projection`.
pub const PROJECTION_LAG_SECONDS: &str = "crossfold_projection_lag_seconds";

/// Events a projection applied (committed with its checkpoint): a counter labelled
/// `projection`.
pub const PROJECTION_EVENTS_APPLIED_TOTAL: &str = "crossfold_projection_events_applied_total";

/// Failures met by a projection: a counter labelled `projection` and `kind` (`transient`:
/// retried; `handler`: the projection failed; `dead_letter`: the event was set aside; `fenced`:
/// it lost its lease).
pub const PROJECTION_ERRORS_TOTAL: &str = "crossfold_projection_errors_total";

/// A projection's state: a gauge labelled `projection` and `state` (one of
/// [`ProjectionState::ALL`](crate::checkpoint::ProjectionState::ALL)'s names), 1 for its current state and 0
/// for the others.
pub const PROJECTION_STATE: &str = "crossfold_projection_state";

/// A timed store call, as the `operation` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOperation {
    /// [`EventStore::append`](crate::EventStore::append).
    Append,
    /// [`EventStore::read_streams`](crate::EventStore::read_streams), and the single-stream
    /// reads built on it.
    ReadStreams,
    /// [`EventStore::read_all`](crate::EventStore::read_all).
    ReadAll,
    /// [`EventStore::head_position`](crate::EventStore::head_position).
    HeadPosition,
    /// [`EventStore::wait_for_events`](crate::EventStore::wait_for_events); its duration
    /// includes the time spent waiting.
    Wait,
}

impl StoreOperation {
    /// Every operation, in the order of [`index`](Self::index).
    pub const ALL: [StoreOperation; 5] = [
        StoreOperation::Append,
        StoreOperation::ReadStreams,
        StoreOperation::ReadAll,
        StoreOperation::HeadPosition,
        StoreOperation::Wait,
    ];

    /// The `operation` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Append => "append",
            StoreOperation::ReadStreams => "read_streams",
            StoreOperation::ReadAll => "read_all",
            StoreOperation::HeadPosition => "head_position",
            StoreOperation::Wait => "wait",
        }
    }

    /// The operation's place in [`ALL`](Self::ALL), for stores that keep one metric handle per
    /// operation in an array.
    pub const fn index(self) -> usize {
        match self {
            StoreOperation::Append => 0,
            StoreOperation::ReadStreams => 1,
            StoreOperation::ReadAll => 2,
            StoreOperation::HeadPosition => 3,
            StoreOperation::Wait => 4,
        }
    }
}

impl fmt::Display for StoreOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a metric is, for describing it to a recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// Only goes up (`..._total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// What an exporter needs to describe one metric: name, kind, unit and help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MetricDescription {
    /// The metric's name.
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// Its unit as the `metrics` crate spells it (`"seconds"`, `"count"`), if it has one.
    pub unit: Option<&'static str>,
    /// One sentence saying what it measures.
    pub help: &'static str,
}

impl MetricDescription {
    /// A description.
    pub const fn new(
        name: &'static str,
        kind: MetricKind,
        unit: Option<&'static str>,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind,
            unit,
            help,
        }
    }
}

#[cfg(feature = "metrics")]
impl MetricDescription {
    /// Registers this metric's help text and unit with the recorder in scope.
    pub fn describe(&self) {
        use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        let unit = self.unit.and_then(Unit::from_string);
        let (name, help) = (self.name, self.help);
        match (self.kind, unit) {
            (MetricKind::Counter, Some(unit)) => describe_counter!(name, unit, help),
            (MetricKind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (MetricKind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
            (MetricKind::Counter, None) => describe_counter!(name, help),
            (MetricKind::Gauge, None) => describe_gauge!(name, help),
            (MetricKind::Histogram, None) => describe_histogram!(name, help),
        }
    }
}

/// The metrics the stores record (each store records those the table in the module
/// documentation says).
pub const STORE_METRICS: [MetricDescription; 3] = [
    MetricDescription::new(
        STORE_OPERATION_DURATION_SECONDS,
        MetricKind::Histogram,
        Some("seconds"),
        "Wall time of event store calls, by store and operation, failed calls included.",
    ),
    MetricDescription::new(
        STORE_ERRORS_TOTAL,
        MetricKind::Counter,
        Some("count"),
        "Failed event store calls, by store, operation and error kind.",
    ),
    MetricDescription::new(
        STORE_APPENDED_EVENTS_TOTAL,
        MetricKind::Counter,
        Some("count"),
        "Events written by successful appends, by store.",
    ),
];

/// The metrics the command executor records.
pub const COMMAND_METRICS: [MetricDescription; 13] = [
    MetricDescription::new(
        COMMANDS_TOTAL,
        MetricKind::Counter,
        None,
        "Commands executed, by command and outcome.",
    ),
    MetricDescription::new(
        COMMAND_DURATION_SECONDS,
        MetricKind::Histogram,
        Some("seconds"),
        "Wall time of command executions, including retries.",
    ),
    MetricDescription::new(
        COMMAND_ATTEMPTS,
        MetricKind::Histogram,
        None,
        "Attempts needed per command execution.",
    ),
    MetricDescription::new(
        COMMAND_CONFLICTS_TOTAL,
        MetricKind::Counter,
        None,
        "Version conflicts met while executing commands.",
    ),
    MetricDescription::new(
        COMMAND_RETRIES_TOTAL,
        MetricKind::Counter,
        None,
        "Command attempts repeated after a conflict or a transient store error.",
    ),
    MetricDescription::new(
        ADMISSION_QUEUE_DEPTH,
        MetricKind::Gauge,
        None,
        "Command executions waiting for admission.",
    ),
    MetricDescription::new(
        ADMISSION_WAIT_SECONDS,
        MetricKind::Histogram,
        Some("seconds"),
        "Time command executions waited for admission, admitted or refused.",
    ),
    MetricDescription::new(
        ADMISSION_REFUSALS_TOTAL,
        MetricKind::Counter,
        None,
        "Command executions refused at admission, by command and reason (queue_full, timeout).",
    ),
    MetricDescription::new(
        TURNS_TOTAL,
        MetricKind::Counter,
        None,
        "Turns taken on contended streams, by command and whether they waited for another writer's.",
    ),
    MetricDescription::new(
        TURN_WAIT_SECONDS,
        MetricKind::Histogram,
        Some("seconds"),
        "Time taken to get a turn on contended streams, waiting included.",
    ),
    MetricDescription::new(
        CACHE_HITS_TOTAL,
        MetricKind::Counter,
        None,
        "Executor cache lookups served from memory.",
    ),
    MetricDescription::new(
        CACHE_MISSES_TOTAL,
        MetricKind::Counter,
        None,
        "Executor cache lookups that went to the store.",
    ),
    MetricDescription::new(
        SNAPSHOTS_TOTAL,
        MetricKind::Counter,
        None,
        "Snapshots of command state loaded, saved or passed over, by state and outcome.",
    ),
];

/// The metrics deadline workers record.
pub const DEADLINE_METRICS: [MetricDescription; 3] = [
    MetricDescription::new(
        DEADLINES_PENDING,
        MetricKind::Gauge,
        None,
        "Deadlines scheduled and not yet fired, refused or cancelled.",
    ),
    MetricDescription::new(
        DEADLINES_OVERDUE,
        MetricKind::Gauge,
        None,
        "Pending deadlines that are already due.",
    ),
    MetricDescription::new(
        DEADLINES_FIRED_TOTAL,
        MetricKind::Counter,
        None,
        "Deadlines a worker finished, by outcome.",
    ),
];

/// The metrics the projection runner records.
pub const PROJECTION_METRICS: [MetricDescription; 5] = [
    MetricDescription::new(
        PROJECTION_LAG_EVENTS,
        MetricKind::Gauge,
        None,
        "Matching events past a projection's checkpoint, counted up to the runner's limit.",
    ),
    MetricDescription::new(
        PROJECTION_LAG_SECONDS,
        MetricKind::Gauge,
        Some("seconds"),
        "Seconds since a projection was last caught up; zero while live.",
    ),
    MetricDescription::new(
        PROJECTION_EVENTS_APPLIED_TOTAL,
        MetricKind::Counter,
        None,
        "Events a projection applied and committed with its checkpoint.",
    ),
    MetricDescription::new(
        PROJECTION_ERRORS_TOTAL,
        MetricKind::Counter,
        None,
        "Failures met by a projection, by kind (transient, handler, dead_letter, fenced).",
    ),
    MetricDescription::new(
        PROJECTION_STATE,
        MetricKind::Gauge,
        None,
        "A projection's state: 1 for the state label it is in, 0 for the others.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_indexed_in_order() {
        for (i, op) in StoreOperation::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        assert_eq!(StoreOperation::HeadPosition.to_string(), "head_position");
    }

    /// Prometheus conventions: snake_case, a `crossfold_` prefix, counters end in `_total`,
    /// metrics with a unit end in it.
    #[test]
    fn names_follow_prometheus_conventions() {
        for m in STORE_METRICS
            .iter()
            .chain(&COMMAND_METRICS)
            .chain(&DEADLINE_METRICS)
            .chain(&PROJECTION_METRICS)
        {
            assert!(m.name.starts_with("crossfold_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            if m.kind == MetricKind::Counter {
                assert!(m.name.ends_with("_total"), "{}", m.name);
            }
            if m.unit == Some("seconds") {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
        }
    }

    /// An exporter describes both tables to one recorder: a name in both would be described
    /// twice, with different help texts.
    #[test]
    fn every_metric_is_named_once() {
        let mut names: Vec<&str> = STORE_METRICS
            .iter()
            .chain(&COMMAND_METRICS)
            .chain(&DEADLINE_METRICS)
            .chain(&PROJECTION_METRICS)
            .map(|m| m.name)
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "{names:?}");
    }
}
