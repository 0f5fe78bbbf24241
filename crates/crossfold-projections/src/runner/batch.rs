//! What an owner commits: batches of events applied by the handler, a checkpoint moved past
//! events the filter skipped, events set aside, the start of a replay and the switch of a
//! rebuilt generation — each in one unit of work with its checkpoint, through
//! [`Applier::in_unit`].

use std::sync::Arc;

use crossfold_core::checkpoint::{
    CheckpointCommit, CheckpointError, DeadLetter, Lease, ProjectionRecord, ProjectionState,
    ReplayRequest, UnitOfWork,
};
use crossfold_core::{ErrorChain, EventBatch, Json, Position, Recorded, RecordedEvent, Upcasters};

use super::status::Shared;
use crate::projection::{ApplyContext, HandlerError, OnError, Projection};

/// Why a unit of work did not commit, as the owner acts on it.
pub(super) enum Step {
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

/// What the handler does inside a unit of work, before the checkpoint commits.
enum Work<'a, E> {
    /// Nothing: the commit only moves the checkpoint (and sets events aside).
    Nothing,
    /// Applies a batch of events.
    Apply(&'a ApplyContext, &'a [Recorded<E>]),
    /// Prepares an empty read model for the context's generation.
    Reset(&'a ApplyContext),
    /// Drops what belongs to an old generation.
    Retire(&'a ApplyContext, u64),
}

/// Applies events to one projection, each batch in a unit of work with its checkpoint, and
/// keeps the shared status up to date.
pub(super) struct Applier<P, C> {
    pub(super) projection: P,
    pub(super) upcasters: Upcasters,
    pub(super) checkpoints: C,
    pub(super) on_error: OnError,
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
}

impl<P, C> Applier<P, C>
where
    P: Projection<Unit = C::Unit>,
    C: UnitOfWork,
{
    fn context(&self, record: &ProjectionRecord) -> ApplyContext {
        ApplyContext::new(
            self.name.clone(),
            record.generation,
            record.serving_generation,
        )
    }

    /// Begins a unit of work, lets the handler do `work` through it, and commits it with
    /// `commit`. A unit that fails before its commit is dropped, which rolls it back.
    async fn in_unit(
        &self,
        lease: &Lease,
        work: Work<'_, P::Event>,
        commit: CheckpointCommit,
    ) -> Result<(), UnitError> {
        let mut unit = self.checkpoints.begin(lease).await?;
        match work {
            Work::Nothing => {}
            Work::Apply(context, events) => {
                self.projection.apply(&mut unit, context, events).await?;
            }
            Work::Reset(context) => self.projection.reset(&mut unit, context).await?,
            Work::Retire(context, old) => {
                self.projection.retire(&mut unit, context, old).await?;
            }
        }
        self.checkpoints.commit(lease, unit, commit).await?;
        Ok(())
    }

    /// A handler's rejection comes back to be dealt with; anything else says what the owner
    /// does next.
    fn classify(&self, error: UnitError) -> Result<HandlerError, Step> {
        match error {
            UnitError::Checkpoint(CheckpointError::Fenced { .. }) => Err(Step::Lost),
            UnitError::Checkpoint(e) => {
                self.shared.error("transient", &ErrorChain(&e));
                Err(Step::Retry)
            }
            UnitError::Handler(e) if e.is_transient() => {
                self.shared.error("transient", &ErrorChain(&e));
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
        let context = self.context(record);
        let commit = CheckpointCommit::new(position, record.generation, record.serving_generation);
        self.in_unit(lease, Work::Apply(&context, events), commit)
            .await
    }

    /// Moves the checkpoint without applying anything.
    pub(super) async fn advance(
        &self,
        lease: &Lease,
        record: &mut ProjectionRecord,
        position: Position,
    ) -> Result<(), Step> {
        let commit = CheckpointCommit::new(position, record.generation, record.serving_generation);
        match self.in_unit(lease, Work::Nothing, commit).await {
            Ok(()) => {
                record.position = position;
                self.shared.record(record);
                Ok(())
            }
            Err(e) => self.classify(e).map(drop),
        }
    }

    /// Applies a batch in one unit; if the handler rejects it, applies its events one at a
    /// time to find the one it rejects.
    pub(super) async fn apply_batch(
        &self,
        lease: &Lease,
        record: &mut ProjectionRecord,
        batch: EventBatch,
    ) -> Result<(), Step> {
        // Events of retired types the upcasters skip are left out; the checkpoint still moves
        // past them.
        let decoded: Result<Vec<Recorded<P::Event>>, _> = batch
            .events
            .iter()
            .filter(|raw| !self.upcasters.is_skipped(raw))
            .map(|raw| self.upcasters.decode::<P::Event, Json>(&Json, raw))
            .collect();
        if let Ok(events) = &decoded
            && events.is_empty()
            && !batch.events.is_empty()
        {
            // Every event of the batch is of a retired type: nothing to apply.
            return self.advance(lease, record, batch.position).await;
        }
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
            let event = if self.upcasters.is_skipped(raw) {
                None
            } else {
                Some(self.upcasters.decode::<P::Event, Json>(&Json, raw))
            };
            let rejected = match event {
                // Skipped (a retired type): only the checkpoint moves.
                None => {
                    self.advance(lease, record, position).await?;
                    continue;
                }
                Some(Ok(event)) => {
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
                        Err(e) => ErrorChain(&self.classify(e)?).to_string(),
                    }
                }
                Some(Err(e)) => ErrorChain(&e).to_string(),
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
        match self.on_error {
            OnError::Fail => {
                tracing::error!(projection = %self.name, position = %raw.position, %error, "crossfold: projection failed at an event");
                self.shared.error("handler", &error);
                self.shared.failed_at(raw.position);
                Err(Step::Failed)
            }
            OnError::DeadLetter => {
                tracing::warn!(projection = %self.name, position = %raw.position, %error, "crossfold: event set aside as a dead letter");
                self.shared.error("dead_letter", &error);
                let mut commit =
                    CheckpointCommit::new(position, record.generation, record.serving_generation);
                commit
                    .dead_letters
                    .push(DeadLetter::new(self.name.clone(), raw, error));
                match self.in_unit(lease, Work::Nothing, commit).await {
                    Ok(()) => {
                        record.position = position;
                        record.dead_letters = record.dead_letters.saturating_add(1);
                        self.shared.record(record);
                        Ok(())
                    }
                    Err(e) => self.classify(e).map(drop),
                }
            }
        }
    }

    /// Starts a reset or a rebuild: an empty model for the generation, checkpoint at the start.
    pub(super) async fn replay(
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
        let mut commit =
            CheckpointCommit::new(Position::START, generation, record.serving_generation);
        commit.clears_replay = true;
        match self.in_unit(lease, Work::Reset(&context), commit).await {
            Ok(()) => {
                tracing::info!(projection = %self.name, generation, kind = replay.as_str(), "crossfold: projection replays from the start");
                record.position = Position::START;
                record.generation = generation;
                record.replay = None;
                self.shared.record(record);
                Ok(())
            }
            Err(e) => {
                let error = self.classify(e)?;
                self.shared.error("handler", &ErrorChain(&error));
                Err(Step::Failed)
            }
        }
    }

    /// A rebuilt generation has caught up: it becomes the serving one.
    pub(super) async fn switch(
        &self,
        lease: &Lease,
        record: &mut ProjectionRecord,
    ) -> Result<(), Step> {
        let old = record.serving_generation;
        let context = self.context(record);
        let commit = CheckpointCommit::new(record.position, record.generation, record.generation);
        match self
            .in_unit(lease, Work::Retire(&context, old), commit)
            .await
        {
            Ok(()) => {
                tracing::info!(projection = %self.name, generation = record.generation, "crossfold: rebuilt projection now serves");
                record.serving_generation = record.generation;
                self.shared.record(record);
                self.shared.set_state(ProjectionState::Live);
                Ok(())
            }
            Err(e) => {
                let error = self.classify(e)?;
                self.shared.error("handler", &ErrorChain(&error));
                Err(Step::Failed)
            }
        }
    }
}
