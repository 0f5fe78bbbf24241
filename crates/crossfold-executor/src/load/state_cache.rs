//! The cache of folded command states: per combination of streams, or per stream for commands
//! whose state declares `PER_STREAM`, and what an execution leaves in it for the next command.

use std::any::{Any, TypeId};

use crossfold_core::{Command, EventId, ReadSet, StreamId, StreamVersion};

use crate::cache::ClockCache;

use super::working::Working;

/// Where a cached state belongs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum StateKey {
    /// The whole read set of a command type, by its declared streams.
    Combination(TypeId, Box<[StreamId]>),
    /// One stream's part, for a per-stream command type.
    Part(TypeId, StreamId),
}

impl StateKey {
    pub(super) fn part<Cmd: Command>(stream: &StreamId) -> Self {
        StateKey::Part(TypeId::of::<Cmd>(), stream.clone())
    }

    pub(super) fn combination<Cmd: Command>(declared: &ReadSet) -> Self {
        StateKey::Combination(TypeId::of::<Cmd>(), declared.ids().into())
    }

    /// The key of the state of the read set's streams at `indices`.
    pub(super) fn reduced<Cmd: Command>(ids: &[StreamId], indices: &[usize]) -> Self {
        StateKey::Combination(
            TypeId::of::<Cmd>(),
            indices.iter().map(|&i| ids[i].clone()).collect(),
        )
    }
}

pub(super) struct StateEntry {
    pub(super) state: Box<dyn Any + Send + Sync>,
    /// Streams found by discovery after the declared ones (combinations only).
    pub(super) discovered: Vec<StreamId>,
    /// Versions the state reflects, of the read set (combinations only).
    pub(super) versions: Vec<StreamVersion>,
    /// The version of the one stream a part reflects (parts only; kept out of `versions` so
    /// that caching a part after every command allocates no vector).
    pub(super) version: StreamVersion,
    pub(super) floor: Option<EventId>,
    /// Events (for a part: the stream's version) at the state's last snapshot.
    pub(super) saved: u64,
}

pub(super) struct StateCache(ClockCache<StateKey, StateEntry>);

impl StateCache {
    pub(super) fn new(bytes: usize) -> Self {
        Self(ClockCache::new(bytes))
    }

    /// Checks a state out; the execution puts it (or its successor) back with
    /// [`keep`](Self::keep).
    pub(super) fn take(&self, key: &StateKey) -> Option<StateEntry> {
        self.0.take(key)
    }

    pub(super) fn used(&self) -> usize {
        self.0.used()
    }

    pub(super) fn clear(&self) {
        self.0.clear();
    }

    /// Keeps what this execution knows for the next command: each stream's part, or the state
    /// of the combination.
    pub(super) fn keep<Cmd: Command>(&self, declared: &ReadSet, work: Working<Cmd::State>) {
        if !self.0.is_enabled() {
            return;
        }
        let ids = work.read_set.ids();
        let overhead = |s: &StreamId| 48 + s.as_str().len();
        match work.parts {
            Some(parts) => {
                let size = std::mem::size_of::<Cmd::State>() + 96;
                for (i, part) in parts.into_iter().enumerate() {
                    // A part assumed empty was never checked; a fresh stream's part (like a
                    // transfer's own stream) is unlikely to be needed again.
                    if work.assumed[i] {
                        continue;
                    }
                    let entry = StateEntry {
                        state: Box::new(part.state),
                        discovered: Vec::new(),
                        versions: Vec::new(),
                        version: work.versions[i],
                        floor: part.floor,
                        saved: part.saved.get(),
                    };
                    // Another execution may have stored a newer part meanwhile; keep that one.
                    let version = work.versions[i];
                    self.0.insert_unless(
                        StateKey::part::<Cmd>(&ids[i]),
                        entry,
                        size + overhead(&ids[i]),
                        |existing| existing.version > version,
                    );
                }
            }
            None => {
                if let Some(base) = work.base {
                    let weight = std::mem::size_of::<Cmd::State>()
                        + 96
                        + base
                            .indices
                            .iter()
                            .map(|&i| overhead(&ids[i]))
                            .sum::<usize>();
                    let key = StateKey::reduced::<Cmd>(ids, &base.indices);
                    let entry = StateEntry {
                        versions: base.indices.iter().map(|&i| work.versions[i]).collect(),
                        state: Box::new(base.state),
                        discovered: Vec::new(),
                        version: StreamVersion::EMPTY,
                        floor: base.floor,
                        saved: 0,
                    };
                    self.0.insert(key, entry, weight);
                }
                if work.cacheable {
                    let declared_len = declared.ids().len().min(ids.len());
                    let weight = std::mem::size_of::<Cmd::State>()
                        + 96
                        + ids.iter().map(overhead).sum::<usize>();
                    let entry = StateEntry {
                        discovered: ids[declared_len..].to_vec(),
                        state: Box::new(work.state),
                        versions: work.versions,
                        version: StreamVersion::EMPTY,
                        floor: work.floor,
                        saved: work.saved,
                    };
                    self.0
                        .insert(StateKey::combination::<Cmd>(declared), entry, weight);
                }
            }
        }
    }
}
