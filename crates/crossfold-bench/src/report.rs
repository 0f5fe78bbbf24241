//! Results: a report per run, as JSON for scripts and as a table for people.

use std::time::Duration;

use comfy_table::{CellAlignment, Table, presets};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::LoadOptions;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// What the post-run check found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verification {
    /// Whether everything held. A run that fails verification has no valid result.
    pub passed: bool,
    /// Events in the log.
    pub events: u64,
    /// Streams in the log.
    pub streams: u64,
    /// Sum of account balances.
    pub total_money: i64,
    /// What did not hold (the first few).
    pub problems: Vec<String>,
}

/// The executor's admission control over the measured time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    /// Commands it runs at once.
    pub limit: usize,
    /// Commands admitted after waiting in its queue.
    pub admitted_after_waiting: u64,
    /// Their mean wait, in milliseconds.
    pub mean_wait_ms: f64,
    /// Commands it refused.
    pub refused: u64,
}

impl Admission {
    /// The admission controls of several processes (each with its own executor) as one: the
    /// commands added up, the waits averaged over every command that waited.
    pub(crate) fn merge(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let admitted = a.admitted_after_waiting + b.admitted_after_waiting;
                let waited = a.mean_wait_ms * a.admitted_after_waiting as f64
                    + b.mean_wait_ms * b.admitted_after_waiting as f64;
                Some(Self {
                    limit: a.limit.max(b.limit),
                    admitted_after_waiting: admitted,
                    mean_wait_ms: if admitted == 0 {
                        0.0
                    } else {
                        waited / admitted as f64
                    },
                    refused: a.refused + b.refused,
                })
            }
            (a, b) => a.or(b),
        }
    }

    /// What happened between two snapshots of the same executor's admission control.
    pub(crate) fn between(
        start: &crossfold_executor::AdmissionStatus,
        end: &crossfold_executor::AdmissionStatus,
    ) -> Self {
        let admitted = end
            .admitted_after_waiting
            .saturating_sub(start.admitted_after_waiting);
        let waited = end.waited.saturating_sub(start.waited);
        Self {
            limit: end.limit,
            admitted_after_waiting: admitted,
            mean_wait_ms: if admitted == 0 {
                0.0
            } else {
                waited.as_secs_f64() * 1000.0 / admitted as f64
            },
            refused: end.refused.saturating_sub(start.refused),
        }
    }
}

/// The result of one workload run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadReport {
    /// Workload id (`w1`, ...).
    pub workload: String,
    /// Workload description.
    pub name: String,
    /// Which store.
    pub store: String,
    /// Operations in flight (in each process).
    pub concurrency: usize,
    /// Processes that ran the workload at once, against the same store.
    pub processes: usize,
    /// Measured seconds (after warm-up); fewer than asked if the run stopped early.
    pub duration_secs: f64,
    /// Why the run stopped before its time, if it did (the machine ran low on memory).
    pub stopped_early: Option<String>,
    /// Warm-up seconds.
    pub warmup_secs: f64,
    /// Seconds spent preparing data.
    pub setup_secs: f64,
    /// Operations completed while measuring (successes, refusals and failures).
    pub operations: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Successful operations per second (operations minus refusals, failures, admission
    /// refusals and errors).
    pub successes_per_sec: f64,
    /// Events written or read per second.
    pub events_per_sec: f64,
    /// Latency of operations (for `w7-live`: creation-to-delivery of events).
    pub latency_ms: Latency,
    /// Latency of the commands themselves (differs from `latency_ms` only for `w7-live`).
    pub command_latency_ms: Latency,
    /// Events delivered to the live subscriber (`w7-live` only).
    pub delivered: Option<u64>,
    /// Version conflicts met (each costs a retry).
    pub conflicts: u64,
    /// Attempts repeated after conflicts or transient errors.
    pub retries: u64,
    /// Of those, the ones that did not follow a conflict: after a transient store error (a
    /// pooled connection not had in time, a lost connection) or a decision found stale.
    pub transient_retries: u64,
    /// Commands that failed after exhausting their retries.
    pub failed: u64,
    /// Commands refused at admission (`Error::Overloaded`): the executor's queue was full or
    /// they waited too long. They wrote nothing.
    pub overloaded: u64,
    /// The executor's admission control while measuring (`None` without one).
    pub admission: Option<Admission>,
    /// Commands refused by a business rule (insufficient funds).
    pub rejected: u64,
    /// Other errors.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Operations per second over the first five measured seconds.
    pub first_5s_rate: f64,
    /// Operations per second over the last five measured seconds.
    pub last_5s_rate: f64,
    /// Operations completed in each measured second.
    pub per_second: Vec<u64>,
    /// The data check.
    pub verification: Verification,
}

pub(crate) struct Measured<'a> {
    pub(crate) latency: &'a Histogram<u64>,
    pub(crate) command_latency: &'a Histogram<u64>,
    pub(crate) ops: u64,
    pub(crate) events: u64,
    pub(crate) conflicts: u64,
    pub(crate) retries: u64,
    pub(crate) transient_retries: u64,
    pub(crate) failed: u64,
    pub(crate) overloaded: u64,
    pub(crate) admission: Option<Admission>,
    pub(crate) rejected: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) per_second: &'a [u64],
    pub(crate) delivered: Option<u64>,
    /// The time actually measured (shorter than asked when the run stopped early).
    pub(crate) measured: Duration,
    pub(crate) stopped_early: Option<String>,
}

impl LoadReport {
    pub(crate) fn new(
        options: &LoadOptions,
        concurrency: usize,
        setup: Duration,
        m: Measured<'_>,
        verification: Verification,
    ) -> Self {
        let secs = m.measured.as_secs_f64().max(1e-9);
        // Only whole measured seconds count for the first/last windows.
        let whole = &m.per_second[..m.per_second.len().saturating_sub(1)];
        let window = whole.len().min(5);
        let rate = |s: &[u64]| {
            if s.is_empty() {
                0.0
            } else {
                s.iter().sum::<u64>() as f64 / s.len() as f64
            }
        };
        let successes = m
            .ops
            .saturating_sub(m.rejected + m.failed + m.overloaded + m.errors);
        Self {
            workload: options.workload.id().into(),
            name: options.workload.name().into(),
            store: options.store_name.clone(),
            concurrency,
            processes: options.processes.max(1),
            duration_secs: m.measured.as_secs_f64(),
            stopped_early: m.stopped_early,
            warmup_secs: options.warmup.as_secs_f64(),
            setup_secs: setup.as_secs_f64(),
            operations: m.ops,
            ops_per_sec: m.ops as f64 / secs,
            successes_per_sec: successes as f64 / secs,
            events_per_sec: m.events as f64 / secs,
            latency_ms: Latency::of(m.latency),
            command_latency_ms: Latency::of(m.command_latency),
            delivered: m.delivered,
            conflicts: m.conflicts,
            retries: m.retries,
            transient_retries: m.transient_retries,
            failed: m.failed,
            overloaded: m.overloaded,
            admission: m.admission,
            rejected: m.rejected,
            errors: m.errors,
            first_error: m.first_error,
            first_5s_rate: rate(&whole[..window]),
            last_5s_rate: rate(&whole[whole.len() - window..]),
            per_second: whole.to_vec(),
            verification,
        }
    }

    /// Whether the run counts: its data verified and nothing errored.
    pub fn is_valid(&self) -> bool {
        self.verification.passed && self.errors == 0
    }
}

/// The operations in flight: `16`, or `4x16` for four processes with 16 each.
fn in_flight(r: &LoadReport) -> String {
    if r.processes > 1 {
        format!("{}x{}", r.processes, r.concurrency)
    } else {
        r.concurrency.to_string()
    }
}

/// Renders reports as a table for people: a line per report, no borders, numbers aligned
/// right, and a last column saying whether the run verified (or what went wrong).
pub fn render_table(reports: &[LoadReport]) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header(vec![
        "workload",
        "store",
        "C",
        "ops/s",
        "events/s",
        "p50ms",
        "p95ms",
        "p99ms",
        "p99.9ms",
        "maxms",
        "confl",
        "retry",
        "t.retry",
        "fail",
        "shed",
        "queue ms",
        "first5s/s",
        "last5s/s",
        "check",
    ]);
    for r in reports {
        let check = if r.is_valid() {
            match &r.stopped_early {
                Some(why) => format!("ok ({why})"),
                None => "ok".to_string(),
            }
        } else if !r.verification.passed {
            format!("FAILED: {}", r.verification.problems.join("; "))
        } else {
            format!(
                "ERRORS: {} ({})",
                r.errors,
                r.first_error.as_deref().unwrap_or("")
            )
        };
        table.add_row(vec![
            r.workload.clone(),
            r.store.clone(),
            in_flight(r),
            format!("{:.0}", r.ops_per_sec),
            format!("{:.0}", r.events_per_sec),
            format!("{:.2}", r.latency_ms.p50),
            format!("{:.2}", r.latency_ms.p95),
            format!("{:.2}", r.latency_ms.p99),
            format!("{:.2}", r.latency_ms.p999),
            format!("{:.1}", r.latency_ms.max),
            r.conflicts.to_string(),
            r.retries.to_string(),
            r.transient_retries.to_string(),
            r.failed.to_string(),
            r.overloaded.to_string(),
            r.admission
                .as_ref()
                .map_or_else(|| "-".to_owned(), |a| format!("{:.1}", a.mean_wait_ms)),
            format!("{:.0}", r.first_5s_rate),
            format!("{:.0}", r.last_5s_rate),
            check,
        ]);
    }
    let numbers = 2..18;
    let last = 18;
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == last { 2 } else { 1 }));
        if numbers.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}
