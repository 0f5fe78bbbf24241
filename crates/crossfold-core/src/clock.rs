//! Time as a dependency: whatever decides "is it due yet" asks a [`Clock`], so that tests can
//! drive time with a [`ManualClock`] instead of sleeping through real minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::event::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<T: Clock + ?Sized> Clock for Box<T> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The machine's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use crossfold_core::{Clock, ManualClock, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::from_unix_micros(0));
/// let seen_by_a_worker = clock.clone();
/// clock.advance(Duration::from_secs(15 * 60));
/// assert_eq!(seen_by_a_worker.now().unix_micros(), 900_000_000);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            micros: Arc::new(AtomicI64::new(start.unix_micros())),
        }
    }

    /// A clock showing the current wall time, from then on moved only by hand.
    pub fn starting_now() -> Self {
        Self::new(Timestamp::now())
    }

    /// The time it shows (also [`Clock::now`], without importing the trait).
    pub fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.micros.load(Ordering::SeqCst))
    }

    /// Moves the clock forward by `by` (saturating at the end of time).
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                Some(m.saturating_add(by))
            });
    }

    /// Sets the clock to `to` (also backwards: a clock that jumps is something to test).
    pub fn set(&self, to: Timestamp) {
        self.micros.store(to.unix_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        ManualClock::now(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_unix_micros(10));
        assert_eq!(clock.now().unix_micros(), 10);
        clock.advance(Duration::from_micros(5));
        assert_eq!(clock.clone().now().unix_micros(), 15);
        clock.set(Timestamp::from_unix_micros(3));
        assert_eq!(clock.now().unix_micros(), 3);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now().unix_micros(), i64::MAX);
    }

    #[test]
    fn the_system_clock_is_near_the_wall_clock() {
        let before = Timestamp::now().unix_micros();
        let now = SystemClock.now().unix_micros();
        assert!(now >= before);
        assert_eq!(
            Timestamp::from_unix_micros(1)
                .saturating_add(Duration::from_secs(1))
                .unix_micros(),
            1_000_001
        );
    }
}
