//! Snapshots of command state: after a restart a command folds only the events after the
//! latest snapshot; a snapshot of another state version, one that does not decode and a
//! snapshot store that fails are passed over (and counted), never a reason to decide
//! differently or to fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, EventId, EventStore, Fold, Recorded, Snapshot,
    SnapshotPolicy, SnapshotState, SnapshotStore, SnapshotSummary, StoreError, StreamId, StreamRef,
    StreamVersion, Timestamp,
};
use crossfold_executor::{Executor, Snapshots};
use crossfold_memory::MemoryStore;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

fn sid(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Tally {
    Added {
        n: u64,
        folded_here: u64,
        total: u64,
    },
}

impl DomainEvent for Tally {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

/// A running total; `folded_here` counts the events this process folded into it (not kept in
/// snapshots), which shows where a fold started.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Total<const V: u32, const PER_STREAM: bool> {
    total: u64,
    #[serde(skip)]
    folded_here: u64,
}

impl<const V: u32, const P: bool> Fold<Tally> for Total<V, P> {
    const PER_STREAM: bool = P;

    fn apply(&mut self, event: &Recorded<Tally>) {
        let Tally::Added { n, .. } = event.event;
        self.total += n;
        self.folded_here += 1;
    }

    fn merge(&mut self, part: &Self) {
        self.total += part.total;
        self.folded_here += part.folded_here;
    }
}

impl<const V: u32, const P: bool> SnapshotState for Total<V, P> {
    const NAME: &'static str = if P { "test.parts" } else { "test.total" };
    const VERSION: u32 = V;
}

struct Add<const V: u32, const P: bool>(StreamId, u64);

impl<const V: u32, const P: bool> Command for Add<V, P> {
    type Event = Tally;
    type State = Total<V, P>;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.0.clone()
    }

    fn handle<'x>(
        &self,
        state: &Total<V, P>,
        stream: StreamRef<'x>,
        out: &mut Emit<'x, Tally>,
    ) -> Result<(), CommandError> {
        out.append(
            stream,
            Tally::Added {
                n: self.1,
                folded_here: state.folded_here,
                total: state.total,
            },
        );
        Ok(())
    }
}

fn executor<const V: u32, const P: bool, S: SnapshotStore + Clone + 'static>(
    store: &MemoryStore,
    snapshots: S,
    policy: SnapshotPolicy,
) -> Executor<MemoryStore> {
    Executor::builder(store.clone())
        .snapshots(Snapshots::new(snapshots).keep::<Total<V, P>>(policy))
        .build()
}

/// What the command decided on: (events folded in this process, total).
async fn add<const V: u32, const P: bool>(executor: &Executor<MemoryStore>, n: u64) -> (u64, u64) {
    let done = executor
        .execute(Add::<V, P>(sid("tally"), n))
        .await
        .unwrap();
    let Tally::Added {
        folded_here, total, ..
    } = done.decode::<Tally>().unwrap()[0].event.clone();
    (folded_here, total)
}

async fn cold_start<const P: bool>() {
    let store = MemoryStore::new();
    let first = executor::<1, P, _>(&store, store.clone(), SnapshotPolicy::every(10));
    for _ in 0..105 {
        add::<1, P>(&first, 1).await;
    }
    first.snapshots_written().await;
    let summary = store.snapshot_summary().await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].count, 1);
    assert_eq!(summary[0].state_versions, vec![1]);
    // A new process: the snapshot at 100 and the 5 events after it.
    let restarted = executor::<1, P, _>(&store, store.clone(), SnapshotPolicy::every(10));
    assert_eq!(add::<1, P>(&restarted, 1).await, (5, 105));
    // Without snapshots the whole stream is folded, to the same total.
    let plain = Executor::new(store.clone());
    assert_eq!(add::<1, P>(&plain, 1).await, (106, 106));
}

#[tokio::test]
async fn the_first_command_after_a_restart_folds_only_the_events_after_the_snapshot() {
    cold_start::<false>().await;
}

#[tokio::test]
async fn per_stream_states_start_from_their_snapshot_too() {
    cold_start::<true>().await;
}

#[test]
fn a_snapshot_of_another_state_version_is_ignored_counted_and_replaced() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let store = MemoryStore::new();
            let v1 = executor::<1, false, _>(&store, store.clone(), SnapshotPolicy::every(10));
            for _ in 0..20 {
                add::<1, false>(&v1, 2).await;
            }
            v1.snapshots_written().await;
            let v2 = executor::<2, false, _>(&store, store.clone(), SnapshotPolicy::every(10));
            // Version 2 folds all 20 events itself, and replaces the snapshot with its own.
            assert_eq!(add::<2, false>(&v2, 2).await, (20, 40));
            v2.snapshots_written().await;
            let summary = store.snapshot_summary().await.unwrap();
            assert_eq!(summary[0].state_versions, vec![2]);
            let again = executor::<2, false, _>(&store, store.clone(), SnapshotPolicy::every(10));
            assert_eq!(add::<2, false>(&again, 2).await, (0, 42));
        });
    });
    let text = handle.render();
    let count = |outcome: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("crossfold_executor_snapshots_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    assert_eq!(count("stale"), 1.0, "{text}");
    assert_eq!(count("loaded"), 1.0, "{text}");
    // One per version: snapshots waiting for the writer replace older ones of their key.
    assert_eq!(count("saved"), 2.0, "{text}");
}

#[tokio::test]
async fn a_snapshot_that_does_not_decode_is_passed_over() {
    let store = MemoryStore::new();
    let plain = Executor::new(store.clone());
    for _ in 0..7 {
        add::<1, false>(&plain, 3).await;
    }
    store
        .save_snapshot(&Snapshot {
            state: "test.total".into(),
            state_version: 1,
            streams: vec![sid("tally")],
            discovered: vec![],
            versions: vec![StreamVersion::new(7)],
            floor: None,
            payload: b"not json".to_vec(),
            taken_at: Timestamp::now(),
        })
        .await
        .unwrap();
    let with = executor::<1, false, _>(&store, store.clone(), SnapshotPolicy::every(100));
    assert_eq!(add::<1, false>(&with, 3).await, (7, 21));
}

#[tokio::test]
async fn a_snapshot_store_that_fails_fails_no_command() {
    let store = MemoryStore::new();
    let executor = executor::<1, false, _>(&store, Down, SnapshotPolicy::every(1));
    for i in 0..5 {
        assert_eq!(add::<1, false>(&executor, 1).await, (i, i));
    }
    executor.snapshots_written().await;
    let restarted = Executor::builder(store.clone())
        .snapshots(Snapshots::new(Down).keep::<Total<1, false>>(SnapshotPolicy::every(1)))
        .build();
    assert_eq!(add::<1, false>(&restarted, 1).await, (5, 5));
}

#[tokio::test]
async fn a_slow_load_calls_for_a_snapshot() {
    let store = MemoryStore::new();
    let plain = Executor::new(store.clone());
    for _ in 0..3 {
        add::<1, false>(&plain, 1).await;
    }
    let executor = executor::<1, false, _>(
        &store,
        store.clone(),
        SnapshotPolicy::slower_than(Duration::ZERO),
    );
    add::<1, false>(&executor, 1).await;
    executor.snapshots_written().await;
    let summary = store.snapshot_summary().await.unwrap();
    assert_eq!(summary.len(), 1, "a load that took any time is slow here");
    // Taken after the command, so it holds the command's own event.
    let found = store
        .load_snapshots("test.total", &[vec![sid("tally")]])
        .await
        .unwrap();
    assert_eq!(
        found[0].as_ref().unwrap().versions,
        vec![StreamVersion::new(4)]
    );
    assert_eq!(
        store.stream_version(&sid("tally")).await.unwrap(),
        StreamVersion::new(4)
    );
}

/// A snapshot store holding one snapshot it was given (for any state), written past the
/// checks a real store makes; it takes no others.
#[derive(Clone)]
struct Planted(Snapshot);

impl SnapshotStore for Planted {
    async fn load_snapshots(
        &self,
        state: &str,
        keys: &[Vec<StreamId>],
    ) -> Result<Vec<Option<Snapshot>>, StoreError> {
        Ok(keys
            .iter()
            .map(|key| (state == self.0.state && *key == self.0.streams).then(|| self.0.clone()))
            .collect())
    }
    async fn save_snapshot(&self, _: &Snapshot) -> Result<(), StoreError> {
        Ok(())
    }
    async fn snapshot_summary(&self) -> Result<Vec<SnapshotSummary>, StoreError> {
        Ok(Vec::new())
    }
    async fn drop_snapshots(&self, _: &str) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Seven events of 3 in `tally`, written without snapshots.
async fn seven() -> MemoryStore {
    let store = MemoryStore::new();
    let plain = Executor::new(store.clone());
    for _ in 0..7 {
        add::<1, false>(&plain, 3).await;
    }
    store
}

fn planted(name: &str, versions: Vec<u64>, discovered: Vec<StreamId>) -> Snapshot {
    Snapshot {
        state: name.into(),
        state_version: 1,
        streams: vec![sid("tally")],
        discovered,
        versions: versions.into_iter().map(StreamVersion::new).collect(),
        floor: None,
        // A total no fold of these events gives: used, it would show.
        payload: br#"{"total":1000}"#.to_vec(),
        taken_at: Timestamp::now(),
    }
}

async fn cold<const P: bool>(store: &MemoryStore, snapshot: Snapshot) -> (u64, u64) {
    let executor = executor::<1, P, _>(store, Planted(snapshot), SnapshotPolicy::every(100));
    add::<1, P>(&executor, 3).await
}

#[tokio::test]
async fn a_snapshot_ahead_of_its_stream_is_passed_over() {
    let store = seven().await;
    assert_eq!(
        cold::<false>(&store, planted("test.total", vec![50], vec![])).await,
        (7, 21)
    );
    assert_eq!(
        cold::<true>(&store, planted("test.parts", vec![50], vec![])).await,
        (8, 24)
    );
    // At the stream's own version it is used (and the total shows it).
    assert_eq!(
        cold::<false>(&store, planted("test.total", vec![9], vec![])).await,
        (0, 1000)
    );
}

#[tokio::test]
async fn a_snapshot_with_streams_this_command_does_not_discover_is_passed_over() {
    let store = seven().await;
    let snapshot = planted("test.total", vec![7, 0], vec![sid("elsewhere")]);
    assert_eq!(cold::<false>(&store, snapshot).await, (7, 21));
}

#[tokio::test]
async fn events_after_a_snapshot_that_would_fold_in_another_order_are_folded_from_the_start() {
    let store = seven().await;
    // A floor above every id: the events after version 5 have lower ids, so folded after the
    // snapshot they would come later than in a fold from the start.
    let mut snapshot = planted("test.total", vec![5], vec![]);
    snapshot.floor = Some(EventId::parse("ffffffff-ffff-7fff-bfff-ffffffffffff").unwrap());
    assert_eq!(cold::<false>(&store, snapshot).await, (7, 21));
}

/// A snapshot store that is always down.
#[derive(Clone)]
struct Down;

fn down() -> StoreError {
    StoreError::Unavailable("snapshot store down".into())
}

impl SnapshotStore for Down {
    async fn load_snapshots(
        &self,
        _: &str,
        _: &[Vec<StreamId>],
    ) -> Result<Vec<Option<Snapshot>>, StoreError> {
        Err(down())
    }
    async fn save_snapshot(&self, _: &Snapshot) -> Result<(), StoreError> {
        Err(down())
    }
    async fn snapshot_summary(&self) -> Result<Vec<SnapshotSummary>, StoreError> {
        Err(down())
    }
    async fn drop_snapshots(&self, _: &str) -> Result<u64, StoreError> {
        Err(down())
    }
}
