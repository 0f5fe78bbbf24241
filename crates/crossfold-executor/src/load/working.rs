//! One execution's view of its streams: the read set, the versions its state reflects, and the
//! state (whole, or in per-stream parts).

use std::time::Duration;

use crossfold_core::{Command, EventId, Fold, ReadSet, Recorded, StreamId, StreamVersion};

/// One stream's folded part and the highest event id in it.
pub(crate) struct Part<St> {
    pub(crate) state: St,
    pub(crate) floor: Option<EventId>,
    /// The stream's version at the part's last snapshot (taken or loaded): the events after
    /// it count towards the next.
    pub(crate) saved: StreamVersion,
}

impl<St: Default> Part<St> {
    pub(crate) fn empty() -> Self {
        Self {
            state: St::default(),
            floor: None,
            saved: StreamVersion::EMPTY,
        }
    }
}

/// The state of the streams of a combination that held events when it was loaded, kept beside
/// the state of the whole combination while the other streams were empty: the next command
/// that reads these streams with other empty ones starts from it.
pub(crate) struct Base<St> {
    /// Indices in the read set of the streams it covers.
    pub(super) indices: Vec<usize>,
    pub(super) state: St,
    pub(super) floor: Option<EventId>,
}

/// One execution's view: its read set, the versions its state reflects, and the state.
pub(crate) struct Working<St> {
    pub(crate) read_set: ReadSet,
    pub(crate) versions: Vec<StreamVersion>,
    /// Streams taken to be empty without reading them (`Command::expects_new`), and not
    /// contradicted since.
    pub(crate) assumed: Vec<bool>,
    /// For per-stream commands, each stream's part, in read-set order.
    pub(crate) parts: Option<Vec<Part<St>>>,
    /// The state `handle` decides on (for per-stream commands, the merge of `parts`).
    pub(crate) state: St,
    /// The highest event id folded: new events get ids above it.
    pub(crate) floor: Option<EventId>,
    /// Whether the store showed every stream of the read set at these versions in one read
    /// (or one append) during this execution, so that the state is one that existed — rather
    /// than taken from a cache, assumed, or put together from reads made at different times.
    /// Only a decision on a verified view stands without being confirmed.
    pub(crate) verified: bool,
    /// Whether a per-combination state may be cached. Not when a stream was assumed new: such
    /// a combination of streams is unlikely to come again (its streams that hold events are
    /// kept in `base` instead).
    pub(crate) cacheable: bool,
    /// The state of the streams that held events, when the others were empty.
    pub(crate) base: Option<Base<St>>,
    /// Events (the sum of the versions) at the state's last snapshot, taken or loaded
    /// (per-combination states; parts keep their own).
    pub(crate) saved: u64,
    /// How long loading the view took, when its state is kept in snapshots and it was not
    /// found in the state cache.
    pub(crate) load_time: Option<Duration>,
}

impl<St: Default> Working<St> {
    pub(super) fn empty(read_set: ReadSet, per_stream: bool) -> Self {
        Self {
            read_set,
            versions: Vec::new(),
            assumed: Vec::new(),
            parts: per_stream.then(Vec::new),
            state: St::default(),
            floor: None,
            verified: true,
            cacheable: true,
            base: None,
            saved: 0,
            load_time: None,
        }
    }

    /// Folds an event of stream `index` (of the read set) into the base state too, if the base
    /// covers that stream. Events of the other streams do not concern it: it stays the state of
    /// its own streams.
    pub(crate) fn track_base<E>(
        &mut self,
        index: usize,
        event: &Recorded<E>,
        apply: impl FnOnce(&mut St, &Recorded<E>),
    ) {
        if let Some(base) = &mut self.base
            && base.indices.contains(&index)
        {
            apply(&mut base.state, event);
            base.floor = base.floor.max(Some(event.event_id));
        }
    }

    /// Raises the base state's floor over an event of stream `index` that was read but not
    /// folded (a retired type the upcasters skip), if the base covers that stream: its
    /// versions include the event, so its floor must too.
    pub(crate) fn raise_base_floor(&mut self, index: usize, event_id: crossfold_core::EventId) {
        if let Some(base) = &mut self.base
            && base.indices.contains(&index)
        {
            base.floor = base.floor.max(Some(event_id));
        }
    }

    /// The state to decide on: the merged state, or the only part of a one-stream command
    /// (which needs no merging).
    pub(crate) fn decision_state(&self) -> &St {
        match &self.parts {
            Some(parts) if parts.len() == 1 => &parts[0].state,
            _ => &self.state,
        }
    }

    /// Rebuilds the state from the parts (per-stream commands only).
    pub(crate) fn merge_parts<Cmd: Command<State = St>>(&mut self)
    where
        St: Fold<Cmd::Event>,
    {
        if let Some(parts) = &self.parts {
            self.floor = parts.iter().filter_map(|p| p.floor).max();
            if parts.len() == 1 {
                return;
            }
            let mut state = St::default();
            for part in parts {
                state.merge(&part.state);
            }
            self.state = state;
        }
    }
}

impl<St> Working<St> {
    /// Whether this view shows `stream` (of its read set) at `version`.
    pub(crate) fn shows(&self, stream: &StreamId, version: StreamVersion) -> bool {
        self.read_set
            .ids()
            .iter()
            .position(|id| id == stream)
            .is_some_and(|k| self.versions[k] == version)
    }
}
