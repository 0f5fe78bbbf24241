//! The runner: one task per projection, each with its own lease, checkpoint and status.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossfold_core::checkpoint::{
    CheckpointCommit, CheckpointError, CheckpointStore, ControlRequest, DeadLetter, DesiredState,
    Lease, ProjectionRecord, ProjectionState, ProjectionStatus, ReplayRequest,
};
use crossfold_core::metrics::{
    PROJECTION_ERRORS_TOTAL, PROJECTION_EVENTS_APPLIED_TOTAL, PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS, PROJECTION_STATE,
};
use crossfold_core::{
    EventBatch, EventStore, Json, LogFilter, Position, Recorded, RecordedEvent, Subscription,
    SubscriptionExt, SubscriptionOptions, Timestamp, Upcasters,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::projection::{ApplyContext, HandlerError, OnError, Projection, ProjectionOptions};

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
    /// First and longest wait between retries of a transient failure.
    pub retry_backoff: (Duration, Duration),
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
            retry_backoff: (Duration::from_millis(50), Duration::from_secs(5)),
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

    /// Sets the retry backoff bounds.
    pub fn retry_backoff(mut self, first: Duration, longest: Duration) -> Self {
        self.retry_backoff = (first, longest.max(first));
        self
    }

    fn renew_every(&self) -> Duration {
        self.control_interval
            .min(self.lease_ttl / 3)
            .max(Duration::from_millis(1))
    }
}

/// One projection as this runner sees it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunnerStatus {
    /// The projection.
    pub name: String,
    /// Whether this process holds its lease (runs it).
    pub owned: bool,
    /// Its committed checkpoint (as of this process's last commit or read).
    pub position: Position,
    /// The generation applied to.
    pub generation: u64,
    /// The generation readers should read.
    pub serving_generation: u64,
    /// Its status (as last computed, with stalls).
    pub status: ProjectionStatus,
}

/// What the task and the watchdog of one projection share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) filter: LogFilter,
    pub(crate) degraded_lag: Duration,
    local: Mutex<Local>,
}

#[derive(Debug)]
struct Local {
    state: ProjectionState,
    lease: Option<Lease>,
    position: Position,
    generation: u64,
    serving_generation: u64,
    last_advance: Instant,
    last_caught_up: Instant,
    events_applied: u64,
    retries: u32,
    last_error: Option<String>,
    error_position: Option<Position>,
    status: ProjectionStatus,
}

impl Shared {
    fn new(name: String, filter: LogFilter, degraded_lag: Duration) -> Self {
        let now = Instant::now();
        Self {
            name,
            filter,
            degraded_lag,
            local: Mutex::new(Local {
                state: ProjectionState::Idle,
                lease: None,
                position: Position::START,
                generation: 1,
                serving_generation: 1,
                last_advance: now,
                last_caught_up: now,
                events_applied: 0,
                retries: 0,
                last_error: None,
                error_position: None,
                status: ProjectionStatus::default(),
            }),
        }
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn snapshot(&self) -> RunnerStatus {
        let local = self.local();
        // Lag and rate come from the last status computation; the rest is current.
        let mut status = local.status.clone();
        if status.state != ProjectionState::Stalled {
            status.state = local.state;
            status.last_error = local.last_error.clone();
        }
        status.error_position = local.error_position;
        status.retries = local.retries;
        status.events_applied = local.events_applied;
        RunnerStatus {
            name: self.name.clone(),
            owned: local.lease.is_some(),
            position: local.position,
            generation: local.generation,
            serving_generation: local.serving_generation,
            status,
        }
    }

    fn set_state(&self, state: ProjectionState) {
        let mut local = self.local();
        local.state = state;
        if state == ProjectionState::Live {
            local.last_caught_up = Instant::now();
        }
        local.status.state = state;
    }

    fn record(&self, record: &ProjectionRecord) {
        let mut local = self.local();
        if record.position != local.position {
            local.last_advance = Instant::now();
        }
        local.position = record.position;
        local.generation = record.generation;
        local.serving_generation = record.serving_generation;
    }

    fn error(&self, kind: &'static str, error: &dyn std::fmt::Display) {
        metrics::counter!(PROJECTION_ERRORS_TOTAL, "projection" => self.name.clone(), "kind" => kind)
            .increment(1);
        let mut local = self.local();
        local.last_error = Some(error.to_string());
        if kind == "transient" {
            local.retries = local.retries.saturating_add(1);
        }
    }

    fn applied(&self, events: u64) {
        metrics::counter!(PROJECTION_EVENTS_APPLIED_TOTAL, "projection" => self.name.clone())
            .increment(events);
        let mut local = self.local();
        local.events_applied = local.events_applied.saturating_add(events);
        local.last_advance = Instant::now();
        local.retries = 0;
        local.last_error = None;
        local.error_position = None;
    }
}

/// An error with its causes, each once: `db error: ERROR: new row ... violates check
/// constraint ...` rather than the driver's bare `db error`.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

/// Exponential backoff with jitter.
struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    fn new((first, longest): (Duration, Duration)) -> Self {
        Self {
            first,
            longest,
            next: first,
        }
    }

    fn reset(&mut self) {
        self.next = self.first;
    }

    fn next(&mut self) -> Duration {
        let wait = self.next.mul_f64(0.5 + fastrand::f64() / 2.0);
        self.next = self.next.saturating_mul(2).min(self.longest);
        wait
    }
}

/// Why a stretch of owning a projection ended.
enum Exit {
    Shutdown,
    /// The lease went to someone else.
    Lost,
}

/// What went wrong applying a batch.
enum Step {
    /// Retry after a backoff, from the stored checkpoint.
    Retry,
    /// The lease is gone.
    Lost,
    /// The projection fails at this event.
    Failed,
}

enum UnitError {
    Handler(HandlerError),
    Checkpoint(CheckpointError),
}

impl From<CheckpointError> for UnitError {
    fn from(e: CheckpointError) -> Self {
        UnitError::Checkpoint(e)
    }
}

impl From<HandlerError> for UnitError {
    fn from(e: HandlerError) -> Self {
        UnitError::Handler(e)
    }
}

/// Runs projections: each in a task of its own, with its own lease, checkpoint and status.
///
/// Start projections with [`spawn`](Self::spawn); each is run by exactly one runner among all
/// processes sharing the checkpoint store (the one holding its lease). Steer them through
/// [`request`](Self::request) or, from another process, the store's
/// [`ProjectionControl`](crossfold_core::checkpoint::ProjectionControl). Call [`shutdown`](Self::shutdown)
/// to hand the leases over cleanly.
pub struct ProjectionRunner<S, C> {
    store: S,
    checkpoints: C,
    options: RunnerOptions,
    shutdown: watch::Sender<bool>,
    projections: Vec<(Arc<Shared>, JoinHandle<()>, JoinHandle<()>)>,
}

impl<S, C> std::fmt::Debug for ProjectionRunner<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("owner", &self.options.owner)
            .field("projections", &self.projections.len())
            .finish_non_exhaustive()
    }
}

impl<S, C> ProjectionRunner<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    /// A runner reading `store` and keeping checkpoints in `checkpoints`.
    pub fn new(store: S, checkpoints: C, options: RunnerOptions) -> Self {
        Self {
            store,
            checkpoints,
            options,
            shutdown: watch::channel(false).0,
            projections: Vec::new(),
        }
    }

    /// The options.
    pub fn options(&self) -> &RunnerOptions {
        &self.options
    }

    /// The checkpoint store.
    pub fn checkpoints(&self) -> &C {
        &self.checkpoints
    }

    /// Starts running `projection` (on the current Tokio runtime). It runs here when this
    /// process gets its lease, and waits as a standby otherwise.
    pub fn spawn<P>(&mut self, projection: P, options: ProjectionOptions)
    where
        P: Projection<Unit = C::Unit>,
    {
        let name = projection.name().to_owned();
        let filter = projection.filter();
        let shared = Arc::new(Shared::new(
            name.clone(),
            filter.clone(),
            self.options.degraded_lag,
        ));
        let driver = Driver {
            upcasters: projection.upcasters(),
            projection,
            store: self.store.clone(),
            checkpoints: self.checkpoints.clone(),
            options: self.options.clone(),
            projection_options: options,
            shared: shared.clone(),
            shutdown: self.shutdown.subscribe(),
            name,
            filter,
        };
        let task = tokio::spawn(driver.run());
        let watchdog = tokio::spawn(watchdog(
            self.store.clone(),
            self.checkpoints.clone(),
            self.options.clone(),
            shared.clone(),
            self.shutdown.subscribe(),
        ));
        self.projections.push((shared, task, watchdog));
    }

    /// Every projection of this runner as it sees them.
    pub fn status(&self) -> Vec<RunnerStatus> {
        self.projections
            .iter()
            .map(|(s, ..)| s.snapshot())
            .collect()
    }

    /// One projection as this runner sees it.
    pub fn status_of(&self, name: &str) -> Option<RunnerStatus> {
        self.projections
            .iter()
            .find(|(s, ..)| s.name == name)
            .map(|(s, ..)| s.snapshot())
    }

    /// A health check for each projection (`projection:NAME`), for a health registry.
    pub fn health_checks(&self) -> Vec<crate::ProjectionHealth> {
        self.projections
            .iter()
            .map(|(s, ..)| crate::ProjectionHealth::new(s.clone()))
            .collect()
    }

    /// Stores a control request for a projection (whichever process runs it acts on it).
    pub async fn request(
        &self,
        name: &str,
        request: ControlRequest,
    ) -> Result<ProjectionRecord, CheckpointError> {
        crossfold_core::checkpoint::ProjectionControl::request(&self.checkpoints, name, request)
            .await
    }

    /// Stops every projection after the batch it is applying, hands its lease over, and waits.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for (_, task, watchdog) in self.projections {
            let _ = task.await;
            let _ = watchdog.await;
        }
    }
}

struct Driver<P, S, C> {
    projection: P,
    upcasters: Upcasters,
    store: S,
    checkpoints: C,
    options: RunnerOptions,
    projection_options: ProjectionOptions,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    name: String,
    filter: LogFilter,
}

impl<P, S, C> Driver<P, S, C>
where
    P: Projection<Unit = C::Unit>,
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
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

    async fn run(self) {
        let mut backoff = Backoff::new(self.options.retry_backoff);
        let ttl = self.options.lease_ttl;
        while !self.is_shutdown() {
            match self
                .checkpoints
                .acquire(&self.name, &self.options.owner, ttl)
                .await
            {
                Ok(Some(lease)) => {
                    backoff.reset();
                    tracing::info!(projection = %self.name, token = lease.token, "crossfold: projection lease taken");
                    self.shared.local().lease = Some(lease.clone());
                    let exit = self.own(&lease).await;
                    {
                        let mut local = self.shared.local();
                        local.lease = None;
                        local.state = ProjectionState::Idle;
                        local.status.state = ProjectionState::Idle;
                    }
                    if let Err(e) = self.checkpoints.release(&lease).await {
                        tracing::warn!(projection = %self.name, error = %e, "crossfold: cannot release a projection lease; it expires on its own");
                    }
                    match exit {
                        Exit::Shutdown => break,
                        Exit::Lost => {
                            self.shared.error("fenced", &"the lease was lost");
                            tracing::warn!(projection = %self.name, "crossfold: projection lease lost");
                        }
                    }
                }
                Ok(None) => self.sleep(self.options.renew_every()).await,
                Err(e) => {
                    self.shared.error("transient", &chain(&e));
                    self.sleep(backoff.next()).await;
                }
            }
        }
    }

    fn context(&self, record: &ProjectionRecord) -> ApplyContext {
        ApplyContext::new(
            self.name.clone(),
            record.generation,
            record.serving_generation,
        )
    }

    /// Runs the projection while holding `lease`.
    async fn own(&self, lease: &Lease) -> Exit {
        let renew_every = self.options.renew_every();
        let mut backoff = Backoff::new(self.options.retry_backoff);
        let mut record: Option<ProjectionRecord> = None;
        let mut subscription: Option<Subscription<S>> = None;
        let mut failed_at: Option<u64> = None;
        let mut next_renew = Instant::now();
        // Halved after a transient failure, doubled back after each success: a batch that
        // cannot finish in time (a process manager's commands outlasting the transaction's idle
        // timeout or the lease) gets smaller until it can, instead of failing the same way.
        let configured_batch = self.projection_options.batch_size.max(1);
        let mut batch_size = configured_batch;
        loop {
            if self.is_shutdown() {
                return Exit::Shutdown;
            }
            if Instant::now() >= next_renew || record.is_none() {
                match self.checkpoints.renew(lease, self.options.lease_ttl).await {
                    Ok(Some(fresh)) => {
                        if fresh.lease_token != lease.token {
                            return Exit::Lost;
                        }
                        self.shared.record(&fresh);
                        record = Some(fresh);
                        next_renew = Instant::now() + renew_every;
                    }
                    Ok(None) => return Exit::Lost,
                    Err(e) => {
                        self.shared.error("transient", &chain(&e));
                        // The subscription re-reads from the stored checkpoint once the store
                        // answers again: a commit may be in doubt.
                        subscription = None;
                        record = None;
                        self.sleep(backoff.next()).await;
                        continue;
                    }
                }
            }
            let Some(current) = record.as_mut() else {
                continue;
            };
            let failed = failed_at == Some(current.control_seq);
            if let (Some(replay), false) = (current.replay, failed) {
                match self.replay(lease, current, replay).await {
                    Ok(()) => {
                        subscription = None;
                        failed_at = None;
                        self.shared.record(current);
                    }
                    Err(Step::Lost) => return Exit::Lost,
                    Err(Step::Retry) => {
                        record = None;
                        self.sleep(backoff.next()).await;
                    }
                    Err(Step::Failed) => failed_at = Some(current.control_seq),
                }
                continue;
            }
            let idle_state = match current.desired {
                DesiredState::Paused => Some(ProjectionState::Paused),
                DesiredState::Stopped => Some(ProjectionState::Stopped),
                _ if failed => Some(ProjectionState::Failed),
                _ => None,
            };
            if let Some(state) = idle_state {
                self.shared.set_state(state);
                subscription = None;
                self.sleep(next_renew.saturating_duration_since(Instant::now()))
                    .await;
                continue;
            }
            if failed_at.take().is_some() {
                let mut local = self.shared.local();
                local.error_position = None;
                local.last_error = None;
            }
            let running = if current.generation != current.serving_generation {
                ProjectionState::Rebuilding
            } else {
                ProjectionState::CatchingUp
            };
            let shown = self.shared.local().state;
            // A live projection stays live until a batch says otherwise.
            if (shown != ProjectionState::Live || running == ProjectionState::Rebuilding)
                && shown != running
            {
                self.shared.set_state(running);
            }
            let sub = subscription.get_or_insert_with(|| {
                self.store.subscribe(
                    SubscriptionOptions::all()
                        .from(current.position)
                        .filter(self.filter.clone())
                        .batch_size(batch_size),
                )
            });
            let wait = next_renew.saturating_duration_since(Instant::now());
            let mut shutdown = self.shutdown.clone();
            let next = tokio::select! {
                next = tokio::time::timeout(wait, sub.next_batch()) => next,
                _ = shutdown.wait_for(|down| *down) => return Exit::Shutdown,
            };
            let step = match next {
                Err(_idle) => {
                    // Nothing matched for a while: move the checkpoint past what the
                    // subscription scanned, so that a filtered projection's position (and its
                    // lag) follows the log.
                    let scanned = sub.position();
                    if scanned > current.position {
                        self.advance(lease, current, scanned).await
                    } else {
                        Ok(())
                    }
                }
                Ok(Err(e)) => {
                    self.shared.error("transient", &chain(&e));
                    Err(Step::Retry)
                }
                Ok(Ok(batch)) => self.apply_batch(lease, current, batch).await,
            };
            match step {
                Ok(()) => {
                    backoff.reset();
                    let caught_up = sub.is_caught_up();
                    if current.generation != current.serving_generation {
                        if caught_up && sub.position() == current.position {
                            match self.switch(lease, current).await {
                                Ok(()) => {}
                                Err(Step::Lost) => return Exit::Lost,
                                Err(Step::Failed) => failed_at = Some(current.control_seq),
                                Err(Step::Retry) => {
                                    subscription = None;
                                    record = None;
                                    self.sleep(backoff.next()).await;
                                }
                            }
                        } else {
                            self.shared.set_state(ProjectionState::Rebuilding);
                        }
                    } else if caught_up {
                        self.shared.set_state(ProjectionState::Live);
                    } else {
                        self.shared.set_state(ProjectionState::CatchingUp);
                    }
                    if batch_size < configured_batch {
                        batch_size = batch_size.saturating_mul(2).min(configured_batch);
                        subscription = None;
                    }
                }
                Err(Step::Lost) => return Exit::Lost,
                Err(Step::Retry) => {
                    batch_size = (batch_size / 2).max(1);
                    subscription = None;
                    record = None;
                    self.sleep(backoff.next()).await;
                }
                Err(Step::Failed) => {
                    failed_at = Some(current.control_seq);
                    subscription = None;
                    self.shared.set_state(ProjectionState::Failed);
                    // Operators see a failure at once, not at the next status interval.
                    let status = self.shared.snapshot().status;
                    if let Err(e) = self.checkpoints.report(lease, &status).await {
                        self.shared.error("transient", &chain(&e));
                    }
                }
            }
        }
    }

    fn classify(&self, error: UnitError) -> Result<HandlerError, Step> {
        match error {
            UnitError::Checkpoint(CheckpointError::Fenced { .. }) => Err(Step::Lost),
            UnitError::Checkpoint(e) => {
                self.shared.error("transient", &chain(&e));
                Err(Step::Retry)
            }
            UnitError::Handler(e) if e.is_transient() => {
                self.shared.error("transient", &chain(&e));
                Err(Step::Retry)
            }
            UnitError::Handler(e) => Ok(e),
        }
    }

    /// Applies `events` and commits the checkpoint `position` in one unit.
    async fn commit_events(
        &self,
        lease: &Lease,
        record: &ProjectionRecord,
        events: &[Recorded<P::Event>],
        position: Position,
    ) -> Result<(), UnitError> {
        let mut unit = self.checkpoints.begin(lease).await?;
        self.projection
            .apply(&mut unit, &self.context(record), events)
            .await?;
        self.checkpoints
            .commit(
                lease,
                unit,
                CheckpointCommit::new(position, record.generation, record.serving_generation),
            )
            .await?;
        Ok(())
    }

    /// Moves the checkpoint without applying anything.
    async fn advance(
        &self,
        lease: &Lease,
        record: &mut ProjectionRecord,
        position: Position,
    ) -> Result<(), Step> {
        let commit = async {
            let unit = self.checkpoints.begin(lease).await?;
            self.checkpoints
                .commit(
                    lease,
                    unit,
                    CheckpointCommit::new(position, record.generation, record.serving_generation),
                )
                .await
        };
        match commit.await {
            Ok(()) => {
                record.position = position;
                self.shared.record(record);
                Ok(())
            }
            Err(e) => self.classify(UnitError::Checkpoint(e)).map(drop),
        }
    }

    async fn apply_batch(
        &self,
        lease: &Lease,
        record: &mut ProjectionRecord,
        batch: EventBatch,
    ) -> Result<(), Step> {
        let decoded: Result<Vec<Recorded<P::Event>>, _> = batch
            .events
            .iter()
            .map(|raw| self.upcasters.decode::<P::Event, Json>(&Json, raw))
            .collect();
        if let Ok(events) = decoded {
            match self
                .commit_events(lease, record, &events, batch.position)
                .await
            {
                Ok(()) => {
                    record.position = batch.position;
                    self.shared.record(record);
                    self.shared.applied(events.len() as u64);
                    return Ok(());
                }
                Err(e) => {
                    // Rejected: find the event, one at a time.
                    self.classify(e)?;
                }
            }
        }
        self.apply_one_by_one(lease, record, batch).await
    }

    async fn apply_one_by_one(
        &self,
        lease: &Lease,
        record: &mut ProjectionRecord,
        batch: EventBatch,
    ) -> Result<(), Step> {
        let last = batch.events.len().saturating_sub(1);
        for (i, raw) in batch.events.iter().enumerate() {
            let position = if i == last {
                batch.position
            } else {
                raw.position
            };
            let rejected = match self.upcasters.decode::<P::Event, Json>(&Json, raw) {
                Ok(event) => {
                    match self
                        .commit_events(lease, record, std::slice::from_ref(&event), position)
                        .await
                    {
                        Ok(()) => {
                            record.position = position;
                            self.shared.record(record);
                            self.shared.applied(1);
                            continue;
                        }
                        Err(e) => chain(&self.classify(e)?),
                    }
                }
                Err(e) => chain(&e),
            };
            self.poison(lease, record, raw, position, rejected).await?;
        }
        Ok(())
    }

    /// An event the handler cannot apply: fail at it, or set it aside.
    async fn poison(
        &self,
        lease: &Lease,
        record: &mut ProjectionRecord,
        raw: &RecordedEvent,
        position: Position,
        error: String,
    ) -> Result<(), Step> {
        match self.projection_options.on_error {
            OnError::Fail => {
                tracing::error!(projection = %self.name, position = %raw.position, %error, "crossfold: projection failed at an event");
                self.shared.error("handler", &error);
                self.shared.local().error_position = Some(raw.position);
                Err(Step::Failed)
            }
            OnError::DeadLetter => {
                tracing::warn!(projection = %self.name, position = %raw.position, %error, "crossfold: event set aside as a dead letter");
                self.shared.error("dead_letter", &error);
                let commit = async {
                    let unit = self.checkpoints.begin(lease).await?;
                    let mut commit = CheckpointCommit::new(
                        position,
                        record.generation,
                        record.serving_generation,
                    );
                    commit
                        .dead_letters
                        .push(DeadLetter::new(self.name.clone(), raw, error));
                    self.checkpoints.commit(lease, unit, commit).await
                };
                match commit.await {
                    Ok(()) => {
                        record.position = position;
                        record.dead_letters = record.dead_letters.saturating_add(1);
                        self.shared.record(record);
                        Ok(())
                    }
                    Err(e) => self.classify(UnitError::Checkpoint(e)).map(drop),
                }
            }
        }
    }

    /// Starts a reset or a rebuild: an empty model for the generation, checkpoint at the start.
    async fn replay(
        &self,
        lease: &Lease,
        record: &mut ProjectionRecord,
        replay: ReplayRequest,
    ) -> Result<(), Step> {
        let generation = match replay {
            ReplayRequest::Rebuild => record.generation.saturating_add(1),
            _ => record.generation,
        };
        let context = ApplyContext::new(self.name.clone(), generation, record.serving_generation);
        let result = async {
            let mut unit = self.checkpoints.begin(lease).await?;
            self.projection.reset(&mut unit, &context).await?;
            let mut commit =
                CheckpointCommit::new(Position::START, generation, record.serving_generation);
            commit.clears_replay = true;
            self.checkpoints.commit(lease, unit, commit).await?;
            Ok::<(), UnitError>(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(projection = %self.name, generation, kind = replay.as_str(), "crossfold: projection replays from the start");
                record.position = Position::START;
                record.generation = generation;
                record.replay = None;
                Ok(())
            }
            Err(e) => {
                let error = self.classify(e)?;
                self.shared.error("handler", &chain(&error));
                Err(Step::Failed)
            }
        }
    }

    /// A rebuilt generation has caught up: it becomes the serving one.
    async fn switch(&self, lease: &Lease, record: &mut ProjectionRecord) -> Result<(), Step> {
        let old = record.serving_generation;
        let context = self.context(record);
        let result = async {
            let mut unit = self.checkpoints.begin(lease).await?;
            self.projection.retire(&mut unit, &context, old).await?;
            let commit =
                CheckpointCommit::new(record.position, record.generation, record.generation);
            self.checkpoints.commit(lease, unit, commit).await?;
            Ok::<(), UnitError>(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(projection = %self.name, generation = record.generation, "crossfold: rebuilt projection now serves");
                record.serving_generation = record.generation;
                self.shared.record(record);
                self.shared.set_state(ProjectionState::Live);
                Ok(())
            }
            Err(e) => {
                let error = self.classify(e)?;
                self.shared.error("handler", &chain(&error));
                Err(Step::Failed)
            }
        }
    }
}

/// Computes one projection's status now and then: lag, rate, stalls; reports it to the store
/// and records the metrics.
async fn watchdog<S, C>(
    store: S,
    checkpoints: C,
    options: RunnerOptions,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    let mut last_applied = 0u64;
    let mut last_tick = Instant::now();
    let name = shared.name.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.status_interval) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        let (lease, position, state) = {
            let local = shared.local();
            (local.lease.clone(), local.position, local.state)
        };
        let Some(lease) = lease else {
            last_applied = shared.local().events_applied;
            continue;
        };
        let running = matches!(
            state,
            ProjectionState::CatchingUp | ProjectionState::Live | ProjectionState::Rebuilding
        );
        let lag = if running {
            store
                .read_all(position, options.lag_count_limit, &shared.filter)
                .await
                .map(|events| events.len())
                .ok()
        } else {
            None
        };
        let status = {
            let mut local = shared.local();
            let now = Instant::now();
            let elapsed = now.duration_since(last_tick).as_secs_f64().max(1e-9);
            let applied = local.events_applied;
            // The store cannot be read (an outage): the last count stands, so that a
            // projection held up by the outage is still seen behind, and stalls.
            let lag_events = lag.unwrap_or_else(|| {
                if running {
                    usize::try_from(local.status.lag_events).unwrap_or(usize::MAX)
                } else {
                    0
                }
            });
            let mut status_state = local.state;
            let mut last_error = local.last_error.clone();
            if running && lag_events > 0 && local.last_advance.elapsed() > options.stall_after {
                status_state = ProjectionState::Stalled;
                last_error = Some(format!(
                    "no progress for {:.0?} while events exist past the checkpoint{}",
                    local.last_advance.elapsed(),
                    local
                        .last_error
                        .as_deref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                ));
            }
            if running && lag_events == 0 && lag.is_some() {
                local.last_caught_up = now;
            }
            let lag_seconds = if state == ProjectionState::Live && lag_events == 0 {
                0.0
            } else {
                local.last_caught_up.elapsed().as_secs_f64()
            };
            let mut status = ProjectionStatus::default();
            status.state = status_state;
            status.lag_events = lag_events as u64;
            status.lag_events_capped = lag_events >= options.lag_count_limit;
            status.lag_seconds = lag_seconds;
            status.events_per_second = applied.saturating_sub(last_applied) as f64 / elapsed;
            status.events_applied = applied;
            status.retries = local.retries;
            status.last_error = last_error;
            status.error_position = local.error_position;
            status.reported_at = Some(Timestamp::now());
            local.status = status.clone();
            last_applied = applied;
            last_tick = now;
            status
        };
        metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => name.clone())
            .set(status.lag_events as f64);
        metrics::gauge!(PROJECTION_LAG_SECONDS, "projection" => name.clone())
            .set(status.lag_seconds);
        for s in ProjectionState::ALL {
            metrics::gauge!(PROJECTION_STATE, "projection" => name.clone(), "state" => s.as_str())
                .set(if s == status.state { 1.0 } else { 0.0 });
        }
        if let Err(e) = checkpoints.report(&lease, &status).await {
            tracing::debug!(projection = %name, error = %e, "crossfold: cannot report projection status");
        }
    }
}
