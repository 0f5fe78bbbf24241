//! How a runner runs its projections.

use std::time::Duration;

use crossfold_core::{Backoff, Jitter};

/// How a runner runs its projections.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// This process's name in leases (default: a random one). Unique per process.
    pub owner: String,
    /// How long a lease lasts without renewal: when its owner dies, another process takes the
    /// projection over within about `lease_ttl` plus one `control_interval`.
    pub lease_ttl: Duration,
    /// How often the runner renews its leases and reads control requests (at most a third of
    /// the lease's time to live is used).
    pub control_interval: Duration,
    /// How often status is computed, reported to the store and recorded as metrics.
    pub status_interval: Duration,
    /// A projection that does not advance for this long while events exist past its
    /// checkpoint is reported stalled.
    pub stall_after: Duration,
    /// Lag (time since last caught up) beyond which a running projection is degraded.
    pub degraded_lag: Duration,
    /// A projection that has applied everything it can read, while committed events it must
    /// apply wait behind an append open for at least this long, is reported
    /// [`Waiting`](crossfold_core::checkpoint::ProjectionState::Waiting) (with the append's pid
    /// and age). Shorter waits are what every append in flight causes; they count in the lag
    /// only.
    pub waiting_after: Duration,
    /// The waits between retries of a transient failure (default: 50 ms doubling up to 5 s,
    /// each wait between half and all of its ceiling).
    pub retry_backoff: Backoff,
    /// Lag in events is counted up to this many.
    pub lag_count_limit: usize,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            owner: format!("runner-{}", uuid::Uuid::new_v4()),
            lease_ttl: Duration::from_secs(6),
            control_interval: Duration::from_millis(500),
            status_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(30),
            degraded_lag: Duration::from_secs(30),
            waiting_after: Duration::from_secs(1),
            retry_backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
                .jitter(Jitter::Equal),
            lag_count_limit: 1_000,
        }
    }
}

impl RunnerOptions {
    /// Names this process in leases.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Sets the lease's time to live (the failover time).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets how often leases are renewed and control requests read.
    pub fn control_interval(mut self, interval: Duration) -> Self {
        self.control_interval = interval;
        self
    }

    /// Sets how often status is computed and reported.
    pub fn status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval;
        self
    }

    /// Sets the stall threshold.
    pub fn stall_after(mut self, after: Duration) -> Self {
        self.stall_after = after;
        self
    }

    /// Sets how long an open append must hold committed events back before the projection is
    /// reported waiting.
    pub fn waiting_after(mut self, after: Duration) -> Self {
        self.waiting_after = after;
        self
    }

    /// Sets the waits between retries of a transient failure. Give it jitter
    /// ([`Jitter::Equal`]) so that projections failing together do not retry together.
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// How often an owner renews its lease and reads its control state.
    pub(super) fn renew_every(&self) -> Duration {
        self.control_interval
            .min(self.lease_ttl / 3)
            .max(Duration::from_millis(1))
    }
}
