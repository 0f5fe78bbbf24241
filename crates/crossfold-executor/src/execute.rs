//! The executor and what every execution goes through on its way in and out: the span, the
//! metrics, authorization, the time limit and the cooperative budget. What happens in between
//! is the retry loop's ([`crate::retry`]).

use crossfold_core::ErrorChain;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossfold_core::{
    Codec, Command, CommandError, EventId, EventStore, Json, StreamId, StreamSet, Upcasters,
};
use tracing::Instrument;

use crate::admission::{self, Admission, AdmissionStatus, Limit, Refusal};
use crate::context::{ActorPermissions, Authorizer, ExecutionContext};
use crate::error::Error;
use crate::executed::Executed;
use crate::load::{Backend, Loader};
use crate::locks::StreamLocks;
use crate::metrics::{MetricsRegistry, Outcome};
use crate::retry::{RetryPolicy, Runner};
use crate::snapshots::{Keeper, Snapshots};

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
    concurrency_limit: Limit,
    admission_queue_depth: usize,
    admission_timeout: Duration,
    snapshots: Option<Snapshots>,
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
            concurrency_limit: self.concurrency_limit,
            admission_queue_depth: self.admission_queue_depth,
            admission_timeout: self.admission_timeout,
            snapshots: self.snapshots,
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

    /// How many executions run at once (at least 1), overriding what the store can serve
    /// ([`EventStore::concurrency_limit`]; by default the executor takes the store's limit — on
    /// PostgreSQL most of the pool — and has no limit over a store without one).
    ///
    /// Executions beyond the limit wait for admission in arrival order, before their first
    /// store call, in a queue of [`admission_queue_depth`](Self::admission_queue_depth) for
    /// at most [`admission_timeout`](Self::admission_timeout); an admitted execution keeps its
    /// place through all its attempts. One that cannot be admitted fails with
    /// [`Error::Overloaded`], having read and written nothing. Commands that wait for each
    /// other on a common stream ([`serialize_in_process`](Self::serialize_in_process)) do so
    /// before admission, so that they hold no place while they wait.
    pub fn concurrency_limit(mut self, executions: usize) -> Self {
        self.concurrency_limit = Limit::Fixed(executions.max(1));
        self
    }

    /// No admission control, whatever the store can serve: every execution goes to the store
    /// at once (and waits there, for example for a pooled connection).
    pub fn no_concurrency_limit(mut self) -> Self {
        self.concurrency_limit = Limit::Off;
        self
    }

    /// How many executions may wait for admission at once (default 4,096); one more is
    /// refused at once with [`Error::Overloaded`]. 0 refuses every execution that finds the
    /// [concurrency limit](Self::concurrency_limit) reached.
    pub fn admission_queue_depth(mut self, executions: usize) -> Self {
        self.admission_queue_depth = executions;
        self
    }

    /// How long an execution may wait for admission (default 5 s) before it is refused with
    /// [`Error::Overloaded`]. The wait also counts against the execution's own time limit
    /// ([`timeout`](Self::timeout)): one whose limit comes first is refused then, with
    /// `Overloaded` rather than [`Error::Timeout`], since it wrote nothing.
    pub fn admission_timeout(mut self, timeout: Duration) -> Self {
        self.admission_timeout = timeout;
        self
    }

    /// Keeps snapshots of the command states `snapshots` names: a command whose state is in
    /// no cache (the first after a restart, or after eviction) starts from the latest snapshot
    /// and folds only the events after it. A snapshot never changes a decision — the append
    /// checks every stream's version as always — and one that cannot be used (another state
    /// version, not decodable, ahead of its streams, the snapshot store down) is passed over.
    /// Snapshots are written after the command, by a task of their own: see
    /// [`Executor::snapshots_written`].
    pub fn snapshots(mut self, snapshots: Snapshots) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// Builds the executor.
    pub fn build(self) -> Executor<S, C> {
        let loader = Loader::new(
            self.upcasters,
            self.state_cache_bytes,
            self.event_cache_bytes,
            self.max_discovery_rounds,
            self.snapshots.and_then(Keeper::new),
        );
        let locks = self.serialize_in_process.then(|| StreamLocks::new(4096));
        let admission = Admission::configure(
            self.concurrency_limit,
            self.store.concurrency_limit(),
            self.admission_queue_depth,
            self.admission_timeout,
        );
        Executor {
            inner: Arc::new(Inner {
                runner: Runner::new(self.store, self.codec, loader, self.retry, locks, admission),
                timeout: self.timeout,
                authorizer: self.authorizer,
                metrics: MetricsRegistry::new(),
            }),
        }
    }
}

/// Executes commands against a store. Cheap to clone; clones share caches.
///
/// See the crate documentation for an example.
pub struct Executor<S, C = Json> {
    inner: Arc<Inner<S, C>>,
}

impl<S, C> Clone for Executor<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S, C> {
    runner: Runner<S, C>,
    timeout: Option<Duration>,
    authorizer: Arc<dyn Authorizer>,
    metrics: MetricsRegistry,
}

impl<S: EventStore> Executor<S, Json> {
    /// An executor with default settings: JSON codec, default retry policy, caches on,
    /// in-process serialization on, no timeout, at most as many executions at once as the
    /// store can serve ([`ExecutorBuilder::concurrency_limit`]).
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
            concurrency_limit: Limit::FromStore,
            admission_queue_depth: admission::DEFAULT_QUEUE_DEPTH,
            admission_timeout: admission::DEFAULT_TIMEOUT,
            snapshots: None,
        }
    }
}

impl<S: EventStore, C: Codec> Executor<S, C> {
    /// The store commands run against.
    pub fn store(&self) -> &S {
        self.inner.runner.store()
    }

    /// Bytes currently held by the state cache and the event cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        self.inner.runner.loader().cache_usage()
    }

    /// Forgets every cached state and stream (for example after restoring a database).
    pub fn clear_caches(&self) {
        self.inner.runner.loader().clear_caches();
    }

    /// Waits until every snapshot this executor started writing is written (or has failed):
    /// before shutting down, or in a test that reads snapshots back. Returns at once without
    /// snapshots.
    pub async fn snapshots_written(&self) {
        self.inner.runner.loader().snapshots_written().await;
    }

    /// The state of admission control: the limit, how many executions run and wait now, and
    /// how many waited or were refused so far. `None` when the executor has no concurrency
    /// limit ([`ExecutorBuilder::concurrency_limit`]).
    pub fn admission(&self) -> Option<AdmissionStatus> {
        self.inner.runner.admission().map(Admission::status)
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
    /// With an [idempotency key](ExecutionContext::idempotency_key) in `context`, an execution
    /// whose key an earlier one already used never writes: where it would, it returns that
    /// execution's outcome ([`Executed::replayed`]).
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
        // id up front cost allocations that an unobserved execution should not pay. The copy
        // of the context is boxed so that it does not enlarge every execution's future.
        let with_correlation: Box<ExecutionContext>;
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
                    with_correlation = Box::new(ExecutionContext {
                        correlation_id: Some(EventId::generate().as_uuid()),
                        ..context.clone()
                    });
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
        let mut retries = self.inner.runner.retries();
        // Not a `match`: its scrutinee would live across the awaits below, in every execution's
        // future.
        let result = if let Err(denied) = self.authorize(&command, context, &span) {
            Err(denied)
        } else {
            // One instant for the time limit and for the admission wait it bounds.
            let deadline = timeout.map(|limit| tokio::time::Instant::now() + limit);
            let run = retries
                .run(&command, context, &metrics, deadline)
                .instrument(span.clone());
            match (timeout, deadline) {
                (Some(limit), Some(deadline)) => tokio::time::timeout_at(deadline, run)
                    .await
                    .unwrap_or(Err(Error::Timeout(limit))),
                _ => run.await,
            }
        };
        let tally = retries.tally();
        // The limit struck while the execution still waited for admission (the admission
        // wait ends at the same instant, but the timer may wake the limit first): it read and
        // wrote nothing, so it is refused like any execution not admitted in time.
        let result = match (result, tally.queued_since, self.inner.runner.admission()) {
            (Err(Error::Timeout(_)), Some(since), Some(admission)) => Err(admission.refuse(
                Refusal::Timeout,
                admission.queued(),
                since.elapsed(),
                &metrics,
            )),
            (result, ..) => result,
        };
        let attempts = tally.attempts;
        // Store errors met inside are wrapped without knowing how many attempts there were.
        let result = result.map_err(|error| match error {
            Error::Store { source, .. } => Error::store(source, attempts.max(1)),
            other => other,
        });
        if tally.waited
            || self
                .inner
                .runner
                .admission()
                .is_some_and(|admission| admission.queued() > 0)
        {
            // Waking the next waiter puts it in this worker's LIFO slot, which other workers
            // cannot steal from; without a yield, commands queued on the same streams (or for
            // admission) gather on one worker while the others idle. Yielding lets the runtime
            // spread them.
            tokio::task::yield_now().await;
        }
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(Error::Command(
                CommandError::Rejected { .. }
                | CommandError::Validation(_)
                | CommandError::StreamNotFound(_),
            )) => Outcome::Rejected,
            // Both mean the streams kept changing until the retry policy gave up.
            Err(error) if error.is_conflict() || error.is_contended() => Outcome::Conflict,
            Err(Error::Unauthorized { .. }) => Outcome::Unauthorized,
            Err(Error::Timeout(_)) => Outcome::Timeout,
            Err(Error::Overloaded { .. }) => Outcome::Overloaded,
            Err(_) => Outcome::Error,
        };
        span.record("attempts", attempts);
        span.record("outcome", outcome.as_str());
        metrics.outcome(outcome).increment(1);
        metrics.duration.record(started.elapsed().as_secs_f64());
        metrics.attempts.record(f64::from(attempts));
        if let Err(error) = &result {
            span.in_scope(|| match outcome {
                Outcome::Rejected | Outcome::Unauthorized | Outcome::Overloaded => {
                    tracing::debug!(error = %ErrorChain(error), attempts, "command refused")
                }
                _ => tracing::warn!(error = %ErrorChain(error), attempts, "command failed"),
            });
        }
        result
    }

    /// Refuses a command whose required permission the caller lacks, before anything is read.
    /// The authorizer runs inside the execution's span, where whatever it logs belongs.
    fn authorize<Cmd: Command>(
        &self,
        command: &Cmd,
        context: &ExecutionContext,
        span: &tracing::Span,
    ) -> Result<(), Error> {
        let Some(permission) = command.required_permission() else {
            return Ok(());
        };
        span.in_scope(|| {
            self.inner
                .authorizer
                .authorize(context.actor.as_ref(), command.name(), permission)
        })
        .map_err(|denied| Error::Unauthorized {
            permission: denied.permission,
            actor: context.actor.as_ref().map(|a| a.id.clone()),
        })
    }
}
