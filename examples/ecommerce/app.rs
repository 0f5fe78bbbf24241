//! The shop wired together on any store: the executor, the read models' projection, the
//! payment saga under a projection runner, and the worker that fires payment deadlines by a
//! clock the caller moves.

use std::time::Duration;

use crossfold::executor::{DeadlineWorker, PollReport};
use crossfold::memory::MemoryCheckpoints;
use crossfold::projections::{
    ProcessManagerProjection, Projection, ProjectionOptions, ProjectionRunner, RunnerOptions,
};
use crossfold::{
    CheckpointStore, DeadlineStore, EventStore, Executor, Json, LogFilter, ManualClock, RetryPolicy,
};

use crate::saga::{ExpireUnpaidOrders, PaymentSaga};
use crate::views::{Views, ViewsProjection};

pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The running shop.
pub(crate) struct App<S: EventStore + Clone + 'static, D, K: CheckpointStore> {
    pub(crate) executor: Executor<S>,
    pub(crate) clock: ManualClock,
    pub(crate) views: Views,
    pub(crate) deadlines: D,
    worker: DeadlineWorker<S, Json, D, ManualClock, ExpireUnpaidOrders>,
    views_runner: ProjectionRunner<S, MemoryCheckpoints>,
    saga_runner: ProjectionRunner<S, K>,
    followed: Vec<(ProjectionKind, String, LogFilter)>,
}

#[derive(Clone, Copy)]
enum ProjectionKind {
    Views,
    Saga,
}

impl<S, D, K> App<S, D, K>
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
    K: CheckpointStore,
{
    /// Starts the projections: the read models in memory, the saga with its checkpoint in
    /// `saga_checkpoints`.
    pub(crate) fn start(store: S, deadlines: D, saga_checkpoints: K) -> Self {
        // A few products take every order: on a busy shop their streams conflict often, so
        // commands get more attempts than the default before giving up.
        let executor = Executor::builder(store.clone())
            .retry(RetryPolicy::default().max_attempts(100))
            .build();
        let clock = ManualClock::starting_now();
        let views = Views::default();
        let fast = RunnerOptions::default()
            .control_interval(Duration::from_millis(50))
            .status_interval(Duration::from_millis(50));
        let mut views_runner =
            ProjectionRunner::new(store.clone(), MemoryCheckpoints::new(), fast.clone());
        let projection = ViewsProjection {
            views: views.clone(),
        };
        let mut followed = vec![(
            ProjectionKind::Views,
            projection.name().to_owned(),
            projection.filter(),
        )];
        views_runner.spawn(projection, ProjectionOptions::default().batch_size(64));
        let mut saga_runner = ProjectionRunner::new(store.clone(), saga_checkpoints.clone(), fast);
        let saga = ProcessManagerProjection::new(
            PaymentSaga,
            executor.clone(),
            deadlines.clone(),
            saga_checkpoints,
        );
        followed.push((ProjectionKind::Saga, saga.name().to_owned(), saga.filter()));
        saga_runner.spawn(saga, ProjectionOptions::default().batch_size(64));
        let worker = DeadlineWorker::new(
            executor.clone(),
            deadlines.clone(),
            clock.clone(),
            ExpireUnpaidOrders,
        )
        .lease(Duration::from_secs(30));
        Self {
            executor,
            clock,
            views,
            deadlines,
            worker,
            views_runner,
            saga_runner,
            followed,
        }
    }

    /// Waits until the read models and the saga have handled every event in the log, and the
    /// events the saga wrote meanwhile too.
    pub(crate) async fn settle(&self) -> Result<(), Failure> {
        let store = self.executor.store();
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let head = store.head_position().await?;
            for (kind, name, filter) in &self.followed {
                loop {
                    let status = match kind {
                        ProjectionKind::Views => self.views_runner.status_of(name),
                        ProjectionKind::Saga => self.saga_runner.status_of(name),
                    };
                    let at = status.map(|s| s.position).unwrap_or_default();
                    let next = store.read_all(at, 1, filter).await?;
                    if next.first().is_none_or(|e| e.position > head) {
                        break;
                    }
                    if tokio::time::Instant::now() > give_up {
                        return Err(format!("projection {name} did not catch up").into());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            if store.head_position().await? == head {
                return Ok(());
            }
        }
    }

    /// Fires the payment deadlines that are due by the clock, until none is left.
    pub(crate) async fn fire_due_deadlines(&self) -> Result<PollReport, Failure> {
        let mut total = PollReport::default();
        loop {
            let report = self.worker.poll_once().await?;
            total.claimed += report.claimed;
            total.fired += report.fired;
            total.refused += report.refused;
            total.counts = report.counts;
            if report.claimed == 0 {
                return Ok(total);
            }
        }
    }

    /// Stops the projections.
    pub(crate) async fn shutdown(self) {
        self.views_runner.shutdown().await;
        self.saga_runner.shutdown().await;
    }
}
