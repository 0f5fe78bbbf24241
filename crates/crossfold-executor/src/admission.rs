//! Admission control: at most a fixed number of executions run at once, and the others wait in
//! arrival order for one to finish, in a queue of bounded length, each for a bounded time.
//!
//! Why: a store serves a limited number of calls at once (a PostgreSQL pool's connections).
//! Without admission, every execution in flight goes to the store; each of its calls (the read,
//! then the append) queues for a connection at the back of the pool's queue, the waits grow
//! with the number in flight until the pool's wait times out, and the executor retries those
//! failures with backoff — latency set by luck, and throughput lost to the retries. With
//! admission, an execution queues once, before its first call, and keeps its permit through all
//! its attempts, so that at most `limit` executions use the store and none of them waits for a
//! connection behind the others.
//!
//! An execution that cannot be admitted — the queue is full, or no permit came before the
//! admission timeout or the execution's own time limit — is refused with
//! [`Error::Overloaded`]: nothing was read or written, and the executor does not retry it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::metrics::{ADMISSION_QUEUE_DEPTH, ADMISSION_WAIT_SECONDS};
use metrics::{Gauge, Histogram, gauge, histogram};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::Error;
use crate::metrics::CommandMetrics;

/// The default length of the admission queue.
pub(crate) const DEFAULT_QUEUE_DEPTH: usize = 4096;

/// The default longest wait for admission.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many executions may run at once, as the builder was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// As many as the store can serve ([`EventStore::concurrency_limit`]); no admission control
    /// if the store has no limit.
    ///
    /// [`EventStore::concurrency_limit`]: crossfold_core::EventStore::concurrency_limit
    FromStore,
    /// This many, whatever the store says.
    Fixed(usize),
    /// No admission control.
    Off,
}

/// Why an execution was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue was full when it arrived.
    QueueFull,
    /// No permit came before the admission timeout or the execution's time limit.
    Timeout,
}

/// The admission state an executor and its clones share.
pub(crate) struct Admission {
    permits: Semaphore,
    limit: usize,
    queue_depth: usize,
    timeout: Duration,
    /// Executions waiting now.
    queued: AtomicUsize,
    /// Executions admitted after waiting, and how long they waited in all (nanoseconds).
    admitted_after_waiting: AtomicU64,
    waited_nanos: AtomicU64,
    /// Executions refused.
    refused: AtomicU64,
    /// Resolved when an execution first queues, against the recorder installed then.
    metrics: OnceLock<AdmissionMetrics>,
}

struct AdmissionMetrics {
    queue_depth: Gauge,
    wait: Histogram,
}

/// A snapshot of an executor's admission control ([`Executor::admission`](crate::Executor::admission)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionStatus {
    /// How many executions may run at once.
    pub limit: usize,
    /// How many run now.
    pub running: usize,
    /// How many wait for admission now.
    pub queued: usize,
    /// How many may wait at most; one more is refused at once.
    pub queue_depth: usize,
    /// How long an execution waits for admission at most (less if its own time limit is
    /// nearer).
    pub timeout: Duration,
    /// Executions admitted after waiting, since the executor was built (those admitted at
    /// once are not counted).
    pub admitted_after_waiting: u64,
    /// How long those waited in all: divided by `admitted_after_waiting`, their mean wait.
    pub waited: Duration,
    /// Executions refused with [`Error::Overloaded`] since the executor was built.
    pub refused: u64,
}

impl Admission {
    /// Admission control for `limit` executions at once (at least 1).
    pub(crate) fn new(limit: usize, queue_depth: usize, timeout: Duration) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Semaphore::new(limit),
            limit,
            queue_depth,
            timeout,
            queued: AtomicUsize::new(0),
            admitted_after_waiting: AtomicU64::new(0),
            waited_nanos: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            metrics: OnceLock::new(),
        }
    }

    /// The admission control `limit` asks for, over a store that can serve `store_limit` calls
    /// at once; `None` for none.
    pub(crate) fn configure(
        limit: Limit,
        store_limit: Option<usize>,
        queue_depth: usize,
        timeout: Duration,
    ) -> Option<Self> {
        let limit = match limit {
            Limit::FromStore => store_limit?,
            Limit::Fixed(n) => n,
            Limit::Off => return None,
        };
        Some(Self::new(limit, queue_depth, timeout))
    }

    /// Waits for a permit, in arrival order: at once when one is free; otherwise in the queue
    /// (if it has room) until one is handed over, the admission timeout passes, or `deadline`
    /// (the execution's time limit) comes. `queued_since` is set while the execution waits, so
    /// that a time limit that strikes meanwhile is told apart from one that strikes later.
    pub(crate) async fn admit(
        &self,
        deadline: Option<Instant>,
        queued_since: &mut Option<Instant>,
        metrics: &CommandMetrics,
    ) -> Result<SemaphorePermit<'_>, Error> {
        // A permit is free only while nobody waits (a released permit goes to the first
        // waiter), so taking it here never overtakes the queue.
        match self.permits.try_acquire() {
            Ok(permit) => Ok(permit),
            // Boxed: nearly every execution is admitted at once, and a larger future would cost
            // each of them its copying.
            Err(_) => Box::pin(self.queue(deadline, queued_since, metrics)).await,
        }
    }

    async fn queue(
        &self,
        deadline: Option<Instant>,
        queued_since: &mut Option<Instant>,
        metrics: &CommandMetrics,
    ) -> Result<SemaphorePermit<'_>, Error> {
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.queue_depth).then_some(queued + 1)
            });
        if let Err(queued) = joined {
            return Err(self.refuse(Refusal::QueueFull, queued, Duration::ZERO, metrics));
        }
        let started = Instant::now();
        *queued_since = Some(started);
        let gauges = self.metrics();
        gauges.queue_depth.increment(1.0);
        // Leaves the queue however the wait ends, dropped future included.
        let _place = Place(self);
        let until = match deadline {
            Some(deadline) => deadline.min(started + self.timeout),
            None => started + self.timeout,
        };
        let acquired = tokio::time::timeout_at(until.into(), self.permits.acquire()).await;
        let waited = started.elapsed();
        *queued_since = None;
        gauges.wait.record(waited.as_secs_f64());
        match acquired {
            Ok(Ok(permit)) => {
                self.admitted_after_waiting.fetch_add(1, Ordering::Relaxed);
                self.waited_nanos.fetch_add(
                    u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                Ok(permit)
            }
            // The semaphore is never closed; should it be, refusing is the safe answer.
            Ok(Err(_)) | Err(_) => {
                let others = self.queued().saturating_sub(1);
                Err(self.refuse(Refusal::Timeout, others, waited, metrics))
            }
        }
    }

    /// Counts a refusal and builds its error.
    pub(crate) fn refuse(
        &self,
        why: Refusal,
        queued: usize,
        waited: Duration,
        metrics: &CommandMetrics,
    ) -> Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        metrics.refusal(why).increment(1);
        Error::Overloaded { queued, waited }
    }

    /// How many executions wait now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn status(&self) -> AdmissionStatus {
        AdmissionStatus {
            limit: self.limit,
            running: self.limit.saturating_sub(self.permits.available_permits()),
            queued: self.queued(),
            queue_depth: self.queue_depth,
            timeout: self.timeout,
            admitted_after_waiting: self.admitted_after_waiting.load(Ordering::Relaxed),
            waited: Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed)),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    fn metrics(&self) -> &AdmissionMetrics {
        self.metrics.get_or_init(|| AdmissionMetrics {
            queue_depth: gauge!(ADMISSION_QUEUE_DEPTH),
            wait: histogram!(ADMISSION_WAIT_SECONDS),
        })
    }
}

/// An execution's place in the queue: leaving it (admitted, refused, or dropped while waiting)
/// shortens the queue.
struct Place<'a>(&'a Admission);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        if let Some(metrics) = self.0.metrics.get() {
            metrics.queue_depth.decrement(1.0);
        }
    }
}
