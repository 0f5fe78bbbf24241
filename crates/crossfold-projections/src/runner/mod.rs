//! The runner: one task per projection, each with its own lease, checkpoint and status.
//!
//! * `options` — [`RunnerOptions`].
//! * `status` — what a projection's task and its watchdog share ([`RunnerStatus`]), and the
//!   watchdog computing lag, rate and stalls.
//! * `health` — [`ProjectionHealth`], that status as a health check.
//! * `driver` — a projection's task: its owner's life as a state machine (acquiring, holding,
//!   running, replaying, switching, halted, backing off, lost, shutting down).
//! * `batch` — what the owner commits, each in one unit of work with the checkpoint.

mod batch;
mod driver;
mod health;
mod options;
mod status;

use std::sync::Arc;

use crossfold_core::EventStore;
use crossfold_core::checkpoint::{
    CheckpointError, CheckpointStore, ControlRequest, ProjectionRecord,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use health::ProjectionHealth;
pub use options::RunnerOptions;
pub use status::RunnerStatus;

use crate::projection::{Projection, ProjectionOptions};
use driver::Driver;
use status::{Shared, watchdog};

/// Runs projections: each in a task of its own, with its own lease, checkpoint and status.
///
/// Start projections with [`spawn`](Self::spawn); each is run by exactly one runner among all
/// processes sharing the checkpoint store (the one holding its lease). Steer them through
/// [`request`](Self::request) or, from another process, the store's
/// [`ProjectionControl`](crossfold_core::checkpoint::ProjectionControl). Call
/// [`shutdown`](Self::shutdown) to hand the leases over cleanly.
pub struct ProjectionRunner<S, C> {
    store: S,
    checkpoints: C,
    options: RunnerOptions,
    shutdown: watch::Sender<bool>,
    projections: Vec<(Arc<Shared>, JoinHandle<()>, JoinHandle<()>)>,
}

impl<S, C> std::fmt::Debug for ProjectionRunner<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("owner", &self.options.owner)
            .field("projections", &self.projections.len())
            .finish_non_exhaustive()
    }
}

impl<S, C> ProjectionRunner<S, C>
where
    S: EventStore + Clone + 'static,
    C: CheckpointStore,
{
    /// A runner reading `store` and keeping checkpoints in `checkpoints`.
    pub fn new(store: S, checkpoints: C, options: RunnerOptions) -> Self {
        Self {
            store,
            checkpoints,
            options,
            shutdown: watch::channel(false).0,
            projections: Vec::new(),
        }
    }

    /// The options.
    pub fn options(&self) -> &RunnerOptions {
        &self.options
    }

    /// The checkpoint store.
    pub fn checkpoints(&self) -> &C {
        &self.checkpoints
    }

    /// Starts running `projection` (on the current Tokio runtime). It runs here when this
    /// process gets its lease, and waits as a standby otherwise.
    pub fn spawn<P>(&mut self, projection: P, options: ProjectionOptions)
    where
        P: Projection<Unit = C::Unit>,
    {
        let shared = Arc::new(Shared::new(
            projection.name().to_owned(),
            projection.filter(),
            self.options.degraded_lag,
        ));
        let driver = Driver::new(
            projection,
            options,
            self.store.clone(),
            self.checkpoints.clone(),
            self.options.clone(),
            shared.clone(),
            self.shutdown.subscribe(),
        );
        let task = tokio::spawn(driver.run());
        let watchdog = tokio::spawn(watchdog(
            self.store.clone(),
            self.checkpoints.clone(),
            self.options.clone(),
            shared.clone(),
            self.shutdown.subscribe(),
        ));
        self.projections.push((shared, task, watchdog));
    }

    /// Every projection of this runner as it sees them.
    pub fn status(&self) -> Vec<RunnerStatus> {
        self.projections
            .iter()
            .map(|(s, ..)| s.snapshot())
            .collect()
    }

    /// One projection as this runner sees it.
    pub fn status_of(&self, name: &str) -> Option<RunnerStatus> {
        self.projections
            .iter()
            .find(|(s, ..)| s.name == name)
            .map(|(s, ..)| s.snapshot())
    }

    /// A health check for each projection (`projection:NAME`), for a health registry.
    pub fn health_checks(&self) -> Vec<ProjectionHealth> {
        self.projections
            .iter()
            .map(|(s, ..)| ProjectionHealth::new(s.clone()))
            .collect()
    }

    /// Stores a control request for a projection (whichever process runs it acts on it).
    pub async fn request(
        &self,
        name: &str,
        request: ControlRequest,
    ) -> Result<ProjectionRecord, CheckpointError> {
        self.checkpoints.request(name, request).await
    }

    /// Stops every projection after the batch it is applying, hands its lease over, and waits.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for (_, task, watchdog) in self.projections {
            let _ = task.await;
            let _ = watchdog.await;
        }
    }
}
