//! The set of stored event ids, for refusing duplicates.
//!
//! Sharded with a lock per shard, so that checking ids never takes a lock every writer shares,
//! and so that growing the set rehashes only one shard's ids at a time.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossfold_core::EventId;

use crate::padded::Padded;

/// Number of shards (a power of two).
const SHARDS: usize = 64;

type IdSet = HashSet<EventId, IdHasher>;

/// Every stored event id.
#[derive(Debug)]
pub(crate) struct EventIds {
    shards: Box<[Padded<Mutex<IdSet>>]>,
}

impl Default for EventIds {
    fn default() -> Self {
        let hasher = IdHasher::default();
        Self {
            shards: (0..SHARDS)
                .map(|_| Padded(Mutex::new(HashSet::with_hasher(hasher))))
                .collect(),
        }
    }
}

/// Hashes event ids with one multiplication instead of SipHash: an id is already 16 bytes of
/// mostly random bits, and this set is touched by every append. The per-store random key keeps
/// colliding ids from being precomputed.
#[derive(Clone, Copy, Debug)]
struct IdHasher {
    key: u64,
}

impl Default for IdHasher {
    fn default() -> Self {
        Self {
            key: RandomState::new().hash_one(0u8) | 1,
        }
    }
}

impl BuildHasher for IdHasher {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            key: self.key,
            state: 0,
        }
    }
}

/// Folds every word written into a multiply-xorshift state.
struct FoldHasher {
    key: u64,
    state: u64,
}

impl FoldHasher {
    fn mix(&mut self, word: u64) {
        let product =
            u128::from(self.state ^ word ^ self.key) * u128::from(0x9E37_79B9_7F4A_7C15u64);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

fn shard_of(id: &EventId) -> usize {
    // The low bits of a UUIDv7 are its random counter, so they spread ids evenly.
    (id.as_uuid().as_u128() as usize) & (SHARDS - 1)
}

impl EventIds {
    fn lock(&self, shard: usize) -> MutexGuard<'_, IdSet> {
        // A shard only ever changes by inserts that cannot stop halfway, so a poisoned lock
        // still guards a consistent set.
        self.shards[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `ids` as stored, all or none: if one is stored already, records nothing and
    /// returns it (the first such, in the given order).
    pub(crate) fn insert_all(&self, ids: &[EventId]) -> Result<(), EventId> {
        if let [id] = ids {
            return if self.lock(shard_of(id)).insert(*id) {
                Ok(())
            } else {
                Err(*id)
            };
        }
        let mut shards: Vec<usize> = ids.iter().map(shard_of).collect();
        shards.sort_unstable();
        shards.dedup();
        // Locked in ascending order, like every multi-shard lock in this crate.
        let mut guards: Vec<(usize, MutexGuard<'_, IdSet>)> =
            shards.into_iter().map(|s| (s, self.lock(s))).collect();
        let find = |guards: &[(usize, MutexGuard<'_, IdSet>)], id: &EventId| {
            guards.binary_search_by_key(&shard_of(id), |(s, _)| *s).ok()
        };
        for id in ids {
            if let Some(g) = find(&guards, id)
                && guards[g].1.contains(id)
            {
                return Err(*id);
            }
        }
        for id in ids {
            if let Some(g) = find(&guards, id) {
                guards[g].1.insert(*id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_stored_id_and_records_nothing_then() {
        let set = EventIds::default();
        let ids: Vec<EventId> = (0..200).map(|_| EventId::generate()).collect();
        assert_eq!(set.insert_all(&ids[..100]), Ok(()));
        let fresh = EventId::generate();
        assert_eq!(set.insert_all(&[fresh, ids[7], ids[150]]), Err(ids[7]));
        assert_eq!(set.insert_all(&[ids[150]]), Ok(()), "nothing was recorded");
        assert_eq!(set.insert_all(&[fresh]), Ok(()));
        assert_eq!(set.insert_all(&[fresh]), Err(fresh));
        assert_eq!(set.insert_all(&[]), Ok(()));
    }
}
