//! Snapshots of command state held beside the events, for as long as the store lives.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossfold_core::{
    EventStore, Snapshot, SnapshotStore, SnapshotSummary, StoreError, StreamId, Timestamp,
};

use crate::MemoryStore;

/// The snapshots of a store, by (state name, declared streams).
#[derive(Default)]
pub(crate) struct Snapshots(Mutex<HashMap<(String, Vec<StreamId>), Snapshot>>);

impl Snapshots {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, Vec<StreamId>), Snapshot>> {
        // Every change is one insert or one retain, which cannot leave the map half-changed.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SnapshotStore for MemoryStore {
    async fn load_snapshots(
        &self,
        state: &str,
        keys: &[Vec<StreamId>],
    ) -> Result<Vec<Option<Snapshot>>, StoreError> {
        let held = self.snapshots().lock();
        Ok(keys
            .iter()
            .map(|key| held.get(&(state.to_owned(), key.clone())).cloned())
            .collect())
    }

    /// Checks the snapshot as the PostgreSQL store does, including that no stream is claimed
    /// at a version it has not reached.
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        snapshot.validate()?;
        for (stream, version) in snapshot
            .streams
            .iter()
            .chain(&snapshot.discovered)
            .zip(&snapshot.versions)
        {
            let actual = self.stream_version(stream).await?;
            if *version > actual {
                return Err(StoreError::InvalidRequest(format!(
                    "a snapshot claims stream {stream} at version {version}, but it is at {actual}"
                )));
            }
        }
        let mut saved = snapshot.clone();
        saved.taken_at = Timestamp::now();
        let key = (saved.state.clone(), saved.streams.clone());
        let mut held = self.snapshots().lock();
        if let Some(existing) = held.get(&key)
            && existing.state_version == saved.state_version
            && existing.events() > saved.events()
        {
            return Ok(());
        }
        held.insert(key, saved);
        Ok(())
    }

    async fn snapshot_summary(&self) -> Result<Vec<SnapshotSummary>, StoreError> {
        let held = self.snapshots().lock();
        let mut by_state: HashMap<&str, (SnapshotSummary, BTreeSet<u32>)> = HashMap::new();
        for snapshot in held.values() {
            let (summary, versions) =
                by_state.entry(snapshot.state.as_str()).or_insert_with(|| {
                    (
                        SnapshotSummary {
                            state: snapshot.state.clone(),
                            count: 0,
                            bytes: 0,
                            state_versions: Vec::new(),
                            newest: None,
                        },
                        BTreeSet::new(),
                    )
                });
            summary.count += 1;
            summary.bytes += snapshot.payload.len() as u64;
            summary.newest = summary.newest.max(Some(snapshot.taken_at));
            versions.insert(snapshot.state_version);
        }
        let mut summaries: Vec<SnapshotSummary> = by_state
            .into_values()
            .map(|(mut summary, versions)| {
                summary.state_versions = versions.into_iter().collect();
                summary
            })
            .collect();
        summaries.sort_by(|a, b| a.state.cmp(&b.state));
        Ok(summaries)
    }

    async fn drop_snapshots(&self, state: &str) -> Result<u64, StoreError> {
        let mut held = self.snapshots().lock();
        let before = held.len();
        held.retain(|(name, _), _| name != state);
        Ok((before - held.len()) as u64)
    }
}
