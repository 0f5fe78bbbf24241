//! `execute()`: read → fold → decide → append, with retries, caches and idempotency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossfold_core::{
    AppendRequest, AppendStream, Codec, Command, DomainEvent, Error, EventData, EventId,
    EventStore, EventType, ExpectedVersion, Json, Metadata, Position, ReadSet, Recorded,
    RecordedEvent, StoreError, StreamConflict, StreamId, StreamRead, StreamVersion, Timestamp,
    Upcasters, encode_event,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::cache::ClockCache;
use crate::context::{ActorPermissions, Authorizer, ExecutionContext};
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
    pub fn decode<E: DomainEvent>(&self) -> Result<Vec<Recorded<E>>, crossfold_core::CodecError> {
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
    Transient(StoreError),
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(value: Error) -> Self {
        match value {
            Error::Unavailable(error) => Failure::Transient(error),
            other => Failure::Fatal(other),
        }
    }
}

const IDEMPOTENCY_PREFIX: &str = "$idempotency-";
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
    /// business errors are returned at once. On any error nothing was written (a timeout is
    /// the exception: the append may have committed; re-running an idempotent command is
    /// safe).
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
        let span = tracing::debug_span!("crossfold.execute", command = name);
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
        if waited {
            // Waking the next waiter puts it in this worker's LIFO slot, which other workers
            // cannot steal from; without a yield, commands queued on the same streams gather
            // on one worker while the others idle. Yielding lets the runtime spread them.
            tokio::task::yield_now().await;
        }
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(Error::Rejected { .. } | Error::Validation(_) | Error::StreamNotFound(_)) => {
                Outcome::Rejected
            }
            Err(Error::Conflict { .. }) => Outcome::Conflict,
            Err(Error::Unauthorized { .. }) => Outcome::Unauthorized,
            Err(Error::Timeout(_)) => Outcome::Timeout,
            Err(_) => Outcome::Error,
        };
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
            Some(key) => Some(StreamId::new(format!("{IDEMPOTENCY_PREFIX}{key}"))?),
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
        let policy = self.inner.retry;
        // `None` means "fold again from the store, trusting no cache" (after a failure that
        // leaves our view in doubt); the first load may start from the caches.
        let mut loaded = Some(self.load(command, &declared, true).await);
        let mut conflicts = 0u32;
        loop {
            *attempts += 1;
            let fresh = match loaded.take() {
                Some(Ok(work)) => Ok(work),
                Some(Err(error)) => Err(error),
                None => self.load(command, &declared, false).await,
            };
            let mut work = match fresh {
                Ok(work) => work,
                Err(Error::Unavailable(error)) if *attempts < policy.max_attempts => {
                    metrics.retries.increment(1);
                    tracing::debug!(%error, attempt = *attempts, "store unavailable, retrying");
                    tokio::time::sleep(policy.delay(*attempts)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let failure = match self
                .attempt(command, &mut work, &metadata, marker.as_ref(), *attempts)
                .await
            {
                Ok(mut executed) => {
                    executed.conflicts = conflicts;
                    self.keep::<Cmd>(&declared, work);
                    return Ok(executed);
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::Fatal(error) => {
                    self.keep::<Cmd>(&declared, work);
                    return Err(error);
                }
                Failure::Replay(marker) => {
                    let mut replayed = self.replay(&marker, *attempts).await?;
                    replayed.conflicts = conflicts;
                    return Ok(replayed);
                }
                Failure::Stale { rebuild } => {
                    // The decision was made on a state that turned out to be behind; it has
                    // been refreshed, so decide again (not a conflict: nothing was written).
                    if *attempts >= policy.max_attempts {
                        return Err(Error::InvalidState(
                            "streams kept changing while a refusal was being confirmed".into(),
                        ));
                    }
                    if !rebuild {
                        loaded = Some(Ok(work));
                    }
                }
                Failure::Conflict(found) => {
                    conflicts += 1;
                    metrics.conflicts.increment(1);
                    if *attempts >= policy.max_attempts {
                        return Err(Error::Conflict {
                            conflicts: found,
                            attempts: *attempts,
                        });
                    }
                    metrics.retries.increment(1);
                    let contended = work.verified;
                    match self.refresh(command, &mut work, Some(&found)).await {
                        Ok(Refresh::Changed | Refresh::Unchanged) => loaded = Some(Ok(work)),
                        Ok(Refresh::Rebuild) => {}
                        Err(error) if error.is_transient() => {}
                        Err(error) => return Err(error),
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
                        return Err(Error::from(error));
                    }
                    metrics.retries.increment(1);
                    tracing::debug!(%error, attempt = *attempts, "transient store error, retrying");
                    // The append may or may not have committed: trust no cached stream of
                    // this read set.
                    for id in work.read_set.ids() {
                        self.inner.streams.remove(id);
                    }
                    tokio::time::sleep(policy.delay(*attempts)).await;
                }
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

        // Encode straight into the request, one entry per stream read (read-only streams carry
        // their version as a condition), remembering each event's stream and place in it.
        let ids = work.read_set.ids();
        let stream_count = ids.len();
        let mut streams: Vec<AppendStream> = Vec::with_capacity(stream_count + 1);
        streams.extend(
            ids.iter()
                .zip(&work.versions)
                .map(|(id, version)| AppendStream {
                    stream: id.clone(),
                    expected: ExpectedVersion::Exact(*version),
                    events: Vec::new(),
                }),
        );
        let mut emitted: Vec<(usize, usize, Cmd::Event)> = Vec::with_capacity(decided.len());
        // The events as they will be recorded, in emit order; versions and positions are
        // filled in once the store has answered.
        let mut last_id = work.floor;
        for (stream, event) in decided {
            let id = match last_id {
                Some(floor) => EventId::generate_after(floor),
                None => EventId::generate(),
            };
            last_id = Some(id);
            let data = encode_event(&self.inner.codec, &event, id, metadata.clone())
                .map_err(|e| Failure::Fatal(e.into()))?;
            let events = &mut streams[stream].events;
            emitted.push((stream, events.len(), event));
            events.push(data);
        }
        pack_payloads(&mut streams);
        let mut recorded: Vec<RecordedEvent> = emitted
            .iter()
            .map(|(stream, k, _)| {
                streams[*stream].events[*k].clone().record(
                    ids[*stream].clone(),
                    StreamVersion::EMPTY,
                    Position::START,
                )
            })
            .collect();
        // Where each stream's events start among the positions the store returns (it returns
        // them in request order).
        let mut first_position = 0;
        let mut starts: Vec<usize> = Vec::with_capacity(stream_count);
        for s in &streams {
            starts.push(first_position);
            first_position += s.events.len();
        }
        if let Some(marker) = marker {
            let record = IdempotencyRecord {
                command: command.name().to_owned(),
                writes: streams
                    .iter()
                    .zip(&work.versions)
                    .filter(|(s, _)| !s.events.is_empty())
                    .map(|(s, version)| WrittenRange {
                        stream: s.stream.clone(),
                        first: version.next(),
                        count: s.events.len() as u64,
                    })
                    .collect(),
            };
            let payload = Json
                .encode(&record)
                .map_err(|e| Failure::Fatal(Error::InvalidState(e.to_string())))?;
            streams.push(AppendStream {
                stream: marker.clone(),
                expected: ExpectedVersion::NoStream,
                events: vec![EventData {
                    event_id: EventId::generate(),
                    event_type: EventType::from_static(IDEMPOTENCY_EVENT),
                    schema_version: 1,
                    payload,
                    metadata: metadata.clone(),
                }],
            });
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
            Err(error) if error.is_transient() => return Err(Failure::Transient(error)),
            Err(error) => return Err(Failure::Fatal(Error::from(error))),
        };
        if appended.positions.len() < first_position || appended.versions.len() < stream_count {
            return Err(Failure::Fatal(Error::InvalidState(
                "store reported fewer positions or versions than were appended".into(),
            )));
        }

        // Record what was written: the events as stored, the new state, the new versions.
        for ((stream, k, event), raw) in emitted.into_iter().zip(recorded.iter_mut()) {
            raw.stream_version = work.versions[stream].advance(k as u64 + 1);
            raw.position = appended.positions[starts[stream] + k];
            let event = Recorded::new(event, raw);
            match work.parts.as_mut() {
                Some(parts) => {
                    Cmd::apply(&mut parts[stream].state, &event);
                    parts[stream].floor = Some(raw.event_id);
                }
                None => Cmd::apply(&mut work.state, &event),
            }
        }
        if work.parts.is_none() {
            for (i, id) in work.read_set.ids().iter().enumerate() {
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
        work.versions
            .copy_from_slice(&appended.versions[..stream_count]);
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
            .await?;
        let Some(first) = stream.events.first() else {
            return Err(Error::InvalidState(format!(
                "idempotency record {marker} conflicted but reads empty"
            )));
        };
        let record: IdempotencyRecord =
            crossfold_core::decode_payload(&first.payload).map_err(|e| {
                Error::InvalidState(format!("unreadable idempotency record {marker}: {e}"))
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
            .await?
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

/// Moves the payloads of a command's events into one shared buffer.
///
/// A payload on its own keeps an allocation plus the reference-count header it gets once it is
/// shared (by the request and the recorded events, and then by the store), which for small
/// events weighs more than their data. Packed, a command's events keep one of each, in stores
/// that hold payloads in memory. Large writes keep their buffers rather than copy them.
fn pack_payloads(streams: &mut [AppendStream]) {
    const LIMIT: usize = 64 << 10;
    let payloads = || {
        streams
            .iter()
            .flat_map(|s| &s.events)
            .map(|e| &e.payload.bytes)
    };
    if payloads().nth(1).is_none() {
        return;
    }
    let total: usize = payloads().map(|b| b.len()).sum();
    if total > LIMIT {
        return;
    }
    let mut buffer = Vec::with_capacity(total);
    for bytes in payloads() {
        buffer.extend_from_slice(bytes);
    }
    let packed = bytes::Bytes::from(buffer);
    let mut start = 0;
    for event in streams.iter_mut().flat_map(|s| &mut s.events) {
        let end = start + event.payload.bytes.len();
        event.payload.bytes = packed.slice(start..end);
        start = end;
    }
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
