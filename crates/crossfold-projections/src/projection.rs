//! What a user writes: a [`Projection`] — the events it wants and how it applies them.

use std::future::Future;

use crossfold_core::checkpoint::CheckpointError;
use crossfold_core::{BoxError, DomainEvent, LogFilter, Recorded, StoreError, Upcasters};

/// Where a batch is being applied: which projection, which generation of its read model.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyContext {
    /// The projection's name.
    pub name: String,
    /// The generation the events are applied to. It starts at 1 and a blue/green rebuild
    /// builds the next one: a projection that keeps one table per generation writes to this
    /// one's.
    pub generation: u64,
    /// The generation readers read now: lower than `generation` while a rebuild catches up.
    pub serving_generation: u64,
}

impl ApplyContext {
    /// A context (the runner builds it; tests of handlers may too).
    pub fn new(name: impl Into<String>, generation: u64, serving_generation: u64) -> Self {
        Self {
            name: name.into(),
            generation,
            serving_generation,
        }
    }

    /// Whether a rebuild is replaying into a generation readers do not see yet.
    pub fn is_rebuilding(&self) -> bool {
        self.generation != self.serving_generation
    }
}

/// Why a handler could not apply a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Retrying may succeed (the read model's database is away, a lock timed out): the runner
    /// rolls the batch back and applies it again after a backoff.
    #[error("transient failure")]
    Transient(#[source] BoxError),
    /// The event cannot be applied (a bug, a violated constraint, bad data): the projection
    /// fails at it, or sets it aside in dead-letter mode.
    #[error(transparent)]
    Rejected(BoxError),
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        HandlerError::Transient(error.into())
    }

    /// A failure that retrying will not cure.
    pub fn rejected(error: impl Into<BoxError>) -> Self {
        HandlerError::Rejected(error.into())
    }

    /// Whether the runner retries it.
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient(_))
    }
}

/// A store error is retried when the store failed for a moment or the streams changed (the
/// handler runs again on the new versions).
impl From<StoreError> for HandlerError {
    fn from(error: StoreError) -> Self {
        if error.is_transient() || error.is_conflict() {
            HandlerError::Transient(Box::new(error))
        } else {
            HandlerError::Rejected(Box::new(error))
        }
    }
}

/// A checkpoint store error is transient when the store says so.
impl From<CheckpointError> for HandlerError {
    fn from(error: CheckpointError) -> Self {
        if error.is_transient() {
            HandlerError::Transient(Box::new(error))
        } else {
            HandlerError::Rejected(Box::new(error))
        }
    }
}

/// A read model fed from the event log.
///
/// The runner hands [`apply`](Self::apply) the matching events in log order, in batches,
/// decoded into [`Event`](Self::Event) (after the [`upcasters`](Self::upcasters)), with a
/// [`Unit`](Self::Unit) of the checkpoint store: what the handler writes through it commits
/// together with the checkpoint. With the PostgreSQL checkpoint store the unit is a
/// transaction, and the read model applies every event exactly once whatever crashes; writes
/// that go elsewhere (an e-mail, another database) happen at least once, and must tolerate
/// repetition (see the guide).
///
/// A batch that returns an error is rolled back as a whole; the runner then applies its events
/// one at a time to find the one that fails.
pub trait Projection: Send + Sync + 'static {
    /// The events it reads, decoded from their payloads. An event of the filter that does not
    /// decode into it is an error like one the handler returns.
    type Event: DomainEvent;

    /// The checkpoint store's unit of work (`MemoryUnit`, `PgUnit`, ...).
    type Unit: Send;

    /// A name unique among the projections of a store; its checkpoint and status are kept
    /// under it.
    fn name(&self) -> &str;

    /// Which events of the log it reads.
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    /// Steps upgrading old payloads before they are decoded.
    fn upcasters(&self) -> Upcasters {
        Upcasters::new()
    }

    /// Applies a batch of events (at least one) through `unit`.
    fn apply(
        &self,
        unit: &mut Self::Unit,
        context: &ApplyContext,
        events: &[Recorded<Self::Event>],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Prepares an empty read model for `context.generation` before a replay from the start:
    /// a reset (same generation) clears the model; a rebuild (a new generation) creates the new
    /// generation's tables. Committed with the checkpoint moving back to the start. Does
    /// nothing by default.
    fn reset(
        &self,
        unit: &mut Self::Unit,
        context: &ApplyContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (unit, context);
        async { Ok(()) }
    }

    /// Called once a rebuilt generation has caught up, in the unit that makes it the serving
    /// one: drop what belongs to `old_generation`. Does nothing by default.
    fn retire(
        &self,
        unit: &mut Self::Unit,
        context: &ApplyContext,
        old_generation: u64,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (unit, context, old_generation);
        async { Ok(()) }
    }
}

/// What the runner does with an event the handler rejects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnError {
    /// The projection stops at the event (state `failed`, error and position kept) until it is
    /// resumed or restarted; the other projections go on.
    #[default]
    Fail,
    /// The event and the error go to the dead letters, committed with the checkpoint moving
    /// past it, and the projection goes on.
    DeadLetter,
}

/// How the runner runs one projection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionOptions {
    /// Events per batch (one unit of work each).
    pub batch_size: usize,
    /// What a rejected event does.
    pub on_error: OnError,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        Self {
            batch_size: 512,
            on_error: OnError::Fail,
        }
    }
}

impl ProjectionOptions {
    /// Sets the batch size (at least 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets what a rejected event does.
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }
}
