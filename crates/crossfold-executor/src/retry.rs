//! How conflicts and transient store failures are retried.

use std::time::Duration;

/// Retry policy for conflicts and transient store errors: exponential backoff with full
/// jitter, capped. Business errors are never retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a command may run in total (at least 1).
    pub max_attempts: u32,
    /// The backoff before the second attempt; it doubles for each further attempt.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
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

    /// Sets the base delay.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// Sets the delay cap.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The ceiling of the backoff after `attempt` failed attempts (1-based): `base * 2^(attempt-1)`,
    /// capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// A random delay in `[0, ceiling(attempt)]` ("full jitter"), so retrying commands spread
    /// out instead of colliding again.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default()
            .base_delay(Duration::from_millis(2))
            .max_delay(Duration::from_millis(50));
        assert_eq!(p.ceiling(1), Duration::from_millis(2));
        assert_eq!(p.ceiling(2), Duration::from_millis(4));
        assert_eq!(p.ceiling(4), Duration::from_millis(16));
        assert_eq!(p.ceiling(10), Duration::from_millis(50));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_millis(50));
        for attempt in 1..20 {
            assert!(p.delay(attempt) <= p.ceiling(attempt));
        }
    }

    #[test]
    fn at_least_one_attempt() {
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
    }
}
