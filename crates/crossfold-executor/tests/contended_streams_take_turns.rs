//! Turns on contended streams, against a store that hands them out in memory (a FIFO lock per
//! stream, as PostgreSQL's advisory locks behave): an uncontended command takes none, a
//! command that loses a race to another writer takes one on the stream that conflicted, a race
//! lost while holding it does not use up an attempt, and two executors — each with its own
//! in-process queue, as two processes would be — writing one stream all get through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Credit, Ledger, sid};
use crossfold_core::{
    AppendRequest, Appended, Codec, EventData, EventStore, ExpectedVersion, Json, LogFilter,
    Position, RecordedEvent, StoreError, StreamConflict, StreamEvents, StreamId, StreamRead,
    StreamTurn,
};
use crossfold_executor::{Executor, RetryPolicy};
use crossfold_memory::MemoryStore;

/// A memory store with turns, and a writer that takes none: before each of the next
/// `interlopes` appends of the executor, it appends to the same stream first.
#[derive(Clone, Default)]
struct TurnStore {
    inner: MemoryStore,
    locks: Arc<Mutex<HashMap<StreamId, Arc<tokio::sync::Mutex<()>>>>>,
    turns_asked: Arc<AtomicUsize>,
    turns_taken: Arc<AtomicUsize>,
    turns_waited: Arc<AtomicUsize>,
    interlopes: Arc<AtomicU32>,
    /// The next this many appends made without a turn are refused for another writer's turn,
    /// as PostgreSQL's append functions refuse them while a turn is held or waited for.
    give_way: Arc<AtomicU32>,
    /// Appends made under a turn.
    appends_in_turn: Arc<AtomicUsize>,
}

impl TurnStore {
    /// An append, after the interloper's when one is due.
    async fn append_racing(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        let interlope = self
            .interlopes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if interlope && let Some(first) = request.streams.first() {
            let sneaky = EventData::new(
                "Credited",
                Json.encode(&Ledger::Credited { amount: 1 }).unwrap(),
            );
            self.inner
                .append(AppendRequest::new().stream(
                    first.stream.clone(),
                    ExpectedVersion::Any,
                    vec![sneaky],
                ))
                .await?;
        }
        self.inner.append(request).await
    }

    fn lock_of(&self, stream: &StreamId) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(stream.clone())
            .or_default()
            .clone()
    }
}

impl EventStore for TurnStore {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        self.inner.read_streams(reads).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        let give_way = self
            .give_way
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if give_way && let Some(first) = request.streams.first() {
            let actual = self.inner.stream_version(&first.stream).await?;
            return Err(StoreError::Conflict(vec![
                StreamConflict::new(first.stream.clone(), first.expected, actual).turn_held(),
            ]));
        }
        self.append_racing(request).await
    }
    async fn append_in_turn(
        &self,
        _turn: &StreamTurn,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        self.appends_in_turn.fetch_add(1, Ordering::SeqCst);
        self.append_racing(request).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit, filter).await
    }
    async fn head_position(&self) -> Result<Position, StoreError> {
        self.inner.head_position().await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }
    async fn take_turn(&self, streams: &[StreamId]) -> Result<StreamTurn, StoreError> {
        self.turns_asked.fetch_add(1, Ordering::SeqCst);
        let mut sorted = streams.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut guards = Vec::new();
        let mut waited = false;
        for stream in &sorted {
            let lock = self.lock_of(stream);
            let guard = match lock.clone().try_lock_owned() {
                Ok(guard) => guard,
                Err(_) => {
                    waited = true;
                    lock.lock_owned().await
                }
            };
            guards.push(guard);
        }
        self.turns_taken.fetch_add(1, Ordering::SeqCst);
        if waited {
            self.turns_waited.fetch_add(1, Ordering::SeqCst);
        }
        Ok(StreamTurn::new(guards, waited))
    }
}

#[tokio::test]
async fn an_uncontended_command_takes_no_turn() {
    let store = TurnStore::default();
    let executor = Executor::new(store.clone());
    for _ in 0..20 {
        executor
            .execute(Credit {
                account: sid("a"),
                amount: 1,
            })
            .await
            .unwrap();
    }
    assert_eq!(store.turns_taken.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_append_refused_for_another_writers_turn_takes_its_turn() {
    let store = TurnStore::default();
    let executor = Executor::new(store.clone());
    let credit = || Credit {
        account: sid("a"),
        amount: 1,
    };
    executor.execute(credit()).await.unwrap();
    // The next command decides on its cached view; its append is refused for a turn another
    // writer holds. It must take its turn too (a view from the cache alone would otherwise
    // count as "only behind", and race again without one) and append under it.
    store.give_way.store(1, Ordering::SeqCst);
    let done = executor.execute(credit()).await.unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(store.turns_taken.load(Ordering::SeqCst), 1);
    assert_eq!(store.appends_in_turn.load(Ordering::SeqCst), 1);
    // And the stream is hot now: the next command takes its turn before its first attempt.
    executor.execute(credit()).await.unwrap();
    assert_eq!(store.turns_taken.load(Ordering::SeqCst), 2);
    assert_eq!(store.appends_in_turn.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_race_lost_under_the_turn_does_not_use_up_an_attempt() {
    // Two attempts at most; the other writer wins the first three races.
    let store = TurnStore::default();
    store.interlopes.store(3, Ordering::SeqCst);
    let executor = Executor::builder(store.clone())
        .retry(RetryPolicy::default().max_attempts(2))
        .build();
    let done = executor
        .execute(Credit {
            account: sid("a"),
            amount: 5,
        })
        .await
        .unwrap();
    assert_eq!(done.attempts, 4, "one lost race, two more under the turn");
    assert_eq!(store.turns_taken.load(Ordering::SeqCst), 1);

    // Without turns the same races use the attempts up.
    let store = TurnStore::default();
    store.interlopes.store(3, Ordering::SeqCst);
    let executor = Executor::builder(store.clone())
        .retry(RetryPolicy::default().max_attempts(2).take_turns(false))
        .build();
    let error = executor
        .execute(Credit {
            account: sid("a"),
            amount: 5,
        })
        .await
        .unwrap_err();
    assert!(error.is_conflict(), "{error:?}");
    assert_eq!(store.turns_taken.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_races_lost_under_the_turn_are_bounded() {
    // A writer that never stops winning: the command gives up after twice its attempts.
    let store = TurnStore::default();
    store.interlopes.store(u32::MAX, Ordering::SeqCst);
    let executor = Executor::builder(store.clone())
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .base_delay(Duration::from_micros(10)),
        )
        .build();
    let error = executor
        .execute(Credit {
            account: sid("a"),
            amount: 5,
        })
        .await
        .unwrap_err();
    assert!(error.is_conflict(), "{error:?}");
    let attempts = match &error {
        crossfold_executor::Error::Store { attempts, .. } => *attempts,
        other => panic!("{other:?}"),
    };
    assert_eq!(attempts, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executors_on_one_stream_all_get_through() {
    const TASKS: usize = 8;
    const CREDITS: usize = 50;
    let store = TurnStore::default();
    let account = sid("account-1");
    let mut runs = Vec::new();
    for _ in 0..2 {
        // Each its own caches and in-process queue, like two processes.
        let executor = Executor::new(store.clone());
        for _ in 0..TASKS {
            let (executor, account) = (executor.clone(), account.clone());
            runs.push(tokio::spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..CREDITS {
                    // Both executors write from the same store, in memory: make room for the
                    // other one's commands between ours.
                    tokio::task::yield_now().await;
                    if let Err(error) = executor
                        .execute(Credit {
                            account: account.clone(),
                            amount: 1,
                        })
                        .await
                    {
                        failed.push(format!("{error:?}"));
                    }
                }
                failed
            }));
        }
    }
    let mut failed = Vec::new();
    for run in runs {
        failed.extend(run.await.unwrap());
    }
    assert!(failed.is_empty(), "{} failed: {failed:#?}", failed.len());
    let stored = store
        .inner
        .read_stream(&account, Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(stored.events.len(), 2 * TASKS * CREDITS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_waiting_for_a_turn_holds_no_place_in_admission() {
    // One place. Someone holds the turn on `a`; a command on `a` loses a race and waits for
    // that turn. Meanwhile a command on `b` must be admitted: the waiting command holds no
    // place (were it to keep it, `b` would be refused once the admission timeout passed — and
    // an execution holding the turn and waiting to be admitted again would wait as long).
    let store = TurnStore::default();
    let executor = Executor::builder(store.clone())
        .concurrency_limit(1)
        .admission_timeout(Duration::from_millis(500))
        .build();
    let held = store.take_turn(&[sid("a")]).await.unwrap();
    store.interlopes.store(1, Ordering::SeqCst);
    let waiting = tokio::spawn({
        let executor = executor.clone();
        async move {
            executor
                .execute(Credit {
                    account: sid("a"),
                    amount: 1,
                })
                .await
        }
    });
    // Until the command on `a` has lost its race and asked for the turn.
    while store.turns_asked.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    executor
        .execute(Credit {
            account: sid("b"),
            amount: 1,
        })
        .await
        .expect("a command on another stream must be admitted meanwhile");
    drop(held);
    let done = waiting.await.unwrap().unwrap();
    assert_eq!(done.attempts, 2);
}

#[test]
fn turns_are_counted_with_their_waits() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let store = TurnStore::default();
            let executor = Executor::new(store.clone());
            // A lost race: the next attempt takes the turn nobody holds.
            store.interlopes.store(1, Ordering::SeqCst);
            executor
                .execute(Credit {
                    account: sid("a"),
                    amount: 1,
                })
                .await
                .unwrap();
            // The stream is hot now: the next command takes its turn first, and waits for
            // the one held here until it is given back.
            let held = store.take_turn(&[sid("a")]).await.unwrap();
            let waiting = tokio::spawn({
                let executor = executor.clone();
                async move {
                    executor
                        .execute(Credit {
                            account: sid("a"),
                            amount: 1,
                        })
                        .await
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
            waiting.await.unwrap().unwrap();
        });
    });
    let text = handle.render();
    for line in [
        "crossfold_executor_turns_total{command=\"Credit\",waited=\"false\"} 1",
        "crossfold_executor_turns_total{command=\"Credit\",waited=\"true\"} 1",
        "crossfold_executor_turn_wait_seconds_count{command=\"Credit\"} 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
