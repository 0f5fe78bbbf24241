//! Snapshots of command state: a folded state kept in a store beside the events, so that the
//! first command on a long stream after a restart reads the snapshot and the events after it
//! instead of the whole history.
//!
//! A snapshot is only a shortcut. It names the version of every stream it was folded from, the
//! executor folds the events after those versions onto it, and every append still carries the
//! expected version of every stream the command read: a snapshot can make a command faster,
//! never decide differently. One whose state version differs from today's
//! ([`SnapshotState::VERSION`]), that does not decode, or that claims versions its streams never
//! reached is ignored, and the state is folded from the events again.
//!
//! The executor decides when to take one ([`SnapshotPolicy`]) and writes it after the command
//! has finished, outside the append's transaction, so an append never pays for it. Stores
//! implement [`SnapshotStore`]; a state opts in with [`SnapshotState`].

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::event::Timestamp;
use crate::id::{EventId, StreamId};
use crate::version::StreamVersion;

/// The most bytes one snapshot's payload may take (64 MiB); a larger state is not kept.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// The highest [`SnapshotState::VERSION`] (PostgreSQL keeps it in an `integer`).
pub const MAX_STATE_VERSION: u32 = i32::MAX as u32;

/// The longest name a snapshotted state may have, in bytes.
pub const MAX_SNAPSHOT_NAME: usize = 200;

/// A command state the executor may keep snapshots of.
///
/// ```
/// use crossfold_core::SnapshotState;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Balance { cents: i64, closed: bool }
///
/// impl SnapshotState for Balance {
///     const NAME: &'static str = "bank.balance";
///     // Bumped from 1 when `closed` was added: snapshots taken before are ignored.
///     const VERSION: u32 = 2;
/// }
/// ```
pub trait SnapshotState: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the state's snapshots are kept under: stable when the Rust type is renamed or
    /// moved, unique among the states of one store. Operators drop snapshots by this name. A
    /// state that folds two event types (`Fold<A>` and `Fold<B>`, differently) needs a
    /// snapshot name per event type: give each its own wrapper type.
    const NAME: &'static str;

    /// Bump it whenever the state's shape or its fold changes (a field added, an event folded
    /// differently): snapshots taken under another version are ignored and the state is
    /// folded from the events again (and counted, see the executor's metrics). At most
    /// [`MAX_STATE_VERSION`].
    const VERSION: u32;
}

/// When the executor takes a snapshot of a state it has folded: after `every` events folded
/// since the last one, or after a load from the store that took longer than `slower_than`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: Option<u64>,
    slower_than: Option<Duration>,
}

impl SnapshotPolicy {
    /// A snapshot every `events` events (at least 1) folded into the state since the last one.
    pub fn every(events: u64) -> Self {
        Self {
            every: Some(events.max(1)),
            slower_than: None,
        }
    }

    /// A snapshot after any load of the state from the store that took longer than `duration`
    /// (reading and folding together).
    pub fn slower_than(duration: Duration) -> Self {
        Self {
            every: None,
            slower_than: Some(duration),
        }
    }

    /// Also a snapshot after a load that took longer than `duration`.
    pub fn or_slower_than(mut self, duration: Duration) -> Self {
        self.slower_than = Some(duration);
        self
    }

    /// Events folded since the last snapshot that call for the next one.
    pub fn events(&self) -> Option<u64> {
        self.every
    }

    /// A load time that calls for a snapshot.
    pub fn duration(&self) -> Option<Duration> {
        self.slower_than
    }

    /// Whether a state with `unsaved` events folded since its last snapshot, loaded in `load`
    /// (`None`: not loaded from the store by this execution), is due for one.
    pub fn is_due(&self, unsaved: u64, load: Option<Duration>) -> bool {
        if unsaved == 0 {
            return false;
        }
        self.every.is_some_and(|n| unsaved >= n)
            || matches!((self.slower_than, load), (Some(limit), Some(took)) if took > limit)
    }
}

impl Default for SnapshotPolicy {
    /// Every 1,000 events, or after a load that took longer than 50 ms.
    fn default() -> Self {
        Self::every(1_000).or_slower_than(Duration::from_millis(50))
    }
}

/// One stored snapshot: a state folded from `streams` (then `discovered`) at `versions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The state's [`SnapshotState::NAME`].
    pub state: String,
    /// The state's [`SnapshotState::VERSION`] when it was taken.
    pub state_version: u32,
    /// The streams the command declared (or the one stream of a per-stream state): the key
    /// the snapshot is found by, with `state`.
    pub streams: Vec<StreamId>,
    /// Streams the command found by discovery, after the declared ones.
    pub discovered: Vec<StreamId>,
    /// The version of each stream of `streams` then `discovered` that the state reflects.
    pub versions: Vec<StreamVersion>,
    /// The highest event id folded into the state.
    pub floor: Option<EventId>,
    /// The state, serialized (JSON).
    pub payload: Vec<u8>,
    /// When it was taken (set by the store on save).
    pub taken_at: Timestamp,
}

impl Snapshot {
    /// Events folded into the state: the sum of its streams' versions.
    pub fn events(&self) -> u64 {
        // Saturating: versions read back from a store are not to be trusted with arithmetic.
        self.versions
            .iter()
            .fold(0, |sum, v| sum.saturating_add(v.get()))
    }

    /// Checks what a store must refuse: an empty or over-long state name, no streams, a
    /// stream named twice, versions that do not match the streams, an oversized payload.
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid = |why: String| Err(StoreError::InvalidRequest(why));
        if self.state.is_empty() || self.state.len() > MAX_SNAPSHOT_NAME {
            return invalid(format!(
                "a snapshot's state name must have 1 to {MAX_SNAPSHOT_NAME} bytes"
            ));
        }
        if self.state_version > MAX_STATE_VERSION {
            return invalid(format!(
                "a snapshot's state version must be at most {MAX_STATE_VERSION}"
            ));
        }
        if self.streams.is_empty() {
            return invalid("a snapshot must name at least one stream".into());
        }
        if self.versions.len() != self.streams.len() + self.discovered.len() {
            return invalid(format!(
                "a snapshot of {} streams has {} versions",
                self.streams.len() + self.discovered.len(),
                self.versions.len()
            ));
        }
        let mut all: Vec<&StreamId> = self.streams.iter().chain(&self.discovered).collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return invalid("a snapshot names a stream twice".into());
        }
        if self.payload.len() > MAX_SNAPSHOT_BYTES {
            return invalid(format!(
                "a snapshot of {} bytes is over the limit of {MAX_SNAPSHOT_BYTES}",
                self.payload.len()
            ));
        }
        Ok(())
    }
}

/// What a store holds of one state's snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The state's name.
    pub state: String,
    /// How many snapshots.
    pub count: u64,
    /// Their payloads' total size, in bytes.
    pub bytes: u64,
    /// The state versions they were taken under, lowest first.
    pub state_versions: Vec<u32>,
    /// When the newest was taken.
    pub newest: Option<Timestamp>,
}

/// Where snapshots of command state are kept. The memory and PostgreSQL stores implement it;
/// the executor uses one given to it (see its builder's `snapshots`).
pub trait SnapshotStore: Send + Sync {
    /// The snapshot of `state` for each key (the declared streams, in the order declared), in
    /// the order of `keys`; `None` where there is none.
    fn load_snapshots(
        &self,
        state: &str,
        keys: &[Vec<StreamId>],
    ) -> impl Future<Output = Result<Vec<Option<Snapshot>>, StoreError>> + Send;

    /// Stores a snapshot, replacing the one under its key unless that one reflects more
    /// events under the same state version. Refuses (with [`StoreError::InvalidRequest`]) a
    /// snapshot that fails [`Snapshot::validate`] or claims a version a stream has not reached.
    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What is held, per state name.
    fn snapshot_summary(
        &self,
    ) -> impl Future<Output = Result<Vec<SnapshotSummary>, StoreError>> + Send;

    /// Drops every snapshot of `state`; returns how many there were. Commands fold from the
    /// events again, and take new snapshots as their policy says.
    fn drop_snapshots(&self, state: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            state: "s".into(),
            state_version: 1,
            streams: vec![StreamId::new("a").unwrap()],
            discovered: vec![],
            versions: vec![StreamVersion::new(3)],
            floor: None,
            payload: b"{}".to_vec(),
            taken_at: Timestamp::now(),
        }
    }

    #[test]
    fn a_policy_is_due_after_its_events_or_a_slow_load() {
        let policy = SnapshotPolicy::every(10).or_slower_than(Duration::from_millis(5));
        assert!(!policy.is_due(9, None));
        assert!(policy.is_due(10, None));
        assert!(policy.is_due(1, Some(Duration::from_millis(6))));
        assert!(!policy.is_due(1, Some(Duration::from_millis(5))));
        assert!(!policy.is_due(0, Some(Duration::from_secs(1))));
        assert!(!SnapshotPolicy::slower_than(Duration::from_millis(5)).is_due(1_000_000, None));
    }

    #[test]
    fn snapshots_that_do_not_add_up_are_refused() {
        assert!(snapshot().validate().is_ok());
        let mut s = snapshot();
        s.versions.push(StreamVersion::new(1));
        assert!(s.validate().is_err());
        let mut s = snapshot();
        s.discovered.push(s.streams[0].clone());
        s.versions.push(StreamVersion::new(1));
        assert!(s.validate().is_err());
        let mut s = snapshot();
        s.streams.clear();
        s.versions.clear();
        assert!(s.validate().is_err());
        let mut s = snapshot();
        s.state = String::new();
        assert!(s.validate().is_err());
        assert_eq!(snapshot().events(), 3);
    }
}
