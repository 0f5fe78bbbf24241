//! Per-stream state in a sharded map.
//!
//! Appends lock the shards of the streams they touch, in ascending shard order, so that two
//! appends never wait for each other in a cycle, and appends to streams in different shards run
//! in parallel. Locking a shard rather than each stream costs one lock per shard instead of two
//! (map, then stream) and is just as fine-grained in practice: with many more shards than cores,
//! two busy streams rarely share one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam_utils::CachePadded;
use crossfold_core::{Position, RecordedEvent, StreamId, StreamVersion};

use crate::chunked::ChunkedVec;
use crate::log::{Batch, materialize, position_of_seq};

/// Number of shards (a power of two).
const SHARDS: usize = 64;

/// One event of a stream: where it is in the log's batches, and its sequence number.
#[derive(Clone, Debug)]
pub(crate) struct StreamEntry {
    batch: Batch,
    offset: u32,
    seq: u64,
}

impl StreamEntry {
    /// The event at `offset` of `batch`, published with sequence number `seq`.
    pub(crate) fn new(batch: Batch, offset: usize, seq: u64) -> Self {
        Self {
            batch,
            offset: offset as u32,
            seq,
        }
    }

    /// The event's position.
    pub(crate) fn position(&self) -> Position {
        position_of_seq(self.seq)
    }

    /// The event as stored, without its position.
    pub(crate) fn unpositioned(&self) -> Option<&RecordedEvent> {
        self.batch.get(self.offset as usize)
    }

    /// The event, with its position.
    pub(crate) fn event(&self) -> Option<RecordedEvent> {
        let offset = self.offset as usize;
        materialize(&self.batch, offset, self.seq - offset as u64)
    }
}

/// One stream's events, in version order: the event at index `i` has version `i + 1`.
pub(crate) type Stream = ChunkedVec<StreamEntry>;

/// The streams of one shard.
pub(crate) type Shard = HashMap<StreamId, Stream, foldhash::fast::RandomState>;

/// Every stream, sharded by a hash of its name.
#[derive(Debug)]
pub(crate) struct Streams {
    /// Each shard on cache lines of its own, so that threads appending to neighbouring shards
    /// do not invalidate each other's caches.
    shards: Box<[CachePadded<Mutex<Shard>>]>,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::default())))
                .collect(),
        }
    }
}

/// The shard of a stream. Only spreads lock traffic, so a fixed fast hash is enough: a crafted
/// set of names could at worst make streams share a lock, while the maps inside use randomly
/// seeded hashing.
pub(crate) fn shard_of(stream: &StreamId) -> usize {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0x5eed).hash_one(stream.as_str());
    (hash ^ (hash >> 32)) as usize & (SHARDS - 1)
}

impl Streams {
    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Nothing panics while a shard is locked, and a poisoned lock would still hold
        // consistent maps (every update is a single push), so poisoning is ignored.
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the shards of `streams` (each once, in ascending order) for one operation.
    pub(crate) fn lock_all<'s, I>(&self, streams: I) -> Locked<'_>
    where
        I: Iterator<Item = &'s StreamId> + Clone,
    {
        let mut shards = streams.clone().map(shard_of);
        let first = shards.next().unwrap_or(0);
        if shards.all(|s| s == first) {
            // The common case of one stream (or one shard) takes no allocation.
            return Locked::One(first, self.lock(first));
        }
        let mut indices: Vec<usize> = streams.map(shard_of).collect();
        indices.sort_unstable();
        indices.dedup();
        Locked::Many(indices.into_iter().map(|i| (i, self.lock(i))).collect())
    }

    /// Locks the shard of one stream.
    pub(crate) fn lock_one(&self, stream: &StreamId) -> MutexGuard<'_, Shard> {
        self.lock(shard_of(stream))
    }

    /// Number of streams holding at least one event.
    pub(crate) fn count(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).len()).sum()
    }
}

/// Shards locked for one operation.
pub(crate) enum Locked<'a> {
    One(usize, MutexGuard<'a, Shard>),
    Many(Vec<(usize, MutexGuard<'a, Shard>)>),
}

impl Locked<'_> {
    /// A locked stream (`None` if it holds no events, or if its shard is not locked).
    pub(crate) fn get(&self, stream: &StreamId) -> Option<&Stream> {
        let shard = shard_of(stream);
        match self {
            Locked::One(i, guard) => (*i == shard).then_some(guard)?.get(stream),
            Locked::Many(guards) => {
                let at = guards.binary_search_by_key(&shard, |(i, _)| *i).ok()?;
                guards.get(at)?.1.get(stream)
            }
        }
    }

    /// The locked shard holding `stream`.
    pub(crate) fn shard_mut(&mut self, stream: &StreamId) -> Option<&mut Shard> {
        let shard = shard_of(stream);
        match self {
            Locked::One(i, guard) => (*i == shard).then_some(&mut **guard),
            Locked::Many(guards) => {
                let at = guards.binary_search_by_key(&shard, |(i, _)| *i).ok()?;
                guards.get_mut(at).map(|(_, guard)| &mut **guard)
            }
        }
    }
}

/// A stream's version.
pub(crate) fn version(stream: Option<&Stream>) -> StreamVersion {
    StreamVersion::new(stream.map_or(0, |s| s.len() as u64))
}

/// Up to `limit` events after version `after`.
pub(crate) fn read(
    stream: Option<&Stream>,
    after: StreamVersion,
    limit: usize,
) -> Vec<RecordedEvent> {
    let Some(stream) = stream else {
        return Vec::new();
    };
    let start = usize::try_from(after.get()).unwrap_or(usize::MAX);
    let count = stream.len().saturating_sub(start).min(limit);
    let mut out = Vec::with_capacity(count);
    out.extend(
        stream
            .iter_from(start)
            .take(count)
            .filter_map(StreamEntry::event),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    #[test]
    fn shards_spread_streams() {
        let used: std::collections::HashSet<usize> = (0..1000)
            .map(|i| shard_of(&sid(&format!("account-{i}"))))
            .collect();
        assert_eq!(used.len(), SHARDS);
    }

    #[test]
    fn locks_each_shard_once() {
        let streams = Streams::default();
        let (a, b) = (sid("a"), sid("b"));
        // The same stream twice must not deadlock.
        let locked = streams.lock_all([&a, &a].into_iter());
        assert!(matches!(locked, Locked::One(..)));
        assert!(locked.get(&a).is_none());
        drop(locked);
        assert_ne!(shard_of(&a), shard_of(&b));
        let mut locked = streams.lock_all([&b, &a, &b].into_iter());
        match &locked {
            Locked::Many(guards) => assert_eq!(guards.len(), 2),
            Locked::One(..) => panic!("two shards expected"),
        }
        assert!(locked.shard_mut(&a).is_some() && locked.shard_mut(&b).is_some());
    }

    #[test]
    fn reads_an_absent_stream_as_empty() {
        assert_eq!(version(None), StreamVersion::EMPTY);
        assert!(read(None, StreamVersion::EMPTY, 10).is_empty());
    }
}
