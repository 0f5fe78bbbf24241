//! Admission control: at most a fixed number of executions run at once, and the others wait in
//! arrival order for one to finish, in a queue of bounded length, each for a bounded time.
//!
//! Why: a store serves a limited number of calls at once (a PostgreSQL pool's connections).
//! Without admission, every execution in flight goes to the store; each of its calls (the read,
//! then the append) queues for a connection at the back of the pool's queue, so an execution
//! waits a whole queue's length per call, and a wait that outlasts the pool's timeout fails and
//! is retried. With admission, an execution queues once, before its first call, and keeps its
//! place through all its attempts, so that at most `limit` executions use the store and none of
//! them waits for a connection behind the others.
//!
//! With the in-process stream locks ([`crate::locks`]), an execution is admitted first and
//! locks its streams second ([`enter`]). Locking first would hold a stream's lock through the
//! whole admission wait, and a later command on the same stream would wait that long for the
//! lock and then queue for admission again: twice the queue's wait. Admitted first, commands
//! on one stream leave the queue in the order they arrived and rarely find the lock taken. One
//! that does gives its place back while it waits for the lock — so that commands waiting for a
//! hot stream never hold places other commands could use — and is admitted again ahead of the
//! queue once it holds the lock: a stream's lock is never held through a queue's wait.
//!
//! An execution that cannot be admitted — the queue is full, or no place came before the
//! admission timeout or the execution's own time limit — is refused with
//! [`Error::Overloaded`]: nothing was read or written, and the executor does not retry it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crossfold_core::metrics::{ADMISSION_QUEUE_DEPTH, ADMISSION_WAIT_SECONDS};
use metrics::{Gauge, Histogram, gauge, histogram};
use tokio::time::Instant;

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
    /// No place came before the admission timeout or the execution's time limit.
    Timeout,
}

/// Where a waiting execution joins the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// At the back: a new arrival.
    Arrival,
    /// Ahead of every arrival: one that was admitted, gave its place back while it waited for
    /// a stream's lock, and now holds the lock.
    Return,
}

/// The admission state an executor and its clones share.
pub(crate) struct Admission {
    places: Places,
    limit: usize,
    queue_depth: usize,
    timeout: Duration,
    /// Executions waiting now (both lanes).
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

/// Admits an execution and locks its streams (`lock`, the in-process stream locks or nothing):
/// admission first, then the locks; if a lock is taken, the execution gives its place back
/// while it waits for it, and is admitted again ahead of the queue once it holds it (see the
/// module's documentation). Returns the place (none without admission control) and the locks.
pub(crate) async fn enter<'a, G>(
    admission: Option<&'a Admission>,
    lock: impl Future<Output = G>,
    deadline: Option<Instant>,
    queued_since: &mut Option<Instant>,
    metrics: &CommandMetrics,
) -> Result<(Option<Place<'a>>, G), Error> {
    let Some(admission) = admission else {
        return Ok((None, lock.await));
    };
    let mut place = Some(
        admission
            .admit(Lane::Arrival, deadline, queued_since, metrics)
            .await?,
    );
    let guards = wait_without_place(
        Some(admission),
        &mut place,
        lock,
        deadline,
        queued_since,
        metrics,
    )
    .await?;
    Ok((place, guards))
}

/// Takes `lock` for an execution admitted already (a turn on contended streams, taken between
/// two attempts) as [`enter`] takes a stream's lock: at once, keeping `place`, if it is free;
/// otherwise it gives `place` back while it waits and is admitted again ahead of the queue once
/// it holds the lock — so that an execution waiting for another's turn never holds the place
/// that other needs.
pub(crate) async fn wait_without_place<'a, G>(
    admission: Option<&'a Admission>,
    place: &mut Option<Place<'a>>,
    lock: impl Future<Output = G>,
    deadline: Option<Instant>,
    queued_since: &mut Option<Instant>,
    metrics: &CommandMetrics,
) -> Result<G, Error> {
    let Some(admission) = admission else {
        return Ok(lock.await);
    };
    let mut lock = pin!(lock);
    // One look: registered to be woken if the lock is taken, and taken at once if it is free.
    let looked = std::future::poll_fn(|cx| Poll::Ready(lock.as_mut().poll(cx))).await;
    if let Poll::Ready(guards) = looked {
        return Ok(guards);
    }
    drop(place.take());
    let guards = lock.await;
    *place = Some(
        admission
            .admit(Lane::Return, deadline, queued_since, metrics)
            .await?,
    );
    Ok(guards)
}

impl Admission {
    /// Admission control for `limit` executions at once (at least 1).
    pub(crate) fn new(limit: usize, queue_depth: usize, timeout: Duration) -> Self {
        let limit = limit.max(1);
        Self {
            places: Places::new(limit),
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

    /// Takes a place: at once when one is free and nobody waits ahead in `lane`; otherwise in
    /// the queue (an arrival only if the queue has room) until one is handed over, the
    /// admission timeout passes, or `deadline` (the execution's time limit) comes.
    /// `queued_since` is set while the execution waits, so that a time limit that strikes
    /// meanwhile is told apart from one that strikes later.
    async fn admit(
        &self,
        lane: Lane,
        deadline: Option<Instant>,
        queued_since: &mut Option<Instant>,
        metrics: &CommandMetrics,
    ) -> Result<Place<'_>, Error> {
        match self.places.try_take() {
            Some(place) => Ok(place),
            // Boxed: most executions find a free place, and the wait's timer would make every
            // execution's future larger (and costlier to move) if it lived inline.
            None => Box::pin(self.queue(lane, deadline, queued_since, metrics)).await,
        }
    }

    /// [`admit`](Self::admit) when no place is free.
    async fn queue(
        &self,
        lane: Lane,
        deadline: Option<Instant>,
        queued_since: &mut Option<Instant>,
        metrics: &CommandMetrics,
    ) -> Result<Place<'_>, Error> {
        if lane == Lane::Arrival {
            let joined = self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued < self.queue_depth).then_some(queued + 1)
                });
            if let Err(queued) = joined {
                return Err(self.refuse(Refusal::QueueFull, queued, Duration::ZERO, metrics));
            }
        } else {
            // Not bounded: it was admitted once, and holds a stream's lock that others wait for.
            self.queued.fetch_add(1, Ordering::AcqRel);
        }
        let started = Instant::now();
        *queued_since = Some(started);
        let gauges = self.metrics();
        gauges.queue_depth.increment(1.0);
        let until = match deadline {
            Some(deadline) => deadline.min(started + self.timeout),
            None => started + self.timeout,
        };
        let taken = tokio::time::timeout_at(until, Waiting::new(self, lane)).await;
        let waited = started.elapsed();
        *queued_since = None;
        gauges.wait.record(waited.as_secs_f64());
        match taken {
            Ok(place) => {
                self.admitted_after_waiting.fetch_add(1, Ordering::Relaxed);
                self.waited_nanos.fetch_add(
                    u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                Ok(place)
            }
            Err(_) => Err(self.refuse(Refusal::Timeout, self.queued(), waited, metrics)),
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
            running: self.limit.saturating_sub(self.places.free()),
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

    /// An execution stopped waiting (admitted, refused, or dropped while waiting).
    fn left_queue(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        if let Some(metrics) = self.metrics.get() {
            metrics.queue_depth.decrement(1.0);
        }
    }
}

/// The places: how many are free, and who waits for one, returning executions ahead of
/// arrivals, each lane in order. A freed place goes straight to the first waiter, so a place is
/// free only while nobody waits, and taking a free one never overtakes anyone.
///
/// Not `tokio::sync::Semaphore`, which is as fair but has one lane.
struct Places {
    state: Mutex<PlacesState>,
}

struct PlacesState {
    free: usize,
    returns: VecDeque<Arc<Slot>>,
    arrivals: VecDeque<Arc<Slot>>,
}

/// One waiter's slot: whether a place was handed to it, and how to wake it.
#[derive(Default)]
struct Slot {
    /// `Some(waker)` while it waits; `granted` once a place was handed over. Both change under
    /// the places' lock, so that a waiter that gives up can tell whether it holds a place.
    inner: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    granted: bool,
    waker: Option<Waker>,
}

impl Places {
    fn new(places: usize) -> Self {
        Self {
            state: Mutex::new(PlacesState {
                free: places,
                returns: VecDeque::new(),
                arrivals: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PlacesState> {
        // Nothing panics while holding it; a poisoned lock's state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn free(&self) -> usize {
        self.lock().free
    }

    fn try_take(&self) -> Option<Place<'_>> {
        let mut state = self.lock();
        (state.free > 0).then(|| {
            state.free -= 1;
            Place(self)
        })
    }

    /// Hands a place back: to the first waiter, or to the free ones.
    fn give_back(&self) {
        let mut state = self.lock();
        let next = match state.returns.pop_front() {
            Some(slot) => Some(slot),
            None => state.arrivals.pop_front(),
        };
        match next {
            Some(slot) => {
                let waker = {
                    let mut slot = slot.lock();
                    slot.granted = true;
                    slot.waker.take()
                };
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            None => state.free += 1,
        }
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A place held: given back when dropped.
pub(crate) struct Place<'a>(&'a Places);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// Waiting for a place in a lane. Dropped before it has one (the wait timed out, or the
/// execution was dropped), it leaves the lane, or passes on a place handed to it meanwhile.
struct Waiting<'a> {
    admission: &'a Admission,
    lane: Lane,
    /// Set once it joined the lane.
    slot: Option<Arc<Slot>>,
    /// Whether it has left the queue.
    done: bool,
}

impl<'a> Waiting<'a> {
    fn new(admission: &'a Admission, lane: Lane) -> Self {
        Self {
            admission,
            lane,
            slot: None,
            done: false,
        }
    }

    fn admitted(&mut self) -> Place<'a> {
        self.done = true;
        self.slot = None;
        self.admission.left_queue();
        Place(&self.admission.places)
    }
}

impl<'a> Future for Waiting<'a> {
    type Output = Place<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Place<'a>> {
        if self.done {
            return Poll::Pending;
        }
        let places = &self.admission.places;
        let Some(slot) = &self.slot else {
            let mut state = places.lock();
            if state.free > 0 {
                state.free -= 1;
                drop(state);
                return Poll::Ready(self.admitted());
            }
            let slot = Arc::new(Slot::default());
            slot.lock().waker = Some(cx.waker().clone());
            match self.lane {
                Lane::Arrival => state.arrivals.push_back(slot.clone()),
                Lane::Return => state.returns.push_back(slot.clone()),
            }
            drop(state);
            self.slot = Some(slot);
            return Poll::Pending;
        };
        let mut inner = slot.lock();
        if inner.granted {
            drop(inner);
            return Poll::Ready(self.admitted());
        }
        match &mut inner.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.admission.left_queue();
        let Some(slot) = self.slot.take() else {
            return;
        };
        let places = &self.admission.places;
        let mut state = places.lock();
        // A place is handed over under the places' lock, so this answer is final.
        if slot.lock().granted {
            drop(state);
            places.give_back();
            return;
        }
        let lane = match self.lane {
            Lane::Arrival => &mut state.arrivals,
            Lane::Return => &mut state.returns,
        };
        if let Some(at) = lane.iter().position(|s| Arc::ptr_eq(s, &slot)) {
            lane.remove(at);
        }
    }
}
