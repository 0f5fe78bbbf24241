//! When a run measures, and the histograms it measures with.

use std::time::Instant;

use crossfold_core::ErrorChain;
use hdrhistogram::Histogram;

use crate::{LoadError, LoadOptions};

/// An empty latency histogram: microseconds, up to an hour, 3 significant digits.
pub(super) fn new_histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| LoadError::Setup(format!("histogram: {}", ErrorChain(&e)).into()))
}

/// When measuring starts and ends.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    pub(super) measure_from: Instant,
    pub(super) end: Instant,
}

impl Clock {
    pub(super) fn new(options: &LoadOptions) -> Self {
        let now = Instant::now();
        let measure_from = now + options.warmup;
        Self {
            measure_from,
            end: measure_from + options.duration,
        }
    }

    /// The measured second `at` falls in, or `None` during the warm-up.
    pub(super) fn second(&self, at: Instant) -> Option<usize> {
        at.checked_duration_since(self.measure_from)
            .map(|d| d.as_secs() as usize)
    }
}
