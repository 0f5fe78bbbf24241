//! The shop wired together on any store: the executor, the read models' projection and the
//! payment saga under a projection runner, and the worker that fires payment deadlines by a
//! clock the caller moves.

use std::time::Duration;

use crossfold::core::checkpoint::CheckpointStore;
use crossfold::core::deadline::DeadlineStore;
use crossfold::core::{EventStore, Json, LogFilter, ManualClock};
use crossfold::executor::{DeadlineWorker, PollReport};
use crossfold::executor::{Executor, RetryPolicy};
use crossfold::projections::{
    ProcessManagerProjection, Projection, ProjectionOptions, ProjectionRunner, RunnerOptions,
};

use crate::saga::{ExpireUnpaidOrders, PaymentSaga};
use crate::views::ShopReadModels;

pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The running shop.
pub(crate) struct App<S: EventStore + Clone + 'static, D, K: CheckpointStore, R> {
    pub(crate) executor: Executor<S>,
    pub(crate) clock: ManualClock,
    pub(crate) views: R,
    pub(crate) deadlines: D,
    worker: DeadlineWorker<S, Json, D, ManualClock, ExpireUnpaidOrders>,
    runner: ProjectionRunner<S, K>,
    followed: Vec<(String, LogFilter)>,
}

impl<S, D, K, R> App<S, D, K, R>
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
    K: CheckpointStore,
    R: ShopReadModels<Unit = K::Unit>,
{
    /// Starts the projections — the read models `views` and the payment saga — with their
    /// checkpoints in `checkpoints`.
    pub(crate) fn start(store: S, deadlines: D, checkpoints: K, views: R) -> Self {
        // A few products take every order: on a busy shop their streams conflict often, so
        // commands get more attempts than the default before giving up.
        let executor = Executor::builder(store.clone())
            .retry(RetryPolicy::default().max_attempts(100))
            .build();
        let clock = ManualClock::starting_now();
        let fast = RunnerOptions::default()
            .control_interval(Duration::from_millis(50))
            .status_interval(Duration::from_millis(50));
        let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), fast);
        let mut followed = vec![(views.name().to_owned(), views.filter())];
        runner.spawn(views.clone(), ProjectionOptions::default().batch_size(64));
        let saga = ProcessManagerProjection::new(
            PaymentSaga,
            executor.clone(),
            deadlines.clone(),
            checkpoints,
        );
        followed.push((saga.name().to_owned(), saga.filter()));
        runner.spawn(saga, ProjectionOptions::default().batch_size(64));
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
            runner,
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
            for (name, filter) in &self.followed {
                loop {
                    let at = self
                        .runner
                        .status_of(name)
                        .map(|s| s.position)
                        .unwrap_or_default();
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
        self.runner.shutdown().await;
    }
}
