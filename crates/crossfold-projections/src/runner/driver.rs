//! One projection's task: the life of its owner in this process, as a state machine. It takes
//! the projection's lease (or waits as a standby), runs it while holding it — catching up, live,
//! rebuilding, paused — and steps down when the lease is lost or hands it over on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossfold_core::checkpoint::{
    DesiredState, Lease, Leases, ProjectionRecord, ProjectionState, ReplayRequest, UnitOfWork,
};
use crossfold_core::{
    Delays, ErrorChain, EventStore, LogFilter, Subscription, SubscriptionExt, SubscriptionOptions,
};
use tokio::sync::watch;

use super::batch::{Applier, Step};
use super::options::RunnerOptions;
use super::status::Shared;
use crate::projection::{Projection, ProjectionOptions};

/// Where the owner of one projection is in its life. [`Driver::run`] handles one state at a
/// time: each arm of its match does what the state asks and returns the next state.
enum State<S> {
    /// Without the lease: take it, or wait as a standby while another process holds it.
    Acquiring,
    /// Holding the lease: renew it when due — always when the record is unknown — and act on
    /// the control state the renewal returns.
    Holding(Held<S>, Option<ProjectionRecord>),
    /// A reset or a rebuild was asked for: prepare the empty generation, checkpoint at the start.
    Replaying(Held<S>, ProjectionRecord, ReplayRequest),
    /// Catching up, live, or rebuilding a new generation: apply the next batch.
    Running(Held<S>, ProjectionRecord),
    /// A rebuilt generation has caught up: make it the serving one.
    Switching(Held<S>, ProjectionRecord),
    /// Paused or stopped by a control request, or failed at an event (the state shown says
    /// which): keep the lease, apply nothing until the next renewal.
    Halted(Held<S>, ProjectionRecord, ProjectionState),
    /// A transient failure: wait, then read the stored record again.
    BackingOff(Held<S>),
    /// Another process took the lease over: step down, then try to take it again.
    Lost(Lease),
    /// Shutdown was asked for: hand the lease over.
    ShuttingDown(Lease),
    /// The task ends.
    Done,
}

/// What the owner keeps from one state to the next while it holds the lease.
struct Held<S> {
    lease: Lease,
    /// Reads on from the checkpoint; dropped whenever it must start again from the stored one.
    subscription: Option<Subscription<S>>,
    /// The control sequence number at which the projection failed: it stays failed until a
    /// control request (a resume) moves the number on.
    failed_at: Option<u64>,
    next_renew: Instant,
    // Halved after a transient failure, doubled back after each success: a batch that
    // cannot finish in time (a process manager's commands outlasting the transaction's idle
    // timeout or the lease) gets smaller until it can, instead of failing the same way.
    batch_size: usize,
    retry: Delays,
}

/// Runs one projection: its owner's state machine, the applier that commits its batches, and
/// what it shares with its watchdog.
pub(super) struct Driver<P, S, C> {
    applier: Applier<P, C>,
    store: S,
    checkpoints: C,
    options: RunnerOptions,
    /// The batch size asked for (at least 1).
    batch_size: usize,
    filter: LogFilter,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
}

impl<P, S, C> Driver<P, S, C>
where
    P: Projection<Unit = C::Unit>,
    S: EventStore + Clone + 'static,
    C: UnitOfWork + Leases + Clone,
{
    pub(super) fn new(
        projection: P,
        projection_options: ProjectionOptions,
        store: S,
        checkpoints: C,
        options: RunnerOptions,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            applier: Applier {
                upcasters: projection.upcasters(),
                projection,
                checkpoints: checkpoints.clone(),
                on_error: projection_options.on_error,
                shared: shared.clone(),
                name: shared.name.clone(),
            },
            store,
            checkpoints,
            options,
            batch_size: projection_options.batch_size.max(1),
            filter: shared.filter.clone(),
            shared,
            shutdown,
        }
    }

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sleeps, or less if shutdown is asked for.
    async fn sleep(&self, duration: Duration) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            _ = shutdown.wait_for(|down| *down) => {}
        }
    }

    /// Runs the projection's owner until shutdown.
    pub(super) async fn run(self) {
        let mut retry_acquire = self.options.retry_backoff.delays();
        let mut state = State::Acquiring;
        loop {
            state = match state {
                State::Acquiring => self.acquire(&mut retry_acquire).await,
                State::Holding(held, record) => self.hold(held, record).await,
                State::Replaying(held, record, replay) => self.replay(held, record, replay).await,
                State::Running(held, record) => self.apply_next(held, record).await,
                State::Switching(held, record) => self.switch(held, record).await,
                State::Halted(held, record, shown) => self.halt(held, record, shown).await,
                State::BackingOff(mut held) => {
                    self.sleep(held.retry.next_delay()).await;
                    State::Holding(held, None)
                }
                State::Lost(lease) => {
                    self.let_go(&lease).await;
                    self.shared.error("fenced", &"the lease was lost");
                    tracing::warn!(projection = %self.name(), "crossfold: projection lease lost");
                    State::Acquiring
                }
                State::ShuttingDown(lease) => {
                    self.let_go(&lease).await;
                    State::Done
                }
                State::Done => return,
            };
        }
    }

    async fn acquire(&self, retry: &mut Delays) -> State<S> {
        if self.is_shutdown() {
            return State::Done;
        }
        let (owner, ttl) = (&self.options.owner, self.options.lease_ttl);
        match self.checkpoints.acquire(self.name(), owner, ttl).await {
            Ok(Some(lease)) => {
                retry.reset();
                tracing::info!(projection = %self.name(), token = lease.token, "crossfold: projection lease taken");
                self.shared.hold(&lease);
                State::Holding(
                    Held {
                        lease,
                        subscription: None,
                        failed_at: None,
                        next_renew: Instant::now(),
                        batch_size: self.batch_size,
                        retry: self.options.retry_backoff.delays(),
                    },
                    None,
                )
            }
            Ok(None) => {
                self.sleep(self.options.renew_every()).await;
                State::Acquiring
            }
            Err(e) => {
                self.shared.error("transient", &ErrorChain(&e));
                self.sleep(retry.next_delay()).await;
                State::Acquiring
            }
        }
    }

    /// Gives the lease up: the projection is idle here, and another process may take it at once.
    async fn let_go(&self, lease: &Lease) {
        self.shared.let_go();
        if let Err(e) = self.checkpoints.release(lease).await {
            tracing::warn!(projection = %self.name(), error = %ErrorChain(&e), "crossfold: cannot release a projection lease; it expires on its own");
        }
    }

    async fn hold(&self, mut held: Held<S>, record: Option<ProjectionRecord>) -> State<S> {
        if self.is_shutdown() {
            return State::ShuttingDown(held.lease);
        }
        let record = match record {
            Some(record) if Instant::now() < held.next_renew => record,
            _ => match self
                .checkpoints
                .renew(&held.lease, self.options.lease_ttl)
                .await
            {
                Ok(Some(fresh)) if fresh.lease_token == held.lease.token => {
                    self.shared.record(&fresh);
                    held.next_renew = Instant::now() + self.options.renew_every();
                    fresh
                }
                Ok(_) => return State::Lost(held.lease),
                Err(e) => {
                    self.shared.error("transient", &ErrorChain(&e));
                    // The subscription re-reads from the stored checkpoint once the store
                    // answers again: a commit may be in doubt.
                    held.subscription = None;
                    return State::BackingOff(held);
                }
            },
        };
        let failed = held.failed_at == Some(record.control_seq);
        match (record.replay, record.desired) {
            (Some(replay), _) if !failed => State::Replaying(held, record, replay),
            (_, DesiredState::Paused) => State::Halted(held, record, ProjectionState::Paused),
            (_, DesiredState::Stopped) => State::Halted(held, record, ProjectionState::Stopped),
            _ if failed => State::Halted(held, record, ProjectionState::Failed),
            _ => State::Running(held, record),
        }
    }

    async fn halt(
        &self,
        mut held: Held<S>,
        record: ProjectionRecord,
        shown: ProjectionState,
    ) -> State<S> {
        self.shared.set_state(shown);
        held.subscription = None;
        self.sleep(held.next_renew.saturating_duration_since(Instant::now()))
            .await;
        State::Holding(held, Some(record))
    }

    async fn replay(
        &self,
        mut held: Held<S>,
        mut record: ProjectionRecord,
        replay: ReplayRequest,
    ) -> State<S> {
        match self.applier.replay(&held.lease, &mut record, replay).await {
            Ok(()) => {
                held.subscription = None;
                held.failed_at = None;
                State::Holding(held, Some(record))
            }
            Err(Step::Lost) => State::Lost(held.lease),
            Err(Step::Retry) => {
                // The reset may have committed before the error reached us: read from the
                // record's checkpoint again rather than on from where the old generation was.
                held.subscription = None;
                State::BackingOff(held)
            }
            Err(Step::Failed) => {
                held.failed_at = Some(record.control_seq);
                State::Holding(held, Some(record))
            }
        }
    }

    async fn switch(&self, mut held: Held<S>, mut record: ProjectionRecord) -> State<S> {
        match self.applier.switch(&held.lease, &mut record).await {
            Ok(()) => State::Holding(held, Some(record)),
            Err(Step::Lost) => State::Lost(held.lease),
            Err(Step::Failed) => {
                held.failed_at = Some(record.control_seq);
                State::Holding(held, Some(record))
            }
            Err(Step::Retry) => {
                held.subscription = None;
                State::BackingOff(held)
            }
        }
    }

    /// Reads the next batch (or nothing, until the next renewal is due) and applies it.
    async fn apply_next(&self, mut held: Held<S>, mut record: ProjectionRecord) -> State<S> {
        if held.failed_at.take().is_some() {
            // Failed under an earlier control request: a resume runs it again.
            self.shared.clear_failure();
        }
        let rebuilding = record.generation != record.serving_generation;
        let running = if rebuilding {
            ProjectionState::Rebuilding
        } else {
            ProjectionState::CatchingUp
        };
        let shown = self.shared.state();
        // A live projection stays live until a batch says otherwise.
        if (shown != ProjectionState::Live || rebuilding) && shown != running {
            self.shared.set_state(running);
        }
        let batch_size = held.batch_size;
        let sub = held.subscription.get_or_insert_with(|| {
            self.store.subscribe(
                SubscriptionOptions::all()
                    .from(record.position)
                    .filter(self.filter.clone())
                    .batch_size(batch_size),
            )
        });
        let wait = held.next_renew.saturating_duration_since(Instant::now());
        let mut shutdown = self.shutdown.clone();
        let next = tokio::select! {
            next = tokio::time::timeout(wait, sub.next_batch()) => Some(next),
            _ = shutdown.wait_for(|down| *down) => None,
        };
        let Some(next) = next else {
            return State::ShuttingDown(held.lease);
        };
        let step = match next {
            Err(_idle) => {
                // Nothing matched for a while: move the checkpoint past what the
                // subscription scanned, so that a filtered projection's position (and its
                // lag) follows the log.
                let scanned = sub.position();
                if scanned > record.position {
                    self.applier
                        .advance(&held.lease, &mut record, scanned)
                        .await
                } else {
                    Ok(())
                }
            }
            Ok(Err(e)) => {
                self.shared.error("transient", &ErrorChain(&e));
                Err(Step::Retry)
            }
            Ok(Ok(batch)) => {
                self.applier
                    .apply_batch(&held.lease, &mut record, batch)
                    .await
            }
        };
        match step {
            Ok(()) => {
                held.retry.reset();
                let caught_up = sub.is_caught_up();
                let switch = rebuilding && caught_up && sub.position() == record.position;
                if rebuilding {
                    if !switch {
                        self.shared.set_state(ProjectionState::Rebuilding);
                    }
                } else if caught_up {
                    self.shared.set_state(ProjectionState::Live);
                } else {
                    self.shared.set_state(ProjectionState::CatchingUp);
                }
                if held.batch_size < self.batch_size {
                    held.batch_size = held.batch_size.saturating_mul(2).min(self.batch_size);
                    held.subscription = None;
                }
                if switch {
                    State::Switching(held, record)
                } else {
                    State::Holding(held, Some(record))
                }
            }
            Err(Step::Lost) => State::Lost(held.lease),
            Err(Step::Retry) => {
                held.batch_size = (held.batch_size / 2).max(1);
                held.subscription = None;
                State::BackingOff(held)
            }
            Err(Step::Failed) => {
                held.failed_at = Some(record.control_seq);
                held.subscription = None;
                self.shared.set_state(ProjectionState::Failed);
                // Operators see a failure at once, not at the next status interval.
                let status = self.shared.snapshot().status;
                if let Err(e) = self.checkpoints.report(&held.lease, &status).await {
                    self.shared.error("transient", &ErrorChain(&e));
                }
                State::Holding(held, Some(record))
            }
        }
    }
}
