//! In-process serialization of commands that touch the same streams.
//!
//! Two commands of one process on the same stream would otherwise race to the store, and one
//! of them would lose with a conflict, re-read and retry. Queuing them here instead turns that
//! wasted round trip into a short wait; the store's version check stays the arbiter between
//! processes.

use std::hash::BuildHasher;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};

use crossfold_core::StreamId;
use foldhash::fast::RandomState;
use tokio::sync::Notify;

/// A fixed set of striped locks: bounded memory whatever the number of streams, at the price
/// of rare false sharing between streams that hash to the same stripe.
pub(crate) struct StreamLocks {
    stripes: Box<[Stripe]>,
    hasher: RandomState,
}

/// One lock. Deliberately not fair: a released stripe goes to whichever command asks first,
/// not to the longest waiter. A fair hand-off makes the stripe wait idle until the chosen
/// waiter's task is scheduled — often on the other core — and with commands that hold a
/// stripe for microseconds that idle time becomes the throughput (a lock convoy). Waiters are
/// still woken one at a time as stripes are released, so none waits while the stripe is free.
struct Stripe {
    locked: AtomicBool,
    released: Notify,
}

impl Stripe {
    fn try_lock(&self) -> bool {
        !self.locked.swap(true, Ordering::Acquire)
    }

    async fn lock(&self, waited: &mut bool) -> StripeGuard<'_> {
        loop {
            if self.try_lock() {
                return StripeGuard(self);
            }
            *waited = true;
            let mut notified = pin!(self.released.notified());
            // Register before the second look, so a release in between is not missed.
            notified.as_mut().enable();
            if self.try_lock() {
                return StripeGuard(self);
            }
            notified.await;
        }
    }
}

/// Holds one stripe; releases it when dropped.
pub(crate) struct StripeGuard<'a>(&'a Stripe);

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
        self.0.released.notify_one();
    }
}

impl StreamLocks {
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1))
                .map(|_| Stripe {
                    locked: AtomicBool::new(false),
                    released: Notify::new(),
                })
                .collect(),
            hasher: RandomState::default(),
        }
    }

    /// Locks the stripes of `streams`, in ascending stripe order so that two commands can
    /// never wait for each other in a cycle.
    pub(crate) async fn lock<'s>(
        &self,
        streams: impl IntoIterator<Item = &'s StreamId>,
        waited: &mut bool,
    ) -> Guards<'_> {
        // Most commands touch one or two streams: those take no allocation. The stripe
        // indices are worked out before the first wait, so no borrowed iterator is held across
        // it.
        let stripes = self.stripes_of(streams);
        match stripes {
            Stripes::None => Guards::None,
            Stripes::One(i) => Guards::One(self.stripes[i].lock(waited).await),
            Stripes::Two(i, j) => {
                let first = self.stripes[i].lock(waited).await;
                Guards::Two(first, self.stripes[j].lock(waited).await)
            }
            Stripes::Many(all) => {
                let mut guards = Vec::with_capacity(all.len());
                for i in all {
                    guards.push(self.stripes[i].lock(waited).await);
                }
                Guards::Many(guards)
            }
        }
    }

    /// The distinct stripes of `streams`, ascending.
    fn stripes_of<'s>(&self, streams: impl IntoIterator<Item = &'s StreamId>) -> Stripes {
        let n = self.stripes.len();
        let mut indices = streams
            .into_iter()
            .map(|s| (self.hasher.hash_one(s.as_str()) as usize) % n);
        let Some(first) = indices.next() else {
            return Stripes::None;
        };
        let Some(second) = indices.next() else {
            return Stripes::One(first);
        };
        let Some(third) = indices.next() else {
            return match first.cmp(&second) {
                std::cmp::Ordering::Less => Stripes::Two(first, second),
                std::cmp::Ordering::Equal => Stripes::One(first),
                std::cmp::Ordering::Greater => Stripes::Two(second, first),
            };
        };
        let mut all: Vec<usize> = [first, second, third].into_iter().chain(indices).collect();
        all.sort_unstable();
        all.dedup();
        match all.as_slice() {
            [only] => Stripes::One(*only),
            _ => Stripes::Many(all),
        }
    }
}

enum Stripes {
    None,
    One(usize),
    /// Ascending.
    Two(usize, usize),
    Many(Vec<usize>),
}

/// The stripes one command holds, released when dropped.
#[allow(dead_code, reason = "the guards are held only for their Drop")]
pub(crate) enum Guards<'a> {
    None,
    One(StripeGuard<'a>),
    Two(StripeGuard<'a>, StripeGuard<'a>),
    Many(Vec<StripeGuard<'a>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_sets_never_deadlock_and_exclude_each_other() {
        let locks = Arc::new(StreamLocks::new(64));
        let inside = Arc::new(AtomicUsize::new(0));
        let names: Vec<StreamId> = (0..6)
            .map(|i| StreamId::new(format!("s-{i}")).unwrap())
            .collect();
        let mut tasks = Vec::new();
        for t in 0..32 {
            let (locks, inside, names) = (locks.clone(), inside.clone(), names.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..200 {
                    // Every task takes "s-0" plus others, in varying order.
                    let set = [
                        names[0].clone(),
                        names[(t + i) % 6].clone(),
                        names[(t * 7 + i) % 6].clone(),
                    ];
                    // Sets of one, two and three names (some repeated) take every path.
                    let _g = locks.lock(&set[..1 + i % 3], &mut false).await;
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_released_stripe_wakes_a_waiter() {
        let locks = Arc::new(StreamLocks::new(1));
        let s = StreamId::new("s").unwrap();
        let held = locks.lock([&s], &mut false).await;
        let waiter = tokio::spawn({
            let (locks, s) = (locks.clone(), s.clone());
            async move {
                let _g = locks.lock([&s], &mut false).await;
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the waiter must wait while the stripe is held"
        );
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was not woken")
            .unwrap();
    }
}
