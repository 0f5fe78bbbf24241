//! Which command states the executor keeps snapshots of, where, and when it takes one.
//!
//! The executor takes a snapshot when it keeps a folded state for the next command (after the
//! execution) and the state's [`SnapshotPolicy`] says it is due; the snapshot is written by a
//! task of its own, so neither the append nor the command's caller waits for it. A command
//! whose state is in no cache reads the snapshot and the events after it (see the `load`
//! module).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossfold_core::metrics::SNAPSHOTS_TOTAL;
use crossfold_core::{
    ErrorChain, EventId, Snapshot, SnapshotPolicy, SnapshotState, SnapshotStore, StoreError,
    StreamId, StreamVersion, Timestamp,
};
use tokio::sync::Notify;

/// How many keys' snapshots may wait to be written; a snapshot of another key due while that
/// many wait is taken at a later command instead.
const MAX_WAITING: usize = 4_096;

/// Which command states the executor keeps snapshots of, and where
/// ([`ExecutorBuilder::snapshots`](crate::ExecutorBuilder::snapshots)).
///
/// ```
/// # use crossfold_core::{Fold, Recorded, SnapshotPolicy, SnapshotState};
/// # use crossfold_executor::Snapshots;
/// # use crossfold_memory::MemoryStore;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Balance { cents: i64 }
/// impl SnapshotState for Balance {
///     const NAME: &'static str = "bank.balance";
///     const VERSION: u32 = 1;
/// }
/// let store = MemoryStore::new();
/// let snapshots = Snapshots::new(store.clone()).keep::<Balance>(SnapshotPolicy::every(500));
/// ```
pub struct Snapshots {
    store: Arc<dyn SnapshotBackend>,
    states: HashMap<TypeId, Format>,
}

impl Snapshots {
    /// Snapshots kept in `store`: a clone of the executor's own store (the store checks a
    /// snapshot's versions against its own streams).
    pub fn new<S: SnapshotStore + Clone + 'static>(store: S) -> Self {
        Self {
            store: Arc::new(store),
            states: HashMap::new(),
        }
    }

    /// Keeps snapshots of the state `St` (of every command whose `State` it is), as `policy`
    /// says. Snapshots are found by [`SnapshotState::NAME`] and the streams a command declares
    /// (for a [`PER_STREAM`](crossfold_core::Fold::PER_STREAM) state, one per stream); those
    /// of another [`SnapshotState::VERSION`] are ignored.
    pub fn keep<St: SnapshotState>(mut self, policy: SnapshotPolicy) -> Self {
        self.states.insert(
            TypeId::of::<St>(),
            Format {
                name: St::NAME,
                version: St::VERSION,
                policy,
                encode: encode::<St>,
                decode: decode::<St>,
            },
        );
        self
    }
}

/// How one state is written and read back, and when.
pub(crate) struct Format {
    pub(crate) name: &'static str,
    pub(crate) version: u32,
    pub(crate) policy: SnapshotPolicy,
    encode: Encode,
    decode: Decode,
}

/// Serializes a state given as `Any` (`None`: not the format's state).
type Encode = fn(&dyn Any) -> Option<Result<Vec<u8>, serde_json::Error>>;

/// Reads a state back, as `Any`.
type Decode = fn(&[u8]) -> Result<Box<dyn Any>, serde_json::Error>;

fn encode<St: SnapshotState>(state: &dyn Any) -> Option<Result<Vec<u8>, serde_json::Error>> {
    state.downcast_ref::<St>().map(serde_json::to_vec)
}

fn decode<St: SnapshotState>(bytes: &[u8]) -> Result<Box<dyn Any>, serde_json::Error> {
    serde_json::from_slice::<St>(bytes).map(|state| Box::new(state) as Box<dyn Any>)
}

impl Format {
    /// What happened to a snapshot of this state, counted.
    pub(crate) fn count(&self, outcome: &'static str) {
        metrics::counter!(SNAPSHOTS_TOTAL, "state" => self.name, "outcome" => outcome).increment(1);
    }

    /// The state in a snapshot, if it is of this version and decodes.
    pub(crate) fn read<St: 'static>(&self, snapshot: &Snapshot) -> Option<St> {
        if snapshot.state_version != self.version {
            self.count("stale");
            return None;
        }
        match (self.decode)(&snapshot.payload).map(|state| state.downcast::<St>()) {
            Ok(Ok(state)) => Some(*state),
            Ok(Err(_)) => None,
            Err(error) => {
                tracing::warn!(state = self.name, error = %error, "a snapshot does not decode; folding from the events");
                self.count("invalid");
                None
            }
        }
    }
}

type Saving<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A [`SnapshotStore`] behind a pointer.
trait SnapshotBackend: Send + Sync {
    fn load<'a>(
        &'a self,
        state: &'a str,
        keys: &'a [Vec<StreamId>],
    ) -> Saving<'a, Vec<Option<Snapshot>>>;
    fn save(&self, snapshot: Snapshot) -> Saving<'static, ()>;
}

impl<S: SnapshotStore + Clone + 'static> SnapshotBackend for S {
    fn load<'a>(
        &'a self,
        state: &'a str,
        keys: &'a [Vec<StreamId>],
    ) -> Saving<'a, Vec<Option<Snapshot>>> {
        Box::pin(self.load_snapshots(state, keys))
    }

    fn save(&self, snapshot: Snapshot) -> Saving<'static, ()> {
        let store = self.clone();
        Box::pin(async move { store.save_snapshot(&snapshot).await })
    }
}

/// The executor's side of [`Snapshots`]: the formats, the store, and the snapshots waiting to
/// be written.
pub(crate) struct Keeper {
    store: Arc<dyn SnapshotBackend>,
    states: HashMap<TypeId, Format>,
    queue: Arc<Queue>,
}

/// Snapshots waiting to be written, one per key (a newer one replaces a waiting older one),
/// and whether a task is writing them.
#[derive(Default)]
struct Queue {
    waiting: Mutex<Waiting>,
    idle: Notify,
}

#[derive(Default)]
struct Waiting {
    snapshots: HashMap<(&'static str, Vec<StreamId>), Pending>,
    writing: bool,
}

/// A snapshot waiting to be written: the state as the command left it (a clone), serialized
/// by the writing task, off the command's path.
struct Pending {
    name: &'static str,
    version: u32,
    encode: Encode,
    state: Box<dyn Any + Send>,
    streams: Vec<StreamId>,
    discovered: Vec<StreamId>,
    versions: Vec<StreamVersion>,
    floor: Option<EventId>,
}

impl Pending {
    fn into_snapshot(self) -> Result<Snapshot, serde_json::Error> {
        let payload = match (self.encode)(&*self.state) {
            Some(encoded) => encoded?,
            // A state queued under its own format: its type is the format's.
            None => return Err(serde::ser::Error::custom("not the format's state")),
        };
        Ok(Snapshot {
            state: self.name.to_owned(),
            state_version: self.version,
            streams: self.streams,
            discovered: self.discovered,
            versions: self.versions,
            floor: self.floor,
            payload,
            taken_at: Timestamp::now(),
        })
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Each change is one insert, one drain or one flag: never left half-made.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The task writing queued snapshots. It says it is done under the same lock that found the
/// queue empty, so a snapshot queued meanwhile either is seen or starts another writer; if the
/// task is dropped before (its runtime shutting down), the queue learns it is not writing.
struct Writer {
    queue: Arc<Queue>,
    store: Arc<dyn SnapshotBackend>,
    finished: bool,
}

impl Writer {
    async fn run(mut self) {
        loop {
            let batch: Vec<Pending> = {
                let mut waiting = self.queue.lock();
                if waiting.snapshots.is_empty() {
                    waiting.writing = false;
                    self.finished = true;
                    drop(waiting);
                    self.queue.idle.notify_waiters();
                    return;
                }
                waiting
                    .snapshots
                    .drain()
                    .map(|(_, pending)| pending)
                    .collect()
            };
            for pending in batch {
                let name = pending.name;
                let outcome = match pending.into_snapshot() {
                    Ok(snapshot) => self.store.save(snapshot).await.map_err(|error| {
                        tracing::warn!(state = name, error = %ErrorChain(&error), "a snapshot could not be written");
                    }),
                    Err(error) => {
                        tracing::warn!(state = name, error = %error, "a state could not be serialized for a snapshot");
                        Err(())
                    }
                };
                let outcome = if outcome.is_ok() { "saved" } else { "failed" };
                metrics::counter!(SNAPSHOTS_TOTAL, "state" => name, "outcome" => outcome)
                    .increment(1);
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            self.queue.lock().writing = false;
            self.queue.idle.notify_waiters();
        }
    }
}

impl Keeper {
    pub(crate) fn new(snapshots: Snapshots) -> Option<Self> {
        if snapshots.states.is_empty() {
            return None;
        }
        Some(Self {
            store: snapshots.store,
            states: snapshots.states,
            queue: Arc::default(),
        })
    }

    /// The format of state `St`, if it is kept.
    pub(crate) fn format<St: 'static>(&self) -> Option<&Format> {
        self.states.get(&TypeId::of::<St>())
    }

    /// The snapshot of `format`'s state under each key; on a store failure none (the command
    /// folds from the events, as it would without snapshots).
    pub(crate) async fn load(
        &self,
        format: &Format,
        keys: &[Vec<StreamId>],
    ) -> Vec<Option<Snapshot>> {
        match self.store.load(format.name, keys).await {
            Ok(found) if found.len() == keys.len() => found,
            Ok(_) => {
                format.count("failed");
                tracing::warn!(
                    state = format.name,
                    "the snapshot store answered for other keys than asked; folding from the events"
                );
                vec![None; keys.len()]
            }
            Err(error) => {
                format.count("failed");
                tracing::warn!(state = format.name, error = %ErrorChain(&error), "snapshots could not be read; folding from the events");
                vec![None; keys.len()]
            }
        }
    }

    /// Queues a snapshot of (a clone of) `state` for the writing task, started if none runs;
    /// the state is serialized and written there, not on the command's path. Returns false
    /// (and queues nothing) if it cannot be taken now: no Tokio runtime to write it, or the
    /// queue full of other keys.
    #[allow(
        clippy::too_many_arguments,
        reason = "one snapshot's parts, from its one caller"
    )]
    pub(crate) fn save<St: Clone + Send + 'static>(
        &self,
        format: &Format,
        state: &St,
        streams: Vec<StreamId>,
        discovered: Vec<StreamId>,
        versions: Vec<StreamVersion>,
        floor: Option<EventId>,
    ) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                state = format.name,
                "no Tokio runtime to write a snapshot with; none taken"
            );
            return false;
        };
        let key = (format.name, streams.clone());
        let pending = Pending {
            name: format.name,
            version: format.version,
            encode: format.encode,
            state: Box::new(state.clone()),
            streams,
            discovered,
            versions,
            floor,
        };
        let start = {
            let mut waiting = self.queue.lock();
            if waiting.snapshots.len() >= MAX_WAITING && !waiting.snapshots.contains_key(&key) {
                return false;
            }
            waiting.snapshots.insert(key, pending);
            !std::mem::replace(&mut waiting.writing, true)
        };
        // Spawned without the lock held: a runtime shutting down drops the task at once, and
        // its drop takes the lock.
        if start {
            runtime.spawn(
                Writer {
                    queue: self.queue.clone(),
                    store: self.store.clone(),
                    finished: false,
                }
                .run(),
            );
        }
        true
    }

    /// Waits until the writing task has nothing left to write (every snapshot queued before,
    /// and any queued while it writes, written or failed).
    pub(crate) async fn settled(&self) {
        loop {
            // Registered before the queue is looked at, so that the writer finishing in
            // between still wakes this waiter.
            let mut idle = std::pin::pin!(self.queue.idle.notified());
            idle.as_mut().enable();
            if !self.queue.lock().writing {
                return;
            }
            idle.await;
        }
    }
}
