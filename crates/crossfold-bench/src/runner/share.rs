//! A run spread over several processes: one sets the data up ([`set_up`]), each runs its share
//! of the operations against the same store for the same window ([`run_share`]) and hands its
//! counts back as JSON ([`ShareReport`]), and one merges the shares and verifies everything
//! they wrote ([`combine`](super::combine)).
//!
//! Latencies travel as the histogram's recorded values with their counts, so the merged
//! percentiles are those of every operation of every share — percentiles are never averaged.

use std::future::Future;
use std::time::Duration;

use crossfold_core::{EventStore, Position};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::measure::new_histogram;
use super::task::Stats;
use super::{drive, executor, set_up_with};
use crate::report::Admission;
use crate::{LoadError, LoadOptions};

/// What setting a run up wrote, for the verification at its end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetUp {
    /// Money put in the accounts.
    pub money: i64,
    /// Events written.
    pub events: u64,
    /// Seconds it took.
    pub secs: f64,
}

/// Which share of a run's operations a process drives: its tasks' ids (and so their random
/// seeds and the names of the streams they create) follow those of the shares before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Share {
    /// 0 for the first share.
    pub index: usize,
}

/// What one share measured, as it travels between processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShareReport {
    /// Operations in flight in this share.
    pub concurrency: usize,
    /// Command latencies in microseconds: each recorded value with its count.
    latency: Vec<(u64, u64)>,
    /// `w7-live`: creation-to-delivery latencies, the same way.
    delivery: Option<Vec<(u64, u64)>>,
    ops: u64,
    events: u64,
    conflicts: u64,
    retries: u64,
    transient_retries: u64,
    failed: u64,
    overloaded: u64,
    /// Its executor's admission control while measuring.
    pub admission: Option<Admission>,
    rejected: u64,
    errors: u64,
    first_error: Option<String>,
    per_second: Vec<u64>,
    deposited: i64,
    written: u64,
    /// The furthest position its writes reported.
    position: Position,
    measured_secs: f64,
    /// Why this share stopped before its time, if it did.
    pub stopped_early: Option<String>,
}

/// A histogram's recorded values, each with its count.
fn values(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// A histogram of the run's bounds holding `values`.
fn histogram_of(values: &[(u64, u64)]) -> Result<Histogram<u64>, LoadError> {
    let mut histogram = new_histogram()?;
    for &(value, count) in values {
        histogram
            .record_n(value, count)
            .map_err(|e| LoadError::Setup(format!("histogram: {e}").into()))?;
    }
    Ok(histogram)
}

impl ShareReport {
    pub(super) fn new(
        concurrency: usize,
        stats: Stats,
        delivery: Option<&Histogram<u64>>,
        admission: Option<Admission>,
        measured: Duration,
        stopped_early: Option<String>,
    ) -> Self {
        Self {
            concurrency,
            latency: values(&stats.latency),
            delivery: delivery.map(values),
            ops: stats.ops,
            events: stats.events,
            conflicts: stats.conflicts,
            retries: stats.retries,
            transient_retries: stats.transient_retries,
            failed: stats.failed,
            overloaded: stats.overloaded,
            admission,
            rejected: stats.rejected,
            errors: stats.errors,
            first_error: stats.first_error,
            per_second: stats.per_second,
            deposited: stats.deposited,
            written: stats.written,
            position: stats.position,
            measured_secs: measured.as_secs_f64(),
            stopped_early,
        }
    }

    /// The time this share measured.
    pub(super) fn measured(&self) -> Duration {
        Duration::try_from_secs_f64(self.measured_secs).unwrap_or_default()
    }

    /// Its creation-to-delivery latencies (`w7-live`).
    pub(super) fn delivery_histogram(&self) -> Result<Option<Histogram<u64>>, LoadError> {
        self.delivery.as_deref().map(histogram_of).transpose()
    }

    /// Its counts, as a task's, to merge (`like` gives the histogram's bounds).
    pub(super) fn into_stats(self, like: &Histogram<u64>) -> Result<Stats, LoadError> {
        let mut stats = Stats::new(like, self.per_second.len().saturating_sub(1));
        stats.latency = histogram_of(&self.latency)?;
        stats.ops = self.ops;
        stats.events = self.events;
        stats.conflicts = self.conflicts;
        stats.retries = self.retries;
        stats.transient_retries = self.transient_retries;
        stats.failed = self.failed;
        stats.overloaded = self.overloaded;
        stats.rejected = self.rejected;
        stats.errors = self.errors;
        stats.first_error = self.first_error;
        stats.per_second = self.per_second;
        stats.deposited = self.deposited;
        stats.written = self.written;
        stats.position = self.position;
        Ok(stats)
    }
}

/// Prepares the data `options.workload` needs in `store` (which should be empty), for shares
/// that run elsewhere.
pub async fn set_up<S: EventStore + Clone + 'static>(
    store: S,
    options: &LoadOptions,
) -> Result<SetUp, LoadError> {
    set_up_with(&executor(&store, options), &store, options).await
}

/// Runs one share of a run against `store`, set up by [`set_up`] (in this process or
/// another), with an executor of its own: `options.concurrency` operations in flight for
/// `options.warmup` and then `options.duration`, starting when `start` completes. Verifies
/// nothing: [`combine`](super::combine) does, once every share is in.
pub async fn run_share<S, F>(
    store: S,
    options: &LoadOptions,
    share: Share,
    start: F,
) -> Result<ShareReport, LoadError>
where
    S: EventStore + Clone + 'static,
    F: Future<Output = Result<(), String>>,
{
    drive(&executor(&store, options), &store, options, share, start).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_travels_whole() {
        let mut histogram = new_histogram().unwrap_or_else(|e| panic!("{e}"));
        for v in [1u64, 7, 7, 250, 1_000, 1_001, 98_765, 3_000_000] {
            histogram.record(v).unwrap_or_else(|e| panic!("{e}"));
        }
        let back = histogram_of(&values(&histogram)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.len(), histogram.len());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(back.value_at_quantile(q), histogram.value_at_quantile(q));
        }
        assert_eq!(back.max(), histogram.max());
    }
}
