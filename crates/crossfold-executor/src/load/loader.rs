//! The loader: what is cached between executions (folded states and recent stream events) and
//! how the steps of an execution reach it, the store and the codec.

use std::sync::OnceLock;

use crossfold_core::{
    Codec, Command, EventStore, Fold, ReadSet, Recorded, RecordedEvent, StoreError, StreamEvents,
    StreamId, StreamRead, StreamVersion, Upcasters,
};

use crate::error::Error;
use crate::metrics::CacheMetrics;
use crate::snapshots::{Format, Keeper};

use super::event_cache::EventCache;
use super::state_cache::StateCache;
use super::working::Working;

/// What the steps of an execution work with — the store, the codec, and the loader with its
/// caches — reached through one reference, so that every future on the way down holds one
/// pointer for all three (as a method of the executor's own type would), however deep it nests.
pub(crate) trait Backend {
    type Store: EventStore;
    type Codec: Codec;
    fn store(&self) -> &Self::Store;
    fn codec(&self) -> &Self::Codec;
    fn loader(&self) -> &Loader;
}

/// Builds and refreshes executions' views, and owns what is cached between them: folded states
/// and recent stream events. The store and the codec are the executor's; the steps that read
/// reach all three through a [`Backend`].
pub(crate) struct Loader {
    pub(super) states: StateCache,
    pub(super) events: EventCache,
    upcasters: Upcasters,
    max_discovery_rounds: u32,
    metrics: OnceLock<CacheMetrics>,
    snapshots: Option<Keeper>,
}

impl Loader {
    pub(crate) fn new(
        upcasters: Upcasters,
        state_cache_bytes: usize,
        event_cache_bytes: usize,
        max_discovery_rounds: u32,
        snapshots: Option<Keeper>,
    ) -> Self {
        Self {
            states: StateCache::new(state_cache_bytes),
            events: EventCache::new(event_cache_bytes),
            upcasters,
            max_discovery_rounds,
            metrics: OnceLock::new(),
            snapshots,
        }
    }

    /// Where snapshots of state `St` are kept and how, if they are.
    pub(super) fn snapshot_format<St: 'static>(&self) -> Option<(&Keeper, &Format)> {
        let keeper = self.snapshots.as_ref()?;
        Some((keeper, keeper.format::<St>()?))
    }

    /// Waits for the snapshots being written.
    pub(crate) async fn snapshots_written(&self) {
        if let Some(keeper) = &self.snapshots {
            keeper.settled().await;
        }
    }

    /// Bytes held by the state cache and the event cache.
    pub(crate) fn cache_usage(&self) -> (usize, usize) {
        (self.states.used(), self.events.used())
    }

    pub(crate) fn clear_caches(&self) {
        self.states.clear();
        self.events.clear();
    }

    /// Resolved against the recorder installed when first used, like the command metrics.
    pub(super) fn metrics(&self) -> &CacheMetrics {
        self.metrics.get_or_init(CacheMetrics::new)
    }

    /// Keeps what this execution knows for the next command: each stream's part, or the state
    /// of the combination.
    /// Takes a snapshot first if the state's policy says one is due.
    pub(crate) fn keep<Cmd: Command>(&self, declared: &ReadSet, mut work: Working<Cmd::State>) {
        if let Some((keeper, format)) = self.snapshot_format::<Cmd::State>() {
            super::snapshot::take::<Cmd>(keeper, format, declared, &mut work);
        }
        self.states.keep::<Cmd>(declared, work);
    }

    /// Adds events written after `previous` to a cached stream, if the cache holds exactly
    /// that version (or the stream was empty); otherwise drops the stale entry.
    pub(crate) fn extend_cached_stream(
        &self,
        id: &StreamId,
        previous: StreamVersion,
        events: Vec<RecordedEvent>,
    ) {
        self.events.extend(id, previous, events);
    }

    /// Drops the cached events of streams an append may have changed unseen.
    pub(crate) fn forget_streams<'s>(&self, ids: impl IntoIterator<Item = &'s StreamId>) {
        self.events.forget(ids);
    }

    pub(super) fn check_discovery_rounds<Cmd: Command>(
        &self,
        command: &Cmd,
        rounds: u32,
    ) -> Result<(), Error> {
        if rounds > self.max_discovery_rounds {
            return Err(Error::DiscoveryLimit {
                command: command.name(),
                rounds: self.max_discovery_rounds,
            });
        }
        Ok(())
    }

    /// Decodes events and folds them into `state`, in the order given (events of retired
    /// types the upcasters skip are left out).
    pub(super) fn fold_into<'a, C: Codec, Cmd: Command>(
        &self,
        codec: &C,
        state: &mut Cmd::State,
        events: impl IntoIterator<Item = &'a RecordedEvent>,
    ) -> Result<(), Error> {
        for raw in events {
            if self.upcasters.is_skipped(raw) {
                continue;
            }
            let event = self.upcasters.decode::<Cmd::Event, C>(codec, raw)?;
            state.apply(&event);
        }
        Ok(())
    }

    /// Decodes one stored event (upcast first) into the command's event type; `None` for an
    /// event of a retired type the upcasters skip.
    pub(super) fn decode<C: Codec, Cmd: Command>(
        &self,
        codec: &C,
        raw: &RecordedEvent,
    ) -> Result<Option<Recorded<Cmd::Event>>, Error> {
        if self.upcasters.is_skipped(raw) {
            return Ok(None);
        }
        Ok(Some(self.upcasters.decode::<Cmd::Event, C>(codec, raw)?))
    }
}

/// Reads streams, insisting the store answers each read.
pub(super) async fn read_exactly<S: EventStore>(
    store: &S,
    reads: &[StreamRead],
) -> Result<Vec<StreamEvents>, Error> {
    // Attempts are counted by the caller, which re-wraps the error with them.
    let read = (store.read_streams(reads).await).map_err(|e| Error::store(e, 0))?;
    if read.len() != reads.len() {
        return Err(Error::store(
            StoreError::Backend(
                "store returned a different number of streams than were read".into(),
            ),
            0,
        ));
    }
    Ok(read)
}
