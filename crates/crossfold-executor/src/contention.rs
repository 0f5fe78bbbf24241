//! Contention with writers outside this executor: which streams lost races lately, and the
//! turn an execution holds on them.
//!
//! A conflict against a state the store had just shown whole means another process wrote the
//! same stream in between — a real race, not a cache that was behind. Such a stream is *hot*
//! for [`HOT_FOR`]: the executor's next attempt on it, and every command of this executor that
//! writes it meanwhile, first waits for its turn on it in the store
//! ([`EventStore::take_turn`]), so that writers of every process queue in the server instead of
//! reading again and racing. Commands wait for a hot stream in that one queue only, not first
//! in this process's queue as well: waiting in both, a command would hold its place in this
//! process (and every stream it declared) while it waits in the server, and the next command of
//! this process would join the server's queue only after it, behind every other process. A
//! stream stays hot while turns on it keep having to wait; once nobody else contends, it cools
//! down and commands on it go back to one round trip and the in-process queue.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{ErrorChain, EventStore, StreamConflict, StreamId, StreamTurn};
use foldhash::fast::RandomState;

use crate::metrics::CommandMetrics;

/// How long a stream stays hot after the last sign of contention on it.
pub(crate) const HOT_FOR: Duration = Duration::from_secs(1);

/// Striped marks of when streams stop being hot: bounded memory whatever the number of
/// streams, at the price of a rare turn taken on a cold stream that shares a stripe with a hot
/// one (a turn nobody else wants costs one round trip and no wait).
pub(crate) struct HotStreams {
    /// Milliseconds after `epoch` until which a stripe is hot (0: never was).
    until: Box<[AtomicU64]>,
    epoch: Instant,
    hasher: RandomState,
    /// Cleared once the store turns out to hand out no turns (the memory store, a pool of one
    /// connection): then no stream is ever hot, and commands keep their in-process queue.
    store_has_turns: AtomicBool,
    /// Milliseconds after `epoch` until which a stripe of [`SUSPECT_STRIPES`] saw a conflict
    /// against a cached state (see [`HotStreams::stale`]).
    stale_until: Box<[AtomicU64]>,
}

/// Stripes for stale-cache conflicts: finer than the hot marks, because such conflicts are
/// common wherever several processes write the same streams, and only two on one stream
/// within [`HOT_FOR`] may make it hot.
const SUSPECT_STRIPES: usize = 1 << 14;

impl HotStreams {
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            until: (0..stripes.max(1)).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            hasher: RandomState::default(),
            store_has_turns: AtomicBool::new(true),
            stale_until: (0..SUSPECT_STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `stream`'s slot in `table` (the hot marks or the stale-cache marks).
    fn slot<'t>(&self, table: &'t [AtomicU64], stream: &StreamId) -> &'t AtomicU64 {
        &table[(self.hasher.hash_one(stream.as_str()) as usize) % table.len()]
    }

    fn stripe(&self, stream: &StreamId) -> &AtomicU64 {
        self.slot(&self.until, stream)
    }

    /// Marks `streams` hot for [`HOT_FOR`] from now.
    pub(crate) fn mark<'s>(&self, streams: impl IntoIterator<Item = &'s StreamId>) {
        if !self.store_has_turns.load(Ordering::Relaxed) {
            return;
        }
        let until = self.now().saturating_add(HOT_FOR.as_millis() as u64);
        for stream in streams {
            self.stripe(stream).fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Notes conflicts against a cached state on `streams`: another process wrote them since
    /// this one cached them. Once is a cache that was behind; twice on a stream within
    /// [`HOT_FOR`] means another process is writing it now, and the stream is marked hot.
    /// Without this, a process whose writers never lose a race on a state they had just read
    /// (their conflicts all against the cache, followed by a read and a winning append) never
    /// takes turns, and keeps winning against the commands of other processes that wait their
    /// turn: those use up their attempts while its commands succeed.
    pub(crate) fn stale<'s>(&self, streams: impl IntoIterator<Item = &'s StreamId>) {
        if !self.store_has_turns.load(Ordering::Relaxed) {
            return;
        }
        let now = self.now();
        let until = now.saturating_add(HOT_FOR.as_millis() as u64);
        for stream in streams {
            if self
                .slot(&self.stale_until, stream)
                .swap(until, Ordering::Relaxed)
                > now
            {
                self.stripe(stream).fetch_max(until, Ordering::Relaxed);
            }
        }
    }

    /// The hot ones of `streams` (no allocation when none is).
    pub(crate) fn hot<'s>(&self, streams: impl IntoIterator<Item = &'s StreamId>) -> Vec<StreamId> {
        let mut now = None;
        let mut hot = Vec::new();
        if !self.store_has_turns.load(Ordering::Relaxed) {
            return hot;
        }
        for stream in streams {
            let until = self.stripe(stream).load(Ordering::Relaxed);
            if until == 0 {
                continue;
            }
            if until > *now.get_or_insert_with(|| self.now()) {
                hot.push(stream.clone());
            }
        }
        hot
    }
}

/// The turn an execution holds, and on which streams.
pub(crate) struct Turned {
    /// Held until dropped.
    turn: StreamTurn,
    /// Sorted, each once.
    streams: Vec<StreamId>,
}

impl Turned {
    /// Whether the turn covers every stream of `conflicts`: a conflict met under it was lost to
    /// a writer that takes no turn.
    pub(crate) fn covers(&self, conflicts: &[StreamConflict]) -> bool {
        conflicts
            .iter()
            .all(|c| self.streams.binary_search(&c.stream).is_ok())
    }

    /// The turn itself, to append under it.
    pub(crate) fn turn(&self) -> &StreamTurn {
        &self.turn
    }

    /// The streams of the turn, to widen it.
    pub(crate) fn streams(&self) -> &[StreamId] {
        &self.streams
    }
}

/// Waits for the turn on `streams`. Marks them hot again when the turn had to wait (others
/// contend), and counts the turn and how long it took in `metrics`. `None` when the store holds
/// no turns, or could not give one: the caller goes on without, as it would have before.
pub(crate) async fn take_turn<S: EventStore>(
    store: &S,
    hot: &HotStreams,
    mut streams: Vec<StreamId>,
    metrics: &CommandMetrics,
) -> Option<Box<Turned>> {
    streams.sort_unstable();
    streams.dedup();
    let asked = Instant::now();
    match store.take_turn(&streams).await {
        Ok(turn) if turn.is_held() => {
            metrics.turn_wait.record(asked.elapsed().as_secs_f64());
            metrics.turns(turn.waited()).increment(1);
            if turn.waited() {
                hot.mark(&streams);
            }
            Some(Box::new(Turned { turn, streams }))
        }
        Ok(_) => {
            hot.store_has_turns.store(false, Ordering::Relaxed);
            None
        }
        Err(error) => {
            tracing::debug!(
                error = %ErrorChain(&error),
                "no turn on contended streams; racing for them instead"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_marked_stream_is_hot_and_others_are_not() {
        let hot = HotStreams::new(1 << 16);
        let (a, b) = (sid("account-1"), sid("account-2"));
        assert!(hot.hot([&a, &b]).is_empty());
        hot.mark([&a]);
        assert_eq!(hot.hot([&a, &b]), std::slice::from_ref(&a));
    }

    #[test]
    fn a_second_stale_cache_within_the_window_makes_a_stream_hot() {
        let hot = HotStreams::new(1 << 16);
        let (a, b) = (sid("account-1"), sid("account-2"));
        hot.stale([&a]);
        assert!(hot.hot([&a]).is_empty(), "once is a cache that was behind");
        hot.stale([&b]);
        assert!(hot.hot([&a, &b]).is_empty());
        hot.stale([&a]);
        assert_eq!(hot.hot([&a, &b]), std::slice::from_ref(&a));
    }

    #[test]
    fn a_mark_cools_down() {
        let hot = HotStreams::new(4);
        let a = sid("account-1");
        // A mark that ended a moment ago.
        hot.stripe(&a).store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        assert!(hot.hot([&a]).is_empty());
    }

    #[test]
    fn a_turn_covers_its_streams_only() {
        let conflict = |s: &str| {
            StreamConflict::new(
                sid(s),
                crossfold_core::ExpectedVersion::Any,
                crossfold_core::StreamVersion::new(1),
            )
        };
        let turned = Turned {
            turn: StreamTurn::none(),
            streams: vec![sid("a"), sid("c")],
        };
        assert!(turned.covers(&[conflict("c"), conflict("a")]));
        assert!(!turned.covers(&[conflict("a"), conflict("b")]));
    }

    #[tokio::test]
    async fn a_store_without_turns_gives_none_and_nothing_is_hot_from_then_on() {
        let store = crossfold_memory::MemoryStore::new();
        let hot = HotStreams::new(4);
        let a = sid("a");
        hot.mark([&a]);
        assert_eq!(hot.hot([&a]), std::slice::from_ref(&a));
        let metrics = crate::metrics::MetricsRegistry::new().command("test");
        assert!(
            take_turn(&store, &hot, vec![a.clone()], &metrics)
                .await
                .is_none()
        );
        assert!(hot.hot([&a]).is_empty());
        hot.mark([&a]);
        assert!(hot.hot([&a]).is_empty());
    }
}
