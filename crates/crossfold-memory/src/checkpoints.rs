//! Checkpoints, leases and control state in memory, for projections whose read models live in
//! the same process.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossfold_core::Timestamp;
use crossfold_core::checkpoint::{
    CheckpointCommit, CheckpointError, ControlRequest, DeadLetter, Lease, Leases,
    ProjectionControl, ProjectionRecord, ProjectionStatus, UnitOfWork,
};

/// The unit of work of [`MemoryCheckpoints`]: actions to run when the checkpoint commits.
///
/// A projection whose read model is in memory can change it directly (a crash loses both the
/// model and the checkpoint), or register its changes with [`on_commit`](Self::on_commit) so
/// that a batch that fails half-way, or a commit refused because the lease was lost, changes
/// nothing.
#[derive(Default)]
pub struct MemoryUnit {
    actions: Vec<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for MemoryUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryUnit")
            .field("actions", &self.actions.len())
            .finish()
    }
}

impl MemoryUnit {
    /// Runs `action` when the unit commits (in registration order), never if it does not. It
    /// runs under the store's lock: it must not call the checkpoint store.
    pub fn on_commit(&mut self, action: impl FnOnce() + Send + 'static) {
        self.actions.push(Box::new(action));
    }
}

#[derive(Debug)]
struct Entry {
    record: ProjectionRecord,
    lease_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    projections: BTreeMap<String, Entry>,
    dead_letters: Vec<DeadLetter>,
}

/// A [`CheckpointStore`](crossfold_core::checkpoint::CheckpointStore) in memory: checkpoints,
/// leases (between runners of one process), control state and dead letters. Cheap to clone;
/// clones share the state.
#[derive(Clone, Debug, Default)]
pub struct MemoryCheckpoints {
    state: Arc<Mutex<State>>,
}

impl MemoryCheckpoints {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing in the state can be left half-changed by a panic: keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn entry(&mut self, name: &str) -> &mut Entry {
        self.projections
            .entry(name.to_owned())
            .or_insert_with(|| Entry {
                record: ProjectionRecord::new(name),
                lease_until: None,
            })
    }

    fn snapshot(&self, entry: &Entry) -> ProjectionRecord {
        let mut record = entry.record.clone();
        let now = Instant::now();
        match entry.lease_until {
            Some(until) if until > now => {
                let left = until - now;
                record.lease_expires_at =
                    Some(Timestamp::from(std::time::SystemTime::now() + left));
            }
            _ => {
                record.lease_owner = None;
                record.lease_expires_at = None;
            }
        }
        record.dead_letters = self
            .dead_letters
            .iter()
            .filter(|d| d.projection == record.name)
            .count() as u64;
        record
    }

    /// The entry, if `lease` is its current lease.
    fn leased(&mut self, lease: &Lease) -> Option<&mut Entry> {
        self.projections
            .get_mut(&lease.name)
            .filter(|e| e.record.lease_token == lease.token)
    }
}

impl ProjectionControl for MemoryCheckpoints {
    fn list(&self) -> impl Future<Output = Result<Vec<ProjectionRecord>, CheckpointError>> + Send {
        let state = self.state();
        let all = state
            .projections
            .values()
            .map(|e| state.snapshot(e))
            .collect();
        async move { Ok(all) }
    }

    fn get(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ProjectionRecord>, CheckpointError>> + Send {
        let state = self.state();
        let record = state.projections.get(name).map(|e| state.snapshot(e));
        async move { Ok(record) }
    }

    fn request(
        &self,
        name: &str,
        request: ControlRequest,
    ) -> impl Future<Output = Result<ProjectionRecord, CheckpointError>> + Send {
        let mut state = self.state();
        state.entry(name).record.apply_request(request);
        let record = state
            .projections
            .get(name)
            .map(|e| state.snapshot(e))
            .ok_or_else(|| CheckpointError::UnknownProjection(name.to_owned()));
        async move { record }
    }

    fn dead_letters(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, CheckpointError>> + Send {
        let mut letters: Vec<DeadLetter> = self
            .state()
            .dead_letters
            .iter()
            .filter(|d| d.projection == name)
            .cloned()
            .collect();
        letters.sort_by_key(|d| d.position);
        async move { Ok(letters) }
    }
}

impl Leases for MemoryCheckpoints {
    fn acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, CheckpointError>> + Send {
        let mut state = self.state();
        let entry = state.entry(name);
        let now = Instant::now();
        let free = entry.lease_until.is_none_or(|until| until <= now)
            || entry.record.lease_owner.as_deref() == Some(owner);
        let lease = free.then(|| {
            entry.record.lease_token = entry.record.lease_token.saturating_add(1);
            entry.record.lease_owner = Some(owner.to_owned());
            entry.lease_until = Some(expiry(now, ttl));
            Lease::new(name, owner, entry.record.lease_token)
        });
        async move { Ok(lease) }
    }

    fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<ProjectionRecord>, CheckpointError>> + Send {
        let mut state = self.state();
        let now = Instant::now();
        let renewed = match state.leased(lease) {
            // An expired lease nobody took over yet is still ours: the token is unchanged.
            Some(entry) => {
                entry.lease_until = Some(expiry(now, ttl));
                entry.record.lease_owner = Some(lease.owner.clone());
                true
            }
            None => false,
        };
        let record = renewed
            .then(|| {
                state
                    .projections
                    .get(&lease.name)
                    .map(|e| state.snapshot(e))
            })
            .flatten();
        async move { Ok(record) }
    }

    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        if let Some(entry) = self.state().leased(lease) {
            entry.lease_until = None;
            entry.record.lease_owner = None;
        }
        async { Ok(()) }
    }

    fn report(
        &self,
        lease: &Lease,
        status: &ProjectionStatus,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        if let Some(entry) = self.state().leased(lease) {
            entry.record.status = status.clone();
        }
        async { Ok(()) }
    }
}

impl UnitOfWork for MemoryCheckpoints {
    type Unit = MemoryUnit;

    async fn begin(&self, _lease: &Lease) -> Result<MemoryUnit, CheckpointError> {
        Ok(MemoryUnit::default())
    }

    fn commit(
        &self,
        lease: &Lease,
        unit: MemoryUnit,
        commit: CheckpointCommit,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        let mut state = self.state();
        let result = match state.leased(lease) {
            None => Err(CheckpointError::Fenced {
                name: lease.name.clone(),
                token: lease.token,
            }),
            Some(entry) => {
                entry.record.position = commit.position;
                entry.record.generation = commit.generation;
                entry.record.serving_generation = commit.serving_generation;
                if commit.clears_replay {
                    entry.record.replay = None;
                }
                state.dead_letters.extend(commit.dead_letters);
                // Under the lock, so that no other commit of this projection comes between the
                // checkpoint and the model's changes.
                for action in unit.actions {
                    action();
                }
                Ok(())
            }
        };
        drop(state);
        async move { result }
    }
}

/// When a lease taken at `now` for `ttl` runs out; a TTL too long for the clock lasts a year.
fn expiry(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}
