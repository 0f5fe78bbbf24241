//! `execute()`: read → fold → decide → append, with retries, caches and idempotency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossfold_core::{
    AppendRequest, AppendStream, Codec, CodecError, CodecOperation, Command, CommandError,
    DomainEvent, EventData, EventId, EventStore, EventType, ExpectedVersion, Fold, Json, Metadata,
    ReadSet, Recorded, RecordedEvent, StoreError, StreamConflict, StreamId, StreamRead, StreamSet,
    StreamVersion, Timestamp, Upcasters, encode_events,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::cache::ClockCache;
use crate::context::{ActorPermissions, Authorizer, ExecutionContext};
use crate::error::Error;
use crate::locks::{Guards, StreamLocks};
use crate::metrics::{CommandMetrics, MetricsRegistry, Outcome};
use crate::retry::RetryPolicy;
use crate::view::{CachedStream, Refresh, StateEntry, StateKey, Working};

/// What a successful execution did.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed {
    /// The events written, in the order the command emitted them (empty if it decided that
    /// nothing needed doing).
    pub events: Vec<RecordedEvent>,
    /// How many times the command ran (1 unless it met conflicts or transient failures).
    pub attempts: u32,
    /// How many of those attempts ended in a version conflict.
    pub conflicts: u32,
    /// Whether this is the outcome of an earlier execution with the same idempotency key,
    /// returned without writing anything.
    pub replayed: bool,
}

impl Executed {
    /// The written events, decoded.
    pub fn decode<E: DomainEvent>(&self) -> Result<Vec<Recorded<E>>, CodecError> {
        let upcasters = Upcasters::new();
        self.events
            .iter()
            .map(|e| upcasters.decode(&Json, e))
            .collect()
    }
}

/// Configures an [`Executor`].
pub struct ExecutorBuilder<S, C = Json> {
    store: S,
    codec: C,
    upcasters: Upcasters,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    authorizer: Arc<dyn Authorizer>,
    state_cache_bytes: usize,
    event_cache_bytes: usize,
    serialize_in_process: bool,
    max_discovery_rounds: u32,
}

impl<S: EventStore, C: Codec> ExecutorBuilder<S, C> {
    /// Uses another codec for the events the executor writes (reading follows each payload's
    /// own format).
    pub fn codec<C2: Codec>(self, codec: C2) -> ExecutorBuilder<S, C2> {
        ExecutorBuilder {
            store: self.store,
            codec,
            upcasters: self.upcasters,
            retry: self.retry,
            timeout: self.timeout,
            authorizer: self.authorizer,
            state_cache_bytes: self.state_cache_bytes,
            event_cache_bytes: self.event_cache_bytes,
            serialize_in_process: self.serialize_in_process,
            max_discovery_rounds: self.max_discovery_rounds,
        }
    }

    /// Upcasters applied to stored events before folding.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// The retry policy for conflicts and transient store errors.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A default time limit for every execution (a context can override it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The authorizer for commands that declare a required permission. Default:
    /// [`ActorPermissions`].
    pub fn authorizer(mut self, authorizer: impl Authorizer) -> Self {
        self.authorizer = Arc::new(authorizer);
        self
    }

    /// Memory for folded command states, in bytes (0 disables the cache). A command whose
    /// declared streams were folded before starts from that state and reads nothing; the
    /// append's version check catches anything it missed. Default 64 MiB. The weight of a
    /// state is its inline size plus its stream ids; heap memory a state owns is not counted.
    pub fn state_cache_bytes(mut self, bytes: usize) -> Self {
        self.state_cache_bytes = bytes;
        self
    }

    /// Memory for recently read or written stream events, in bytes (0 disables the cache).
    /// Lets a command whose combination of streams is new fold without reading streams the
    /// executor has seen before. Default 256 MiB.
    pub fn event_cache_bytes(mut self, bytes: usize) -> Self {
        self.event_cache_bytes = bytes;
        self
    }

    /// Whether commands of this process that declare a common stream wait for each other
    /// instead of racing to the store (default: true). The store's version check still decides
    /// between processes.
    pub fn serialize_in_process(mut self, on: bool) -> Self {
        self.serialize_in_process = on;
        self
    }

    /// How many rounds of stream discovery one execution may take (default 8).
    pub fn max_discovery_rounds(mut self, rounds: u32) -> Self {
        self.max_discovery_rounds = rounds;
        self
    }

    /// Builds the executor.
    pub fn build(self) -> Executor<S, C> {
        Executor {
            inner: Arc::new(Inner {
                store: self.store,
                codec: self.codec,
                upcasters: self.upcasters,
                retry: self.retry,
                timeout: self.timeout,
                authorizer: self.authorizer,
                states: ClockCache::new(self.state_cache_bytes),
                streams: ClockCache::new(self.event_cache_bytes),
                locks: self.serialize_in_process.then(|| StreamLocks::new(4096)),
                max_discovery_rounds: self.max_discovery_rounds,
                metrics: MetricsRegistry::new(),
            }),
        }
    }
}

/// Executes commands against a store. Cheap to clone; clones share caches.
///
/// See the crate documentation for an example.
pub struct Executor<S, C = Json> {
    pub(crate) inner: Arc<Inner<S, C>>,
}

impl<S, C> Clone for Executor<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Inner<S, C> {
    pub(crate) store: S,
    pub(crate) codec: C,
    pub(crate) upcasters: Upcasters,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) states: ClockCache<StateKey, StateEntry>,
    pub(crate) streams: ClockCache<StreamId, CachedStream>,
    pub(crate) locks: Option<StreamLocks>,
    pub(crate) max_discovery_rounds: u32,
    pub(crate) metrics: MetricsRegistry,
}

enum Failure {
    Conflict(Vec<StreamConflict>),
    /// A refusal or no-op was decided on a state that turned out to be behind.
    Stale {
        rebuild: bool,
    },
    Replay(StreamId),
    /// The store failed, and nothing was written.
    Transient(StoreError),
    /// The append failed in a way that does not tell whether it committed.
    InDoubt(Box<(StoreError, InDoubt)>),
    Fatal(Error),
}

/// An append that failed without telling whether it committed (the connection dropped after
/// the request was sent, a time limit struck while it ran). The append is atomic and its event
/// ids are unique, so the first stream it wrote tells: if the event after the version it
/// expected there is one of its own, it committed; if it is another, it never will.
pub(crate) struct InDoubt {
    /// The streams it wrote: the events after the version it expected, as many as it wrote.
    written: Vec<StreamRead>,
    /// Its events' ids, in the order they were emitted (rising).
    ids: Vec<EventId>,
    /// Whether the store has been asked, and showed its place free.
    checked: bool,
}

/// What the store says about an append in doubt.
enum Settled {
    /// It committed: its events as stored, in the order they were emitted.
    Committed(Vec<RecordedEvent>),
    /// Another event holds its place: it did not commit, and never will.
    Lost,
    /// Its place is still free: it has not committed (yet — a request still running on a
    /// server that lost its client may commit later).
    Open,
}

/// The appends of one execution whose outcome is not known yet, and the error that left the
/// last of them in doubt.
#[derive(Default)]
struct Doubts {
    appends: Vec<InDoubt>,
    error: Option<StoreError>,
}

/// Whether a failed append may have committed. A conflict, a refused request, contention
/// (the store rolled the append back) and a permanent failure all mean nothing was written;
/// a lost connection or a time limit may strike after the store committed.
fn may_have_committed(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_) | StoreError::Timeout(_))
}

impl From<Error> for Failure {
    fn from(value: Error) -> Self {
        match value {
            Error::Store { source, .. } if source.is_transient() => Failure::Transient(source),
            other => Failure::Fatal(other),
        }
    }
}

const IDEMPOTENCY_PREFIX: &str = "idempotency-";
const IDEMPOTENCY_EVENT: &str = "$CommandCompleted";

#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    command: String,
    writes: Vec<WrittenRange>,
}

#[derive(Serialize, Deserialize)]
struct WrittenRange {
    stream: StreamId,
    first: StreamVersion,
    count: u64,
}

impl<S: EventStore> Executor<S, Json> {
    /// An executor with default settings: JSON codec, default retry policy, caches on,
    /// in-process serialization on, no timeout.
    pub fn new(store: S) -> Self {
        Self::builder(store).build()
    }

    /// Starts configuring an executor.
    pub fn builder(store: S) -> ExecutorBuilder<S, Json> {
        ExecutorBuilder {
            store,
            codec: Json,
            upcasters: Upcasters::new(),
            retry: RetryPolicy::default(),
            timeout: None,
            authorizer: Arc::new(ActorPermissions),
            state_cache_bytes: 64 << 20,
            event_cache_bytes: 256 << 20,
            serialize_in_process: true,
            max_discovery_rounds: 8,
        }
    }
}

impl<S: EventStore, C: Codec> Executor<S, C> {
    /// The store commands run against.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Bytes currently held by the state cache and the event cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        (self.inner.states.used(), self.inner.streams.used())
    }

    /// Forgets every cached state and stream (for example after restoring a database).
    pub fn clear_caches(&self) {
        self.inner.states.clear();
        self.inner.streams.clear();
    }

    /// Executes `command` with an empty context.
    pub async fn execute<Cmd: Command>(&self, command: Cmd) -> Result<Executed, Error> {
        self.execute_with(command, &ExecutionContext::default())
            .await
    }

    /// Executes `command`: authorizes it, reads and folds its streams (or starts from a cached
    /// state), runs `handle`, and appends the events with the version of every stream read.
    /// Conflicts and transient store errors are retried according to the retry policy;
    /// business errors are returned at once. Every decision returned — events written or a
    /// refusal — was made on a state in which all streams read were at versions that
    /// coexisted.
    ///
    /// On any error nothing was written, except [`Error::OutcomeUnknown`] and
    /// [`Error::Timeout`] ([`Error::may_have_written`]). An append that fails without telling
    /// whether it committed is looked up (by its event ids) before anything is decided again,
    /// and returned as the success it was if it committed, so the executor's retries never
    /// apply a command twice.
    pub async fn execute_with<Cmd: Command>(
        &self,
        command: Cmd,
        context: &ExecutionContext,
    ) -> Result<Executed, Error> {
        // On an in-memory store a command completes without ever waiting, so a task that runs
        // commands in a loop would never give its worker back: tasks woken meanwhile (a
        // command queued on the same streams, a subscriber) would wait for seconds. Taking
        // part in the runtime's cooperative budget makes such a loop yield now and then.
        tokio::task::consume_budget().await;
        let name = command.name();
        let metrics = self.inner.metrics.command(name);
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut waited = false;
        let span = tracing::debug_span!(
            "crossfold.execute",
            command = name,
            streams = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            causation_id = tracing::field::Empty,
            actor = tracing::field::Empty,
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        // Only for a subscriber that listens: listing the streams and fixing the correlation
        // id up front cost allocations that an unobserved execution should not pay.
        let with_correlation;
        let context = if span.is_disabled() {
            context
        } else {
            let mut streams = Vec::new();
            command.streams().stream_ids(&mut streams);
            let streams: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
            span.record("streams", streams.join(",").as_str());
            // The id the events will carry: generated here rather than when the metadata is
            // built, so that the span and the events agree.
            let context = match context.correlation_id {
                Some(_) => context,
                None => {
                    with_correlation = ExecutionContext {
                        correlation_id: Some(EventId::generate().as_uuid()),
                        ..context.clone()
                    };
                    &with_correlation
                }
            };
            if let Some(id) = context.correlation_id {
                span.record("correlation_id", tracing::field::display(id));
            }
            if let Some(id) = context.causation_id {
                span.record("causation_id", tracing::field::display(id));
            }
            if let Some(actor) = &context.actor {
                span.record("actor", actor.id.as_str());
            }
            context
        };
        let timeout = context.timeout.or(self.inner.timeout);
        let run = self
            .run(&command, context, &metrics, &mut attempts, &mut waited)
            .instrument(span.clone());
        let result = match timeout {
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .unwrap_or(Err(Error::Timeout(limit))),
            None => run.await,
        };
        // Store errors met inside are wrapped without knowing how many attempts there were.
        let result = result.map_err(|error| match error {
            Error::Store { source, .. } => Error::store(source, attempts.max(1)),
            other => other,
        });
        if waited {
            // Waking the next waiter puts it in this worker's LIFO slot, which other workers
            // cannot steal from; without a yield, commands queued on the same streams gather
            // on one worker while the others idle. Yielding lets the runtime spread them.
            tokio::task::yield_now().await;
        }
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(Error::Command(
                CommandError::Rejected { .. }
                | CommandError::Validation(_)
                | CommandError::StreamNotFound(_),
            )) => Outcome::Rejected,
            Err(error) if error.is_conflict() => Outcome::Conflict,
            Err(Error::Unauthorized { .. }) => Outcome::Unauthorized,
            Err(Error::Timeout(_)) => Outcome::Timeout,
            Err(_) => Outcome::Error,
        };
        span.record("attempts", attempts);
        span.record("outcome", outcome.as_str());
        metrics.outcome(outcome).increment(1);
        metrics.duration.record(started.elapsed().as_secs_f64());
        metrics.attempts.record(f64::from(attempts));
        if let Err(error) = &result {
            span.in_scope(|| match outcome {
                Outcome::Rejected | Outcome::Unauthorized => {
                    tracing::debug!(%error, attempts, "command refused")
                }
                _ => tracing::warn!(%error, attempts, "command failed"),
            });
        }
        result
    }

    async fn run<Cmd: Command>(
        &self,
        command: &Cmd,
        context: &ExecutionContext,
        metrics: &CommandMetrics,
        attempts: &mut u32,
        waited: &mut bool,
    ) -> Result<Executed, Error> {
        if let Some(permission) = command.required_permission() {
            self.inner
                .authorizer
                .authorize(context.actor.as_ref(), command.name(), permission)
                .map_err(|denied| Error::Unauthorized {
                    permission: denied.permission,
                    actor: context.actor.as_ref().map(|a| a.id.clone()),
                })?;
        }
        let marker = match command.idempotency_key() {
            Some(key) => Some(
                StreamId::system(format!("{IDEMPOTENCY_PREFIX}{key}"))
                    .map_err(|e| Error::Command(e.into()))?,
            ),
            None => None,
        };
        let declared = ReadSet::of(command);
        // A stream the command expects to be new (named after a fresh id) is not shared with
        // other commands of this process; locking it would only add false collisions.
        let _guards = match &self.inner.locks {
            Some(locks) => {
                locks
                    .lock(
                        declared.ids().iter().filter(|id| !command.expects_new(id)),
                        waited,
                    )
                    .await
            }
            None => Guards::None,
        };
        let metadata = Arc::new(metadata(context));
        // Boxed, and only once an append is in doubt: whatever lives across the loop's awaits
        // makes every execution's future larger.
        let mut doubts: Option<Box<Doubts>> = None;
        // One loop in this function rather than a function of its own, and the futures of
        // the paths that only faults take boxed: a larger future costs every execution its
        // copying (counted with callgrind), and nearly all executions meet no fault.
        let result: Result<Executed, Error> = 'run: {
            let policy = self.inner.retry;
            // `None` means "fold again from the store, trusting no cache" (when the view cannot
            // be caught up); the first load may start from the caches.
            let mut loaded = Some(self.load(command, &declared, true).await);
            let mut conflicts = 0u32;
            // Set by the arms below that wait before the next attempt, and catch the view up
            // first: the waiting happens here, where the arms' bindings are gone, so that it
            // does not enlarge the future of every execution.
            let (mut pause, mut catch_up) = (false, false);
            loop {
                if pause {
                    pause = false;
                    tokio::time::sleep(policy.delay(*attempts)).await;
                }
                if catch_up {
                    catch_up = false;
                    if let Some(Ok(work)) = loaded.take() {
                        loaded = match Box::pin(self.catch_up(command, work, doubts.as_deref_mut()))
                            .await
                        {
                            Ok(next) => next,
                            Err(error) => break 'run Err(error),
                        };
                    }
                }
                *attempts += 1;
                let fresh = match loaded.take() {
                    Some(Ok(work)) => Ok(work),
                    Some(Err(error)) => Err(error),
                    None => self.load(command, &declared, false).await,
                };
                let mut work = match fresh {
                    Ok(work) => work,
                    Err(Error::Store { source: error, .. })
                        if error.is_transient() && *attempts < policy.max_attempts =>
                    {
                        metrics.retries.increment(1);
                        tracing::debug!(%error, attempt = *attempts, "store unavailable, retrying");
                        tokio::time::sleep(policy.delay(*attempts)).await;
                        continue;
                    }
                    Err(error) => break 'run Err(error),
                };
                // Never decide again before finding out whether an earlier append of this
                // execution committed: deciding on a view that holds its events (unrecognised)
                // would apply the command twice.
                if let Some(open) = doubts.as_deref_mut() {
                    match Box::pin(self.settle_doubts(&mut work, open)).await {
                        Ok(Some(events)) => {
                            tracing::debug!(
                                attempt = *attempts,
                                "an append in doubt had committed"
                            );
                            // The view is a fold of the versions it shows, whoever wrote them: the
                            // next command may start from it (a cached view only has to be true,
                            // not recent). Without it, that command refolds whole streams.
                            self.keep::<Cmd>(&declared, work);
                            break 'run Ok(Executed {
                                events,
                                attempts: *attempts,
                                conflicts,
                                replayed: false,
                            });
                        }
                        Ok(None) => {}
                        Err(error) if error.is_transient() && *attempts < policy.max_attempts => {
                            metrics.retries.increment(1);
                            tracing::debug!(%error, attempt = *attempts, "store unavailable, retrying");
                            loaded = Some(Ok(work));
                            pause = true;
                            continue;
                        }
                        Err(error) => {
                            self.keep::<Cmd>(&declared, work);
                            break 'run Err(Error::store(error, *attempts));
                        }
                    }
                }
                let failure = match self
                    .attempt(command, &mut work, &metadata, marker.as_ref(), *attempts)
                    .await
                {
                    Ok(mut executed) => {
                        executed.conflicts = conflicts;
                        self.keep::<Cmd>(&declared, work);
                        break 'run Ok(executed);
                    }
                    Err(failure) => failure,
                };
                match failure {
                    Failure::Fatal(error) => {
                        self.keep::<Cmd>(&declared, work);
                        break 'run Err(error);
                    }
                    Failure::Replay(marker) => {
                        let mut replayed = match self.replay(&marker, *attempts).await {
                            Ok(replayed) => replayed,
                            Err(error) => break 'run Err(error),
                        };
                        replayed.conflicts = conflicts;
                        break 'run Ok(replayed);
                    }
                    Failure::Stale { rebuild } => {
                        // The decision was made on a state that turned out to be behind; it has
                        // been refreshed, so decide again (not a conflict: nothing was written).
                        if *attempts >= policy.max_attempts {
                            if !rebuild {
                                self.keep::<Cmd>(&declared, work);
                            }
                            break 'run Err(Error::Contended {
                                attempts: *attempts,
                            });
                        }
                        if !rebuild {
                            loaded = Some(Ok(work));
                        }
                    }
                    Failure::Conflict(found) => {
                        conflicts += 1;
                        metrics.conflicts.increment(1);
                        if *attempts >= policy.max_attempts {
                            self.keep::<Cmd>(&declared, work);
                            break 'run Err(Error::store(StoreError::Conflict(found), *attempts));
                        }
                        metrics.retries.increment(1);
                        let contended = work.verified;
                        match self.refresh(command, &mut work, Some(&found)).await {
                            Ok(Refresh::Changed | Refresh::Unchanged) => loaded = Some(Ok(work)),
                            Ok(Refresh::Rebuild) => {}
                            // The view, behind as it is, is still a true fold: the next attempt
                            // conflicts again and catches up then.
                            Err(error) if error.is_transient() => loaded = Some(Ok(work)),
                            Err(error) => break 'run Err(error),
                        }
                        // A conflict against a state we had just confirmed means another process
                        // is writing the same streams: back off. A conflict against a cached or
                        // assumed state only means the cache was behind: retry at once.
                        if contended {
                            tokio::time::sleep(policy.delay(*attempts)).await;
                        }
                    }
                    Failure::Transient(error) => {
                        if *attempts >= policy.max_attempts {
                            self.keep::<Cmd>(&declared, work);
                            break 'run Err(Error::store(error, *attempts));
                        }
                        metrics.retries.increment(1);
                        tracing::debug!(%error, attempt = *attempts, "transient store error, retrying");
                        loaded = Some(Ok(work));
                        (pause, catch_up) = (true, true);
                    }
                    Failure::InDoubt(pair) => {
                        let (error, doubt) = *pair;
                        tracing::warn!(
                            %error,
                            attempt = *attempts,
                            "an append failed without telling whether it committed; finding out"
                        );
                        let open = doubts.get_or_insert_with(Box::default);
                        open.appends.push(doubt);
                        // Whatever the append did, the cached streams of this read set may not
                        // show it.
                        for id in work.read_set.ids() {
                            self.inner.streams.remove(id);
                        }
                        if *attempts >= policy.max_attempts {
                            self.keep::<Cmd>(&declared, work);
                            break 'run Err(Error::OutcomeUnknown {
                                source: error,
                                attempts: *attempts,
                            });
                        }
                        open.error = Some(error);
                        metrics.retries.increment(1);
                        // Nothing is decided before `settle_doubts` has found out whether the
                        // append committed; catching the view up first often answers already.
                        loaded = Some(Ok(work));
                        (pause, catch_up) = (true, true);
                    }
                }
            }
        };
        match result {
            // A refusal is decided on a view in which the first stream of every append in
            // doubt was still at the version that append expected; the view differs from the
            // one that append was decided on (the same view would give the same decision), so
            // some stream it expected has moved on and it can never commit.
            Err(error) if !matches!(error, Error::Command(_)) && doubts.is_some() => match doubts {
                Some(open) => Box::pin(self.give_up(error, *open, *attempts)).await,
                None => Err(error),
            },
            other => other,
        }
    }

    /// Catches the view up after a failed append or read: reads what changed since it, in one
    /// snapshot, rather than folding the streams' whole history again. An append in doubt whose
    /// first stream this snapshot shows still at the version it expected had not committed
    /// when the snapshot was taken, so the read doubles as its first look. If the store fails
    /// again, the view is kept as it was (the next append's version check catches up).
    async fn catch_up<Cmd: Command>(
        &self,
        command: &Cmd,
        mut work: Working<Cmd::State>,
        doubts: Option<&mut Doubts>,
    ) -> Result<Option<Result<Working<Cmd::State>, Error>>, Error> {
        match self.refresh(command, &mut work, None).await {
            Ok(Refresh::Rebuild) => Ok(None),
            Ok(Refresh::Changed | Refresh::Unchanged) => {
                for doubt in doubts.into_iter().flat_map(|d| d.appends.iter_mut()) {
                    let free = doubt.written.first().is_some_and(|first| {
                        work.read_set
                            .ids()
                            .iter()
                            .position(|id| *id == first.stream)
                            .is_some_and(|k| work.versions[k] == first.after)
                    });
                    doubt.checked |= free;
                }
                Ok(Some(Ok(work)))
            }
            Err(error) if error.is_transient() => Ok(Some(Ok(work))),
            Err(error) => Err(error),
        }
    }

    /// Settles the appends in doubt before a decision on `work`: the committed one's events,
    /// if one committed. Each is looked up in the store once. After that, one whose first
    /// stream is still at the version it expected in this view needs no further look — a
    /// decision on this view expects that version too, so at most one of the two can commit —
    /// but a view that shows the stream moved (after a conflict) may hold its events, late
    /// committed, and it is looked up again.
    async fn settle_doubts<St>(
        &self,
        work: &mut Working<St>,
        doubts: &mut Doubts,
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        let mut i = 0;
        while i < doubts.appends.len() {
            let doubt = &doubts.appends[i];
            let exclusive = doubt.checked
                && doubt.written.first().is_some_and(|first| {
                    work.read_set
                        .ids()
                        .iter()
                        .position(|id| *id == first.stream)
                        .is_some_and(|k| work.versions[k] == first.after)
                });
            if exclusive {
                i += 1;
                continue;
            }
            match self.settle(doubt).await? {
                Settled::Committed(events) => return Ok(Some(events)),
                Settled::Lost => {
                    doubts.appends.swap_remove(i);
                    // Another command took its place: the view is behind.
                    work.verified = false;
                }
                Settled::Open => {
                    doubts.appends[i].checked = true;
                    i += 1;
                }
            }
        }
        Ok(None)
    }

    /// Asks the store whether an append in doubt committed.
    async fn settle(&self, doubt: &InDoubt) -> Result<Settled, StoreError> {
        let read = self.inner.store.read_streams(&doubt.written).await?;
        let decided_by = read.first().and_then(|s| s.events.first());
        match decided_by {
            None => Ok(Settled::Open),
            Some(event) if doubt.ids.contains(&event.event_id) => {
                let mut events: Vec<RecordedEvent> =
                    read.into_iter().flat_map(|s| s.events).collect();
                events.sort_unstable_by_key(|e| e.event_id);
                let whole = events.len() == doubt.ids.len()
                    && events
                        .iter()
                        .zip(&doubt.ids)
                        .all(|(e, id)| e.event_id == *id);
                if whole {
                    Ok(Settled::Committed(events))
                } else {
                    Err(StoreError::Backend(
                        "the store holds only part of an atomic append".into(),
                    ))
                }
            }
            Some(_) => Ok(Settled::Lost),
        }
    }

    /// The retry policy gave up (or a permanent failure struck) while appends of this
    /// execution were in doubt: a last look tells whether one committed (then that is the
    /// outcome), whether none ever will (then `error` stands), or that nobody can tell.
    async fn give_up(
        &self,
        error: Error,
        doubts: Doubts,
        attempts: u32,
    ) -> Result<Executed, Error> {
        let mut unreachable = None;
        let mut open = false;
        for doubt in &doubts.appends {
            match self.settle(doubt).await {
                Ok(Settled::Committed(events)) => {
                    return Ok(Executed {
                        events,
                        attempts,
                        conflicts: 0,
                        replayed: false,
                    });
                }
                Ok(Settled::Lost) => {}
                Ok(Settled::Open) => open = true,
                Err(e) => {
                    open = true;
                    unreachable = Some(e);
                }
            }
        }
        match (error, open) {
            // Every append in doubt is known not to have committed: the error is the outcome.
            (Error::OutcomeUnknown { source, attempts }, false) => {
                Err(Error::store(source, attempts))
            }
            (error, false) => Err(error),
            (error, true) => {
                let source = match (unreachable, error) {
                    (Some(read), _) => read,
                    (None, Error::OutcomeUnknown { source, .. }) => source,
                    (None, _) => doubts.error.unwrap_or_else(|| {
                        StoreError::Unavailable("an earlier append's outcome is unknown".into())
                    }),
                };
                Err(Error::OutcomeUnknown { source, attempts })
            }
        }
    }

    /// One decide-and-append. On success `work` reflects the events written.
    async fn attempt<Cmd: Command>(
        &self,
        command: &Cmd,
        work: &mut Working<Cmd::State>,
        metadata: &Arc<Metadata>,
        marker: Option<&StreamId>,
        attempts: u32,
    ) -> Result<Executed, Failure> {
        let decided = work.read_set.decide(command, work.decision_state());
        let decided = match decided {
            Ok(events) if !events.is_empty() => events,
            refusal_or_nothing => {
                // A refusal or a no-op made on a cached state must not stand if the state was
                // behind: confirm the versions (reading any new events) before answering.
                if !work.verified {
                    match self.refresh(command, work, None).await? {
                        Refresh::Unchanged => {}
                        Refresh::Changed => return Err(Failure::Stale { rebuild: false }),
                        Refresh::Rebuild => return Err(Failure::Stale { rebuild: true }),
                    }
                }
                return match refusal_or_nothing {
                    Err(error) => Err(Failure::Fatal(Error::from(error))),
                    Ok(_) => Ok(Executed {
                        events: Vec::new(),
                        attempts,
                        conflicts: 0,
                        replayed: false,
                    }),
                };
            }
        };

        // New ids rise above everything the command read, and above each other in the order
        // the events were emitted.
        let mut event_ids: Vec<EventId> = Vec::with_capacity(decided.len());
        let mut last_id = work.floor;
        for _ in &decided {
            let id = match last_id {
                Some(floor) => EventId::generate_after(floor),
                None => EventId::generate(),
            };
            last_id = Some(id);
            event_ids.push(id);
        }
        // One request entry per stream read: read-only streams carry their version as a
        // condition and no events.
        let ids = work.read_set.ids();
        let mut streams: Vec<AppendStream> = Vec::with_capacity(ids.len() + 1);
        streams.extend(
            ids.iter()
                .zip(&work.versions)
                .map(|(id, version)| AppendStream {
                    stream: id.clone(),
                    expected: ExpectedVersion::Exact(*version),
                    events: Vec::new(),
                }),
        );
        let mut targets = decided.iter().map(|(stream, _)| *stream);
        encode_events(
            &self.inner.codec,
            event_ids
                .iter()
                .copied()
                .zip(decided.iter().map(|(_, e)| e)),
            metadata,
            |data| {
                if let Some(stream) = targets.next() {
                    streams[stream].events.push(data);
                }
            },
        )
        .map_err(|e| Failure::Fatal(Error::Codec(e)))?;
        if let Some(marker) = marker {
            streams.push(idempotency_marker(
                command.name(),
                marker,
                &streams,
                &work.versions,
                metadata,
            )?);
        }

        let appended = match self.inner.store.append(AppendRequest { streams }).await {
            Ok(appended) => appended,
            Err(StoreError::Conflict(conflicts)) => {
                if let Some(marker) = marker
                    && conflicts.iter().any(|c| &c.stream == marker)
                {
                    return Err(Failure::Replay(marker.clone()));
                }
                return Err(Failure::Conflict(conflicts));
            }
            Err(error) if may_have_committed(&error) => {
                // Built only now, from what the request was made of, so that an append that
                // succeeds pays nothing for it.
                let written = ids
                    .iter()
                    .enumerate()
                    .filter_map(|(i, id)| {
                        let count = decided.iter().filter(|(stream, _)| *stream == i).count();
                        (count > 0).then(|| StreamRead {
                            stream: id.clone(),
                            after: work.versions[i],
                            limit: count,
                        })
                    })
                    .collect();
                let doubt = InDoubt {
                    written,
                    ids: event_ids,
                    checked: false,
                };
                return Err(Failure::InDoubt(Box::new((error, doubt))));
            }
            Err(error) if error.is_transient() => return Err(Failure::Transient(error)),
            Err(error) => return Err(Failure::Fatal(Error::store(error, attempts))),
        };

        // The events as stored, back in the order they were emitted (their ids rise in it).
        let mut recorded: Vec<RecordedEvent> = appended
            .into_events()
            .into_iter()
            .filter(|e| Some(&e.stream_id) != marker)
            .collect();
        recorded.sort_unstable_by_key(|e| e.event_id);
        let answered = recorded.len() == decided.len()
            && recorded
                .iter()
                .zip(&decided)
                .zip(&event_ids)
                .all(|((e, (stream, _)), id)| e.event_id == *id && e.stream_id == ids[*stream]);
        if !answered {
            return Err(Failure::Fatal(Error::store(
                StoreError::Backend("the store's answer does not list the events appended".into()),
                attempts,
            )));
        }

        // Record what was written: the streams' cached events, the new state, the versions.
        if work.parts.is_none() {
            for (i, id) in ids.iter().enumerate() {
                let events: Vec<RecordedEvent> = recorded
                    .iter()
                    .filter(|e| e.stream_id == *id)
                    .cloned()
                    .collect();
                if !events.is_empty() {
                    self.extend_cached_stream(id, work.versions[i], events);
                }
            }
        }
        for ((stream, event), raw) in decided.into_iter().zip(&recorded) {
            work.versions[stream] = raw.stream_version;
            let event = Recorded::new(event, raw);
            match work.parts.as_mut() {
                Some(parts) => {
                    parts[stream].state.apply(&event);
                    parts[stream].floor = Some(raw.event_id);
                }
                None => {
                    work.state.apply(&event);
                    work.track_base(stream, &event, Fold::apply);
                }
            }
        }
        work.floor = last_id.or(work.floor);
        work.verified = true;
        Ok(Executed {
            events: recorded,
            attempts,
            conflicts: 0,
            replayed: false,
        })
    }

    /// Returns the outcome recorded by an earlier execution with the same idempotency key.
    async fn replay(&self, marker: &StreamId, attempts: u32) -> Result<Executed, Error> {
        let stream = self
            .inner
            .store
            .read_stream(marker, StreamVersion::EMPTY, 1)
            .await
            .map_err(|e| Error::store(e, attempts))?;
        let Some(first) = stream.events.first() else {
            return Err(Error::store(
                StoreError::Backend(
                    format!("idempotency record {marker} conflicted but reads empty").into(),
                ),
                attempts,
            ));
        };
        let record: IdempotencyRecord =
            crossfold_core::decode_payload(&first.payload).map_err(|e| {
                Error::Codec(
                    CodecError::new(CodecOperation::Decode, IDEMPOTENCY_EVENT, e).at(
                        first.event_id,
                        marker.clone(),
                        first.stream_version,
                    ),
                )
            })?;
        let reads: Vec<StreamRead> = record
            .writes
            .iter()
            .map(|w| StreamRead {
                stream: w.stream.clone(),
                after: StreamVersion::new(w.first.get().saturating_sub(1)),
                limit: usize::try_from(w.count).unwrap_or(usize::MAX),
            })
            .collect();
        let mut events: Vec<RecordedEvent> = self
            .inner
            .store
            .read_streams(&reads)
            .await
            .map_err(|e| Error::store(e, attempts))?
            .into_iter()
            .flat_map(|s| s.events)
            .collect();
        events.sort_by_key(|e| e.event_id);
        Ok(Executed {
            events,
            attempts,
            conflicts: 0,
            replayed: true,
        })
    }
}

/// The idempotency marker of an append: a new stream whose one event records what the command
/// wrote, so that running it again with the same key finds it and returns the same outcome.
fn idempotency_marker(
    command: &str,
    marker: &StreamId,
    streams: &[AppendStream],
    versions: &[StreamVersion],
    metadata: &Arc<Metadata>,
) -> Result<AppendStream, Failure> {
    let record = IdempotencyRecord {
        command: command.to_owned(),
        writes: streams
            .iter()
            .zip(versions)
            .filter(|(s, _)| !s.events.is_empty())
            .map(|(s, version)| WrittenRange {
                stream: s.stream.clone(),
                first: version.next(),
                count: s.events.len() as u64,
            })
            .collect(),
    };
    let payload = Json.encode(&record).map_err(|e| {
        Failure::Fatal(Error::Codec(CodecError::new(
            CodecOperation::Encode,
            IDEMPOTENCY_EVENT,
            e,
        )))
    })?;
    Ok(AppendStream {
        stream: marker.clone(),
        expected: ExpectedVersion::NoStream,
        events: vec![EventData {
            event_id: EventId::generate(),
            event_type: EventType::from_static(IDEMPOTENCY_EVENT),
            schema_version: 1,
            payload,
            metadata: metadata.clone(),
        }],
    })
}

fn metadata(context: &ExecutionContext) -> Metadata {
    Metadata {
        recorded_at: Timestamp::now(),
        correlation_id: Some(
            context
                .correlation_id
                .unwrap_or_else(|| EventId::generate().as_uuid()),
        ),
        causation_id: context.causation_id,
        actor: context.actor.as_ref().map(|a| a.id.clone()),
        custom: context.custom.clone(),
    }
}
