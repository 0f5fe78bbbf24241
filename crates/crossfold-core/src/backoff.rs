//! How long to wait before trying again: one policy type for every retry and poll loop.
//!
//! The executor's retries, the projection runner's, the PostgreSQL listener's reconnects and
//! the store's polls all wait by a [`Backoff`]: the wait doubles from `first` up to `max`, and
//! [`Jitter`] spreads waiters that failed together so they do not collide again.

use std::time::Duration;

/// How much of each wait is random.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Every wait is its ceiling: for polling, where nobody competes.
    #[default]
    None,
    /// A wait is anywhere in `[0, ceiling]` ("full jitter"): the best spread for many callers
    /// retrying against the same contended resource.
    Full,
    /// A wait is in `[ceiling / 2, ceiling]`: spread, but never much shorter than planned (a
    /// worker backing off from an outage should not hammer it).
    Equal,
}

/// Exponential backoff, capped, with optional jitter.
///
/// The `n`th wait (1-based) has the ceiling `first × 2^(n-1)`, at most `max`.
///
/// ```
/// use std::time::Duration;
/// use crossfold_core::{Backoff, Jitter};
///
/// let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
/// assert_eq!(backoff.ceiling(1), Duration::from_millis(10));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(40));
/// assert_eq!(backoff.ceiling(9), Duration::from_millis(50));
///
/// let mut waits = backoff.jitter(Jitter::Full).delays();
/// assert!(waits.next_delay() <= Duration::from_millis(10));
/// assert!(waits.next_delay() <= Duration::from_millis(20));
/// waits.reset(); // after a success: start over from `first`
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// Waits that start at `first` and double up to `max` (raised to `first` if smaller),
    /// without jitter.
    pub const fn new(first: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < first.as_nanos() {
            first
        } else {
            max
        };
        Self {
            first,
            max,
            jitter: Jitter::None,
        }
    }

    /// The same waits with `jitter`.
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first wait's ceiling.
    pub const fn first(&self) -> Duration {
        self.first
    }

    /// The longest wait.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The jitter applied.
    pub const fn jitter_kind(&self) -> Jitter {
        self.jitter
    }

    /// The ceiling of the `attempt`th wait (1-based; 0 counts as 1): `first × 2^(attempt-1)`,
    /// at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(30);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// The `attempt`th wait (1-based), with jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => Duration::from_nanos(fastrand::u64(0..=nanos)),
            Jitter::Equal => Duration::from_nanos(nanos / 2 + fastrand::u64(0..=nanos - nanos / 2)),
        }
    }

    /// The successive waits of one retry loop.
    pub fn delays(&self) -> Delays {
        Delays {
            backoff: *self,
            attempt: 0,
        }
    }
}

/// The waits of one retry loop: each [`next_delay`](Self::next_delay) is longer (up to the
/// cap) until [`reset`](Self::reset).
#[derive(Clone, Debug)]
pub struct Delays {
    backoff: Backoff,
    attempt: u32,
}

impl Delays {
    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.backoff.delay(self.attempt)
    }

    /// Starts over from the first wait (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many waits were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_up_to_the_cap() {
        let b = Backoff::new(2 * MS, 50 * MS);
        assert_eq!(b.ceiling(0), 2 * MS);
        assert_eq!(b.ceiling(1), 2 * MS);
        assert_eq!(b.ceiling(2), 4 * MS);
        assert_eq!(b.ceiling(4), 16 * MS);
        assert_eq!(b.ceiling(10), 50 * MS);
        assert_eq!(b.ceiling(u32::MAX), 50 * MS);
        let waits: Vec<Duration> = b.delays().take(6).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 50].map(|n| n * MS));
    }

    #[test]
    fn a_cap_below_the_first_wait_is_raised_to_it() {
        let b = Backoff::new(100 * MS, 10 * MS);
        assert_eq!(b.max(), 100 * MS);
        assert_eq!(b.delay(5), 100 * MS);
    }

    #[test]
    fn jitter_stays_within_its_range() {
        let full = Backoff::new(8 * MS, 64 * MS).jitter(Jitter::Full);
        let equal = full.jitter(Jitter::Equal);
        let mut below_half = false;
        for attempt in 1..200 {
            let ceiling = full.ceiling(attempt);
            let f = full.delay(attempt);
            assert!(f <= ceiling, "{f:?} > {ceiling:?}");
            below_half |= f < ceiling / 2;
            let e = equal.delay(attempt);
            assert!(
                e >= ceiling / 2 && e <= ceiling,
                "{e:?} outside [{ceiling:?}/2, {ceiling:?}]"
            );
        }
        assert!(
            below_half,
            "full jitter never went below half the ceiling in 199 draws"
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut waits = Backoff::new(MS, 8 * MS).delays();
        assert_eq!(waits.next_delay(), MS);
        assert_eq!(waits.next_delay(), 2 * MS);
        assert_eq!(waits.attempts(), 2);
        waits.reset();
        assert_eq!(waits.next_delay(), MS);
    }
}
