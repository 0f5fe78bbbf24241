//! The store metrics the memory store records, under `store="memory"`: the two counters of
//! [`crossfold_core::metrics::STORE_METRICS`] (appended events, and failed appends by kind). Recording is
//! a no-op until the application installs a `metrics` recorder.
//!
//! Calls are not timed (`crossfold_store_operation_duration_seconds` has no `memory` series).
//! Timing a call reads the clock twice, which an application pays whether or not it installed
//! a recorder; for an in-memory command that is about 3% of its cost before anything is
//! recorded, and with a Prometheus recorder the metrics of a command would cost more than
//! their budget of 5% (docs/benchmarks.md has the figures). The executor's
//! `crossfold_command_duration_seconds` times whole commands. The other calls are not counted
//! because they cannot fail.

use std::sync::OnceLock;

use crossfold_core::StoreError;
use crossfold_core::metrics::{STORE_APPENDED_EVENTS_TOTAL, STORE_ERRORS_TOTAL, StoreOperation};
use metrics::{Counter, counter};

/// The `store` label.
const STORE: &str = "memory";

const KINDS: usize = StoreError::KINDS.len();

/// One store's metric handles, resolved on the store's first append (so against the recorder
/// installed then): a lookup by name and labels costs more than an in-memory append.
pub(crate) struct StoreMetrics {
    appended: Counter,
    /// Failed appends by kind, resolved on first use so that only errors that happen show up
    /// as series.
    errors: [OnceLock<Counter>; KINDS],
}

impl StoreMetrics {
    pub(crate) fn new() -> Self {
        Self {
            appended: counter!(STORE_APPENDED_EVENTS_TOTAL, "store" => STORE),
            errors: Default::default(),
        }
    }

    /// Counts the events an append wrote, or its failure.
    pub(crate) fn append(&self, result: &Result<crossfold_core::Appended, StoreError>) {
        match result {
            Ok(appended) => self.appended.increment(appended.len() as u64),
            Err(e) => self.errors[e.kind_index()]
                .get_or_init(|| {
                    counter!(
                        STORE_ERRORS_TOTAL,
                        "store" => STORE,
                        "operation" => StoreOperation::Append.as_str(),
                        "kind" => e.kind()
                    )
                })
                .increment(1),
        }
    }
}
