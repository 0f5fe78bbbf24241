//! A bounded, sharded cache with CLOCK (second-chance) eviction, weighed in bytes.
//!
//! The executor keeps two of them: folded command states and recent stream events. Both are
//! only hints — every append still carries the expected version of every stream it relied on,
//! so a stale entry costs a conflict and a re-read, never a wrong write.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;

pub(crate) struct ClockCache<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    budget_per_shard: usize,
    hasher: RandomState,
}

struct Shard<K, V> {
    map: HashMap<K, Slot<V>, RandomState>,
    /// Keys in insertion order for the clock hand. May hold keys already removed from `map`;
    /// those are skipped (and the ring is compacted when they pile up).
    ring: VecDeque<K>,
    used: usize,
}

struct Slot<V> {
    value: Option<V>,
    weight: usize,
    referenced: bool,
}

impl<K: Hash + Eq + Clone, V> ClockCache<K, V> {
    /// A cache holding at most about `budget` bytes (split evenly over the shards).
    pub(crate) fn new(budget: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::default(),
                    ring: VecDeque::new(),
                    used: 0,
                })
            })
            .collect();
        Self {
            shards,
            budget_per_shard: budget / SHARDS,
            hasher: RandomState::default(),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.budget_per_shard > 0
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // The cache holds no invariant that a panicking holder could break halfway through
        // (every field update is a single step), so a poisoned lock is still usable.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes the value and hands it to the caller, keeping the slot's place in the clock, so
    /// a value that is checked out and put back does not churn the ring.
    pub(crate) fn take<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.is_enabled() {
            return None;
        }
        let mut shard = self.shard(key);
        let slot = shard.map.get_mut(key)?;
        slot.referenced = true;
        slot.value.take()
    }

    /// Runs `f` on the cached value, if any.
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&mut V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.is_enabled() {
            return None;
        }
        let mut shard = self.shard(key);
        let slot = shard.map.get_mut(key)?;
        slot.referenced = true;
        slot.value.as_mut().map(f)
    }

    /// Inserts or replaces a value of `weight` bytes, evicting others to stay within budget.
    /// A value heavier than a whole shard's budget is not cached.
    pub(crate) fn insert(&self, key: K, value: V, weight: usize) {
        self.insert_unless(key, value, weight, |_| false);
    }

    /// Like [`insert`](Self::insert), but keeps the cached value if `keep_existing` says so.
    pub(crate) fn insert_unless(
        &self,
        key: K,
        value: V,
        weight: usize,
        keep_existing: impl FnOnce(&V) -> bool,
    ) {
        if !self.is_enabled() {
            return;
        }
        let budget = self.budget_per_shard;
        let mut shard = self.shard(&key);
        if shard
            .map
            .get(&key)
            .and_then(|slot| slot.value.as_ref())
            .is_some_and(keep_existing)
        {
            return;
        }
        if weight > budget {
            if let Some(old) = shard.map.remove(&key) {
                shard.used -= old.weight;
            }
            return;
        }
        match shard.map.get_mut(&key) {
            Some(slot) => {
                let old = slot.weight;
                slot.value = Some(value);
                slot.weight = weight;
                slot.referenced = true;
                shard.used = shard.used - old + weight;
            }
            None => {
                shard.ring.push_back(key.clone());
                shard.map.insert(
                    key,
                    Slot {
                        value: Some(value),
                        weight,
                        referenced: false,
                    },
                );
                shard.used += weight;
            }
        }
        shard.evict(budget);
    }

    /// Updates the weight of an entry after `with` changed its value.
    pub(crate) fn reweigh<Q>(&self, key: &Q, weight: usize)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let budget = self.budget_per_shard;
        let mut shard = self.shard(key);
        let Some(slot) = shard.map.get_mut(key) else {
            return;
        };
        let old = std::mem::replace(&mut slot.weight, weight);
        shard.used = shard.used - old + weight;
        if weight > budget
            && let Some(old) = shard.map.remove(key)
        {
            shard.used -= old.weight;
        }
        shard.evict(budget);
    }

    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.is_enabled() {
            return;
        }
        let mut shard = self.shard(key);
        if let Some(old) = shard.map.remove(key) {
            shard.used -= old.weight;
        }
        shard.compact_if_stale();
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.map.clear();
            shard.ring.clear();
            shard.used = 0;
        }
    }

    /// Total weight held, in bytes.
    pub(crate) fn used(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).used)
            .sum()
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }
}

impl<K: Hash + Eq + Clone, V> Shard<K, V> {
    fn evict(&mut self, budget: usize) {
        while self.used > budget {
            let Some(key) = self.ring.pop_front() else {
                break;
            };
            let Some(slot) = self.map.get_mut(&key) else {
                continue;
            };
            if slot.referenced {
                slot.referenced = false;
                self.ring.push_back(key);
            } else if let Some(old) = self.map.remove(&key) {
                self.used -= old.weight;
            }
        }
        self.compact_if_stale();
    }

    fn compact_if_stale(&mut self) {
        if self.ring.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            let mut seen = std::collections::HashSet::with_capacity(map.len());
            self.ring
                .retain(|k| map.contains_key(k) && seen.insert(k.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget() {
        let cache: ClockCache<u32, Vec<u8>> = ClockCache::new(SHARDS * 100);
        for i in 0..10_000 {
            cache.insert(i, vec![0; 10], 10);
        }
        assert!(cache.used() <= SHARDS * 100);
        assert!(cache.len() <= SHARDS * 10);
        assert!(cache.len() >= SHARDS * 5, "the cache should be mostly full");
    }

    #[test]
    fn referenced_entries_survive_a_sweep() {
        let cache: ClockCache<u32, u32> = ClockCache::new(SHARDS * 40);
        // Fill, touch key 0 repeatedly while inserting more; it should stay.
        for i in 0..1_000 {
            cache.insert(i, i, 10);
            assert_eq!(cache.with(&0, |v| *v), Some(0), "key 0 evicted at {i}");
        }
    }

    #[test]
    fn take_leaves_a_vacant_slot_that_insert_fills() {
        let cache: ClockCache<&'static str, u32> = ClockCache::new(SHARDS * 1_000);
        cache.insert("a", 1, 10);
        assert_eq!(cache.take("a"), Some(1));
        assert_eq!(cache.take("a"), None);
        cache.insert("a", 2, 10);
        assert_eq!(cache.take("a"), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn oversized_values_are_not_cached() {
        let cache: ClockCache<u32, u32> = ClockCache::new(SHARDS * 10);
        cache.insert(1, 1, 11);
        assert_eq!(cache.take(&1), None);
    }

    #[test]
    fn a_zero_budget_disables_the_cache() {
        let cache: ClockCache<u32, u32> = ClockCache::new(0);
        cache.insert(1, 1, 0);
        assert_eq!(cache.take(&1), None);
    }

    #[test]
    fn remove_and_reinsert_does_not_grow_the_ring_without_bound() {
        let cache: ClockCache<u32, u32> = ClockCache::new(SHARDS * 1_000_000);
        for _ in 0..100_000 {
            cache.insert(7, 7, 1);
            cache.remove(&7);
        }
        let ring: usize = cache
            .shards
            .iter()
            .map(|s| s.lock().unwrap().ring.len())
            .sum();
        assert!(ring < 200, "ring holds {ring} keys");
    }
}
