//! A bounded, sharded cache weighed in bytes: `quick_cache`'s eviction (Clock-PRO / S3-FIFO,
//! scan resistant) behind the small API the executor needs.
//!
//! The executor keeps two of them: folded command states and recent stream events. Both are
//! only hints — every append still carries the expected version of every stream it relied on,
//! so a stale entry costs a conflict and a re-read, never a wrong write.
//!
//! `quick_cache`'s own concurrent cache hands values out by cloning, and neither a folded state
//! (a `Box<dyn Any>`) nor a stream's events should be cloned per command; so each shard here is
//! its single-threaded cache behind a mutex, and a value can be checked out (`take`) or changed
//! in place (`with`).

use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

use foldhash::fast::RandomState;
use quick_cache::Weighter;
use quick_cache::unsync::{Cache, DefaultLifecycle};

const SHARDS: usize = 16;

/// A guess at an entry's weight, only used to size the cache's memory of recently evicted keys
/// (which lets an evicted key that comes back re-enter as frequently used).
const TYPICAL_WEIGHT: usize = 256;

type Shard<K, V> = Cache<K, Slot<V>, SlotWeight, RandomState, DefaultLifecycle<K, Slot<V>>>;

pub(crate) struct ClockCache<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    budget_per_shard: usize,
    hasher: RandomState,
}

/// A cached value, or the place of one that is checked out: a state taken by a running command
/// keeps its slot (and its standing in the eviction order) until it is put back.
struct Slot<V> {
    value: Option<V>,
    weight: usize,
}

#[derive(Clone, Copy)]
struct SlotWeight;

impl<K, V> Weighter<K, Slot<V>> for SlotWeight {
    fn weight(&self, _key: &K, slot: &Slot<V>) -> u64 {
        // A weight of zero would make an entry unevictable.
        slot.weight.max(1) as u64
    }
}

impl<K: Hash + Eq + Clone, V> ClockCache<K, V> {
    /// A cache holding at most about `budget` bytes (split evenly over the shards).
    pub(crate) fn new(budget: usize) -> Self {
        let budget_per_shard = budget / SHARDS;
        let hasher = RandomState::default();
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Cache::with(
                    (budget_per_shard / TYPICAL_WEIGHT).max(1),
                    budget_per_shard as u64,
                    SlotWeight,
                    hasher.clone(),
                    DefaultLifecycle::default(),
                ))
            })
            .collect();
        Self {
            shards,
            budget_per_shard,
            hasher,
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.budget_per_shard > 0
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K, V>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        lock(&self.shards[index])
    }

    /// Removes the value and hands it to the caller, keeping the slot's place in the cache, so
    /// a value that is checked out and put back keeps its standing.
    pub(crate) fn take(&self, key: &K) -> Option<V> {
        if !self.is_enabled() {
            return None;
        }
        self.shard(key).get_mut(key)?.value.take()
    }

    /// Runs `f` on the cached value, if any.
    pub(crate) fn with<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        if !self.is_enabled() {
            return None;
        }
        self.shard(key).get_mut(key)?.value.as_mut().map(f)
    }

    /// Inserts or replaces a value of `weight` bytes, evicting others to stay within budget.
    /// A value heavier than (almost) a whole shard's budget is not cached.
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
        let mut shard = self.shard(&key);
        if let Some(mut slot) = shard.get_mut(&key) {
            if slot.value.as_ref().is_some_and(keep_existing) {
                return;
            }
            // Putting back a value of the same weight (a checked-out state, a part replaced by
            // a newer one) needs no eviction: fill the slot without a second lookup.
            if slot.weight == weight {
                slot.value = Some(value);
                return;
            }
        }
        shard.insert(
            key,
            Slot {
                value: Some(value),
                weight,
            },
        );
    }

    /// Updates the weight of an entry after `with` changed its value, evicting others (or this
    /// one, if it outgrew the budget) to stay within budget.
    pub(crate) fn reweigh(&self, key: &K, weight: usize) {
        if !self.is_enabled() {
            return;
        }
        let mut shard = self.shard(key);
        // A weight changed in place would not make the cache evict; re-inserting the value
        // under its key does, and keeps the entry's standing.
        let Some(value) = shard.peek_mut(key).map(|mut slot| slot.value.take()) else {
            return;
        };
        shard.insert(key.clone(), Slot { value, weight });
    }

    pub(crate) fn remove(&self, key: &K) {
        if !self.is_enabled() {
            return;
        }
        self.shard(key).remove(key);
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            lock(shard).clear();
        }
    }

    /// Total weight held, in bytes.
    pub(crate) fn used(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).weight() as usize)
            .sum()
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

/// The cache holds no invariant of ours that a panicking holder could break halfway through,
/// so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        assert_eq!(cache.take(&"a"), Some(1));
        assert_eq!(cache.take(&"a"), None);
        cache.insert("a", 2, 10);
        assert_eq!(cache.take(&"a"), Some(2));
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
    fn a_value_that_outgrows_the_budget_is_dropped() {
        let cache: ClockCache<u32, u32> = ClockCache::new(SHARDS * 100);
        cache.insert(1, 1, 10);
        cache.reweigh(&1, 101);
        assert_eq!(cache.take(&1), None);
        assert_eq!(cache.used(), 0);
    }

    #[test]
    fn growing_values_evict_others_to_stay_within_budget() {
        let cache: ClockCache<u32, u32> = ClockCache::new(SHARDS * 100);
        for i in 0..1_000 {
            cache.insert(i, i, 10);
        }
        for i in 0..1_000 {
            cache.with(&i, |_| ());
            cache.reweigh(&i, 30);
            assert!(
                cache.used() <= SHARDS * 100,
                "over budget after growing {i}"
            );
        }
    }

    #[test]
    fn remove_and_reinsert_keeps_one_entry() {
        let cache: ClockCache<u32, u32> = ClockCache::new(SHARDS * 1_000_000);
        for _ in 0..100_000 {
            cache.insert(7, 7, 1);
            cache.remove(&7);
        }
        cache.insert(7, 7, 1);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.used(), 1);
    }
}
