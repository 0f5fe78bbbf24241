//! The metrics every event store records, named here so that exporters, dashboards and alerts
//! can refer to them without depending on a particular store.
//!
//! This crate records nothing: stores record these names with the labels documented on each,
//! and describe them to a recorder from [`STORE_METRICS`] (with the `metrics` feature,
//! `MetricDescription::describe` does it; without it the crate has no `metrics` dependency).

use std::fmt;

/// Wall time of store calls in seconds: a histogram labelled `store` (`memory`, `postgres`)
/// and `operation` (a [`StoreOperation`]). Failed calls are timed too.
pub const STORE_OPERATION_DURATION_SECONDS: &str = "crossfold_store_operation_duration_seconds";

/// Failed store calls: a counter labelled `store`, `operation` and `kind` (one of
/// [`StoreError::KINDS`](crate::StoreError::KINDS)).
pub const STORE_ERRORS_TOTAL: &str = "crossfold_store_errors_total";

/// Events written by successful appends: a counter labelled `store`.
pub const STORE_APPENDED_EVENTS_TOTAL: &str = "crossfold_store_appended_events_total";

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

/// The metrics every store records.
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
        for m in STORE_METRICS {
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
}
