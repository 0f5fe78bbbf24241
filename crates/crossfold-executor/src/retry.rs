//! How conflicts and transient store failures are retried.

use std::time::Duration;

use crossfold_core::{Backoff, Jitter};

/// Retry policy for conflicts and transient store errors: how many attempts, and the
/// [`Backoff`] between them (by default exponential from 1 ms to 100 ms with full jitter).
/// Business errors are never retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a command may run in total (at least 1).
    pub max_attempts: u32,
    /// The waits between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(100))
                .jitter(Jitter::Full),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets the number of attempts.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the waits between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the first wait, keeping the cap and the jitter.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.backoff = Backoff::new(delay, self.backoff.max()).jitter(self.backoff.jitter_kind());
        self
    }

    /// Sets the longest wait, keeping the first wait and the jitter.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.backoff = Backoff::new(self.backoff.first(), delay).jitter(self.backoff.jitter_kind());
        self
    }

    /// The wait after `attempt` failed attempts (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_waits_with_full_jitter_and_setters_keep_the_rest() {
        let p = RetryPolicy::default()
            .base_delay(Duration::from_millis(2))
            .max_delay(Duration::from_millis(50));
        assert_eq!(p.backoff.jitter_kind(), Jitter::Full);
        assert_eq!(p.backoff.ceiling(1), Duration::from_millis(2));
        assert_eq!(p.backoff.ceiling(10), Duration::from_millis(50));
        for attempt in 1..20 {
            assert!(p.delay(attempt) <= p.backoff.ceiling(attempt));
        }
    }

    #[test]
    fn at_least_one_attempt() {
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
    }
}
