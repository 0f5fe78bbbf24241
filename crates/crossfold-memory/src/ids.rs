//! The set of stored event ids, for refusing duplicates.
//!
//! Sharded with a lock per shard, so that checking ids never takes a lock every writer shares,
//! and so that growing the set rehashes only one shard's ids at a time.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam_utils::CachePadded;
use crossfold_core::EventId;

const SHARDS: usize = 64;

/// Ordered, not hashed: event ids are UUIDv7s that mostly arrive in increasing order, so
/// inserts and look-ups stay at the right edge of the tree, in cache, however large the set
/// grows — where a hash set would take a cache miss per id and stall on every resize.
///
/// Keyed by the id's 128-bit value, whose order is the UUID's byte order: comparing two
/// integers is a couple of instructions where comparing byte arrays is a call.
type IdSet = BTreeSet<u128>;

fn key(id: &EventId) -> u128 {
    id.as_uuid().as_u128()
}

#[derive(Debug)]
pub(crate) struct EventIds {
    /// Padded for the same reason as the stream shards.
    shards: Box<[CachePadded<Mutex<IdSet>>]>,
}

impl Default for EventIds {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(BTreeSet::new())))
                .collect(),
        }
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
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `ids` as stored, all or none: if one is stored already, records nothing and
    /// returns it (the first such, in the given order).
    pub(crate) fn insert_all(&self, ids: &[EventId]) -> Result<(), EventId> {
        if let [id] = ids {
            return if self.lock(shard_of(id)).insert(key(id)) {
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
        // Inserted optimistically, one search per id; a stored one (rare: ids are generated
        // unique) takes back what this call inserted before refusing. The ids of one request
        // are distinct (`AppendRequest::validate`), so what is taken back was inserted here.
        for (n, id) in ids.iter().enumerate() {
            let Some(g) = find(&guards, id) else {
                continue;
            };
            if !guards[g].1.insert(key(id)) {
                for earlier in &ids[..n] {
                    if let Some(g) = find(&guards, earlier) {
                        guards[g].1.remove(&key(earlier));
                    }
                }
                return Err(*id);
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
