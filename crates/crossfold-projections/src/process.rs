//! Process managers (sagas): projections that react to events with commands and deadlines.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use crossfold_core::checkpoint::ProjectionControl;
use crossfold_core::deadline::{Deadline, DeadlineId, DeadlineStore};
use crossfold_core::{
    Codec, Command, DomainEvent, EventData, EventId, EventStore, ExpectedVersion, Json, LogFilter,
    Payload, Position, Recorded, StreamId, StreamRead, StreamVersion, Timestamp, Upcasters,
};
use crossfold_executor::{Error, Executed, ExecutionContext, Executor};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::projection::{ApplyContext, HandlerError, Projection};

/// Process managers (sagas): projections whose handler reacts to events by executing commands
/// and scheduling deadlines.
///
/// A [`ProcessManager`] says which events it follows, optionally which streams make up its
/// state when an event arrives (folded like a command's state, up to the triggering event), and
/// how it reacts. [`ProcessManagerProjection`] turns it into a [`Projection`] the runner drives,
/// with these guarantees:
///
/// * **A command runs once per triggering event.** Each command a reaction executes carries an
///   idempotency key derived from the process manager's name, the triggering event's id and the
///   command's place in the reaction. An event delivered again — the process died between the
///   command and the checkpoint, a batch was retried — runs the reaction again, and the
///   executor returns the first outcome of each command instead of writing twice. Deadlines
///   are scheduled with ids derived the same way, so scheduling is repeated harmlessly too.
/// * **Causation and correlation.** Every command runs with the triggering event's id as its
///   causation id and the event's correlation id carried on; a deadline records both for the
///   command that fires it.
/// * **Replays do nothing again.** A reset or rebuild replays the log from the start. Before
///   it starts, the adapter records the position it had handled (in the system stream
///   `$process-<name>` of the event store), and reactions to events at or below it are
///   suppressed: a replay neither repeats a command nor retries one that was refused.
/// * **Failures follow the projection's error policy.** A reaction returns a
///   [`HandlerError`]: transient failures (see [`command_failure`]) are retried by the runner,
///   others fail the process manager or send the event to the dead letters
///   ([`OnError`](crate::OnError)).
pub trait ProcessManager: Send + Sync + 'static {
    /// The events it reads (and folds its state from).
    type Event: DomainEvent;
    /// Its state when an event arrives; `()` for a process manager without one.
    type State: Default + Send + Sync;

    /// A name unique among the projections of a store: its checkpoint, its commands'
    /// idempotency keys and its deadlines' ids derive from it. Keep it short (at most 64
    /// bytes) and never rename a running process manager.
    fn name(&self) -> &str;

    /// The events it reacts to.
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    /// Steps upgrading old payloads before they are decoded.
    fn upcasters(&self) -> Upcasters {
        Upcasters::new()
    }

    /// The streams whose events, up to and including `event`, make its state when it reacts to
    /// `event` (for example the order's stream). None by default: the state stays empty.
    fn state_streams(&self, event: &Recorded<Self::Event>) -> Vec<StreamId> {
        let _ = event;
        Vec::new()
    }

    /// Folds one event of the state streams into the state, in event-id order.
    fn apply(state: &mut Self::State, event: &Recorded<Self::Event>) {
        let _ = (state, event);
    }

    /// Reacts to `event`, given the state folded up to it, through `process`.
    fn react<S: EventStore, C: Codec, D: DeadlineStore>(
        &self,
        state: &Self::State,
        event: &Recorded<Self::Event>,
        process: &mut Process<'_, S, C, D>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Classifies a command's failure for the runner: transient (worth executing again: a store
/// failure, streams that kept changing, or an outcome in doubt, which the retry resolves through
/// the idempotency key) or not.
pub fn command_failure(error: Error) -> HandlerError {
    if error.is_retryable() {
        HandlerError::Transient(Box::new(error))
    } else {
        HandlerError::Rejected(Box::new(error))
    }
}

/// What a reaction can do: execute commands and schedule or cancel deadlines, all tied to the
/// triggering event.
pub struct Process<'a, S, C, D> {
    executor: &'a Executor<S, C>,
    deadlines: &'a D,
    name: &'a str,
    event_id: EventId,
    correlation_id: Option<Uuid>,
    recorded_at: Timestamp,
    commands: u32,
}

impl<S: EventStore, C: Codec, D: DeadlineStore> Process<'_, S, C, D> {
    /// The triggering event's id.
    pub fn event_id(&self) -> EventId {
        self.event_id
    }

    /// The context commands run in: the triggering event as causation, its correlation id.
    pub fn context(&self) -> ExecutionContext {
        let mut context = ExecutionContext::new().causation_id(self.event_id.as_uuid());
        context.correlation_id = self.correlation_id;
        context
    }

    /// Executes `command` under an idempotency key derived from the triggering event and the
    /// number of commands this reaction executed before it: executing the reaction again
    /// returns each command's first outcome ([`Executed::replayed`]) without writing. A
    /// reaction must therefore execute the same commands in the same order each time it runs
    /// for an event (decide from the event and the folded state, not from the clock).
    /// Business refusals are returned like the executor's (and are not remembered: a refused
    /// command runs again on redelivery); pass other failures to the runner with
    /// [`command_failure`].
    pub async fn execute<Cmd: Command>(&mut self, command: Cmd) -> Result<Executed, Error> {
        let key = format!("process/{}/{}/{}", self.name, self.event_id, self.commands);
        self.commands = self.commands.saturating_add(1);
        self.executor
            .execute_with(command, &self.context().idempotency_key(key))
            .await
    }

    /// The id of the deadline of `kind` this process manager schedules when reacting to the
    /// event `cause` (to cancel it later, from a state that remembers `cause`).
    pub fn deadline_id(&self, kind: &str, cause: EventId) -> Result<DeadlineId, HandlerError> {
        DeadlineId::for_event(&format!("{}/{kind}", self.name), cause)
            .map_err(HandlerError::rejected)
    }

    /// Schedules a deadline of `kind` due `after` the triggering event was recorded, with
    /// `payload` for the handler that fires it. Its id derives from the triggering event, so
    /// scheduling it again (on redelivery) changes nothing. Returns its id.
    pub async fn schedule(
        &mut self,
        kind: &str,
        after: Duration,
        payload: serde_json::Value,
    ) -> Result<DeadlineId, HandlerError> {
        let id = self.deadline_id(kind, self.event_id)?;
        let deadline = Deadline::new(id.clone(), kind, self.recorded_at.saturating_add(after))
            .payload(payload)
            .caused_by(self.event_id.as_uuid(), self.correlation_id);
        self.deadlines.schedule(deadline).await?;
        Ok(id)
    }

    /// Cancels a pending deadline. Returns whether it was pending.
    pub async fn cancel(&mut self, id: &DeadlineId) -> Result<bool, HandlerError> {
        Ok(self.deadlines.cancel(id).await?)
    }
}

/// The record of a replay, in the process manager's system stream.
#[derive(Serialize, Deserialize)]
struct ReplayMark {
    handled: Position,
}

const REPLAY_EVENT: &str = "$ProcessReplayed";

/// A [`ProcessManager`] as a [`Projection`]: give it to a
/// [`ProjectionRunner`](crate::ProjectionRunner) like any projection. `U` is the checkpoint
/// store's unit of work (the process manager writes nothing through it), `K` the checkpoint
/// store, read when a replay starts to record how far the process manager had got.
pub struct ProcessManagerProjection<P, S, C, D, K, U> {
    manager: P,
    executor: Executor<S, C>,
    deadlines: D,
    checkpoints: K,
    mark_stream: Result<StreamId, HandlerError>,
    /// Reactions to events at or below this position are suppressed; `None` until read.
    handled_before_replay: tokio::sync::Mutex<Option<(StreamVersion, Position)>>,
    /// The highest position this process reacted to (a replay records at least it).
    reacted: std::sync::Mutex<Position>,
    _unit: PhantomData<fn() -> U>,
}

impl<P, S, C, D, K, U> ProcessManagerProjection<P, S, C, D, K, U>
where
    P: ProcessManager,
    S: EventStore + 'static,
    C: Codec + 'static,
    D: DeadlineStore + 'static,
    K: ProjectionControl + 'static,
    U: Send + 'static,
{
    /// `manager`, executing its commands through `executor`, scheduling its deadlines in
    /// `deadlines`, run with the checkpoint store `checkpoints`.
    pub fn new(manager: P, executor: Executor<S, C>, deadlines: D, checkpoints: K) -> Self {
        let mark_stream =
            StreamId::system(format!("process-{}", manager.name())).map_err(HandlerError::rejected);
        Self {
            manager,
            executor,
            deadlines,
            checkpoints,
            mark_stream,
            handled_before_replay: tokio::sync::Mutex::new(None),
            reacted: std::sync::Mutex::new(Position::START),
            _unit: PhantomData,
        }
    }

    /// The process manager.
    pub fn manager(&self) -> &P {
        &self.manager
    }

    fn mark_stream(&self) -> Result<&StreamId, HandlerError> {
        self.mark_stream.as_ref().map_err(|e| {
            HandlerError::rejected(format!("process manager name makes no stream id: {e}"))
        })
    }

    /// The position below which reactions are suppressed, from the mark stream. Read again
    /// whenever the stream has grown since this process last read it: another process may
    /// have replayed while it held the lease.
    async fn suppressed_up_to(&self) -> Result<Position, HandlerError> {
        let stream = self.mark_stream()?;
        let store = self.executor.store();
        let version = store.stream_version(stream).await?;
        let mut cached = self.handled_before_replay.lock().await;
        if let Some((seen, position)) = *cached
            && seen == version
        {
            return Ok(position);
        }
        let events = store
            .read_stream(stream, StreamVersion::EMPTY, usize::MAX)
            .await?
            .events;
        let mut handled = Position::START;
        for event in &events {
            let mark: ReplayMark =
                crossfold_core::decode_payload(&event.payload).map_err(HandlerError::Rejected)?;
            handled = handled.max(mark.handled);
        }
        let read = events
            .last()
            .map_or(StreamVersion::EMPTY, |e| e.stream_version);
        *cached = Some((read, handled));
        Ok(handled)
    }

    fn reacted(&self) -> Position {
        *self
            .reacted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_reacted(&self, position: Position) {
        let mut reacted = self
            .reacted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *reacted = (*reacted).max(position);
    }

    /// The state folded from the state streams' events up to and including `event`.
    async fn state_for(&self, event: &Recorded<P::Event>) -> Result<P::State, HandlerError> {
        let mut state = P::State::default();
        let streams = self.manager.state_streams(event);
        if streams.is_empty() {
            return Ok(state);
        }
        let reads: Vec<StreamRead> = streams
            .into_iter()
            .map(|stream| StreamRead {
                stream,
                after: StreamVersion::EMPTY,
                limit: usize::MAX,
            })
            .collect();
        let mut raw: Vec<_> = self
            .executor
            .store()
            .read_streams(&reads)
            .await?
            .into_iter()
            .flat_map(|s| s.events)
            .filter(|e| e.position <= event.position)
            .collect();
        // Log order, as the events were delivered: the same state on every redelivery.
        raw.sort_by_key(|e| e.position);
        raw.dedup_by_key(|e| e.event_id);
        let upcasters = self.manager.upcasters();
        for e in raw.iter().filter(|e| !upcasters.is_skipped(e)) {
            let decoded: Recorded<P::Event> = upcasters
                .decode(&Json, e)
                .map_err(|e| HandlerError::Rejected(Box::new(e)))?;
            P::apply(&mut state, &decoded);
        }
        Ok(state)
    }
}

impl<P, S, C, D, K, U> Projection for ProcessManagerProjection<P, S, C, D, K, U>
where
    P: ProcessManager,
    S: EventStore + 'static,
    C: Codec + 'static,
    D: DeadlineStore + 'static,
    K: ProjectionControl + 'static,
    U: Send + 'static,
{
    type Event = P::Event;
    type Unit = U;

    fn name(&self) -> &str {
        self.manager.name()
    }

    fn filter(&self) -> LogFilter {
        self.manager.filter()
    }

    fn upcasters(&self) -> Upcasters {
        self.manager.upcasters()
    }

    async fn apply(
        &self,
        _unit: &mut U,
        _context: &ApplyContext,
        events: &[Recorded<P::Event>],
    ) -> Result<(), HandlerError> {
        let suppressed = self.suppressed_up_to().await?;
        for event in events {
            if event.position <= suppressed {
                continue;
            }
            let state = self.state_for(event).await?;
            let mut process = Process {
                executor: &self.executor,
                deadlines: &self.deadlines,
                name: self.manager.name(),
                event_id: event.event_id,
                correlation_id: event.metadata.correlation_id,
                recorded_at: event.metadata.recorded_at,
                commands: 0,
            };
            self.manager.react(&state, event, &mut process).await?;
            self.note_reacted(event.position);
        }
        Ok(())
    }

    /// Before a replay from the start: records the position handled so far (the checkpoint,
    /// or further if this process reacted beyond it), so the replay suppresses reactions up to
    /// it.
    async fn reset(&self, _unit: &mut U, _context: &ApplyContext) -> Result<(), HandlerError> {
        let checkpoint = self
            .checkpoints
            .get(self.manager.name())
            .await?
            .map_or(Position::START, |r| r.position);
        let handled = self
            .suppressed_up_to()
            .await?
            .max(checkpoint)
            .max(self.reacted());
        let payload = serde_json::to_vec(&ReplayMark { handled })
            .map_err(|e| HandlerError::Rejected(Box::new(e)))?;
        let stream = self.mark_stream()?.clone();
        self.executor
            .store()
            .append(crossfold_core::AppendRequest::new().stream(
                stream,
                ExpectedVersion::Any,
                vec![EventData::new(REPLAY_EVENT, Payload::json(payload))],
            ))
            .await?;
        // Read back (with the mark's version) before the next batch.
        *self.handled_before_replay.lock().await = None;
        Ok(())
    }
}
