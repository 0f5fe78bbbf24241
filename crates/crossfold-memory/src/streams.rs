//! Per-stream state in a sharded map.
//!
//! Appends lock the shards of the streams they touch, in ascending shard order, so that two
//! appends never wait for each other in a cycle, and appends to streams in different shards run
//! in parallel. Locking a shard rather than each stream costs one lock per shard instead of two
//! (map, then stream) and is just as fine-grained in practice: with many more shards than cores,
//! two busy streams rarely share one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossfold_core::{RecordedEvent, StreamId, StreamVersion};

use crate::chunked::ChunkedVec;

/// Number of shards (a power of two).
const SHARDS: usize = 64;

/// One stream's events, in version order: the event at index `i` has version `i + 1`.
pub(crate) type Stream = ChunkedVec<RecordedEvent>;

/// The streams of one shard.
pub(crate) type Shard = HashMap<StreamId, Stream>;

/// Every stream, sharded by a hash of its name.
#[derive(Debug)]
pub(crate) struct Streams {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// The shard of a stream. Only spreads lock traffic, so a fast hash is enough: a crafted set
/// of names could at worst make streams share a lock, while the maps inside keep std's
/// randomized hashing.
pub(crate) fn shard_of(stream: &StreamId) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream.as_str().bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
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
    pub(crate) fn lock_all<'s>(&self, streams: impl Iterator<Item = &'s StreamId>) -> Locked<'_> {
        let mut indices: Vec<usize> = streams.map(shard_of).collect();
        indices.sort_unstable();
        indices.dedup();
        Locked {
            guards: indices.into_iter().map(|i| (i, self.lock(i))).collect(),
        }
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
pub(crate) struct Locked<'a> {
    guards: Vec<(usize, MutexGuard<'a, Shard>)>,
}

impl Locked<'_> {
    fn position(&self, stream: &StreamId) -> Option<usize> {
        let shard = shard_of(stream);
        self.guards.binary_search_by_key(&shard, |(i, _)| *i).ok()
    }

    /// A locked stream (`None` if it holds no events).
    pub(crate) fn get(&self, stream: &StreamId) -> Option<&Stream> {
        self.guards.get(self.position(stream)?)?.1.get(stream)
    }

    /// The locked shard holding `stream`.
    pub(crate) fn shard_mut(&mut self, stream: &StreamId) -> Option<&mut Shard> {
        let position = self.position(stream)?;
        self.guards.get_mut(position).map(|(_, guard)| &mut **guard)
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
    out.extend(stream.iter_from(start).take(count).cloned());
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
        let a = sid("a");
        // Same stream twice must not deadlock.
        let locked = streams.lock_all([&a, &a].into_iter());
        assert_eq!(locked.guards.len(), 1);
        assert!(locked.get(&a).is_none());
        assert!(locked.get(&sid("not-locked-maybe")).is_none());
    }

    #[test]
    fn reads_an_absent_stream_as_empty() {
        assert_eq!(version(None), StreamVersion::EMPTY);
        assert!(read(None, StreamVersion::EMPTY, 10).is_empty());
    }
}
