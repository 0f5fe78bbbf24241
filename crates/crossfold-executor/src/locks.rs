//! In-process serialization of commands that touch the same streams.
//!
//! Two commands of one process on the same stream would otherwise race to the store, and one
//! of them would lose with a conflict, re-read and retry. Queuing them here instead turns that
//! wasted round trip into a short wait; the store's version check stays the arbiter between
//! processes.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

use crossfold_core::StreamId;
use tokio::sync::{Mutex, MutexGuard};

/// A fixed set of striped locks: bounded memory whatever the number of streams, at the price
/// of rare false sharing between streams that hash to the same stripe.
pub(crate) struct StreamLocks {
    stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
}

impl StreamLocks {
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::default(),
        }
    }

    /// Locks the stripes of `streams`, in ascending stripe order so that two commands can
    /// never wait for each other in a cycle.
    pub(crate) async fn lock<'s>(
        &self,
        streams: impl IntoIterator<Item = &'s StreamId>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let n = self.stripes.len();
        let mut indices: Vec<usize> = streams
            .into_iter()
            .map(|s| (self.hasher.hash_one(s.as_str()) as usize) % n)
            .collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards = Vec::with_capacity(indices.len());
        for i in indices {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
                    // Every task takes "s-0" plus two others, in varying order.
                    let set = [
                        names[(t + i) % 6].clone(),
                        names[0].clone(),
                        names[(t * 7 + i) % 6].clone(),
                    ];
                    let _g = locks.lock(&set).await;
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
}
