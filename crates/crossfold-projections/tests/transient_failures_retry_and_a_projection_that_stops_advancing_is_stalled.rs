//! A transient handler failure rolls the batch back and retries it with backoff (applied once
//! in the end, retries counted); a projection that stops advancing while events exist past its
//! checkpoint is reported stalled, and unhealthy.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use crossfold_core::checkpoint::{ProjectionControl, ProjectionState};
use crossfold_core::{HealthStatus, LogFilter, Recorded};
use crossfold_memory::{MemoryCheckpoints, MemoryStore, MemoryUnit};
use crossfold_projections::{
    ApplyContext, HandlerError, Projection, ProjectionOptions, ProjectionRunner,
};

/// Fails transiently `failures` times, then applies like `Balances`; or hangs for ever.
struct Flaky {
    inner: Balances,
    failures: Arc<AtomicU32>,
    hang: bool,
}

impl Projection for Flaky {
    type Event = Bank;
    type Unit = MemoryUnit;

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn filter(&self) -> LogFilter {
        self.inner.filter()
    }

    async fn apply(
        &self,
        unit: &mut MemoryUnit,
        context: &ApplyContext,
        events: &[Recorded<Bank>],
    ) -> Result<(), HandlerError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::transient("the read model's database is away"));
        }
        self.inner.apply(unit, context, events).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_and_the_batch_applied_once() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    append(&store, 1, &[1, 2, 3]).await;
    let model = Model::default();
    let failures = Arc::new(AtomicU32::new(4));
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("a"));
    runner.spawn(
        Flaky {
            inner: Balances::new("flaky", model.clone()),
            failures: failures.clone(),
            hang: false,
        },
        ProjectionOptions::default(),
    );
    eventually("applied after the retries", || model.applied(1) == 3).await;
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(model.balances(1)["account-1"], 6);
    let status = runner.status_of("flaky").unwrap().status;
    assert_eq!(status.retries, 0, "a success resets the retries");
    assert_ne!(status.state, ProjectionState::Failed);
    runner.shutdown().await;
}

/// Fails transiently on every batch of more than `most` events (a batch that cannot finish in
/// time), like `Balances` otherwise; records the sizes it was given.
struct TooBig {
    inner: Balances,
    most: usize,
    sizes: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl Projection for TooBig {
    type Event = Bank;
    type Unit = MemoryUnit;

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn filter(&self) -> LogFilter {
        self.inner.filter()
    }

    async fn apply(
        &self,
        unit: &mut MemoryUnit,
        context: &ApplyContext,
        events: &[Recorded<Bank>],
    ) -> Result<(), HandlerError> {
        self.sizes.lock().unwrap().push(events.len());
        if events.len() > self.most {
            return Err(HandlerError::transient(
                "the batch outlasted its transaction",
            ));
        }
        self.inner.apply(unit, context, events).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_keeps_failing_transiently_is_retried_smaller_until_it_fits() {
    let store = MemoryStore::new();
    let amounts: Vec<i64> = (1..=100).collect();
    append(&store, 1, &amounts).await;
    let model = Model::default();
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut runner = ProjectionRunner::new(store.clone(), MemoryCheckpoints::new(), options("a"));
    runner.spawn(
        TooBig {
            inner: Balances::new("shrinking", model.clone()),
            most: 10,
            sizes: sizes.clone(),
        },
        ProjectionOptions::default().batch_size(64),
    );
    eventually("every event applied", || model.applied(1) == 100).await;
    assert_eq!(model.balances(1)["account-1"], 5050);
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.first(), Some(&64), "{sizes:?}");
    assert!(sizes.iter().any(|&n| n <= 10), "{sizes:?}");
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_that_stops_advancing_is_reported_stalled() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    append(&store, 1, &[1]).await;
    let mut runner = ProjectionRunner::new(
        store.clone(),
        checkpoints.clone(),
        options("a").stall_after(Duration::from_millis(300)),
    );
    runner.spawn(
        Flaky {
            inner: Balances::new("stuck", Model::default()),
            failures: Arc::new(AtomicU32::new(0)),
            hang: true,
        },
        ProjectionOptions::default(),
    );
    runner.spawn(
        Balances::new("fine", Model::default()),
        ProjectionOptions::default(),
    );
    eventually("stalled", || {
        runner.status_of("stuck").unwrap().status.state == ProjectionState::Stalled
    })
    .await;
    let status = runner.status_of("stuck").unwrap().status;
    assert_eq!(status.lag_events, 1);
    assert!(status.last_error.unwrap().contains("no progress"));
    let reports: Vec<_> = runner.health_checks().iter().map(|h| h.report()).collect();
    let stuck = reports
        .iter()
        .find(|r| r.component == "projection:stuck")
        .unwrap();
    assert_eq!(stuck.status, HealthStatus::Unhealthy);
    let fine = reports
        .iter()
        .find(|r| r.component == "projection:fine")
        .unwrap();
    assert_eq!(fine.status, HealthStatus::Healthy, "{fine:?}");
    // Operators see it through the store too.
    let mut stored = ProjectionState::Idle;
    for _ in 0..200 {
        stored = checkpoints
            .get("stuck")
            .await
            .unwrap()
            .unwrap()
            .status
            .state;
        if stored == ProjectionState::Stalled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stored, ProjectionState::Stalled);
}
