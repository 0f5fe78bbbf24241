//! An event the handler rejects stops its projection (failed, error and position kept, the
//! others go on; resume retries it without losing or repeating anything), or in dead-letter
//! mode is set aside with its error while the projection goes on.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use crossfold_core::HealthStatus;
use crossfold_core::checkpoint::ControlRequest;
use crossfold_core::checkpoint::{ProjectionControl, ProjectionState};
use crossfold_memory::{MemoryCheckpoints, MemoryStore};
use crossfold_projections::{OnError, ProjectionOptions, ProjectionRunner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_fails_only_its_projection_until_resumed() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    append(&store, 1, &[1, 2, 3]).await;
    append(&store, 2, &[-13]).await;
    append(&store, 1, &[4, 5]).await;
    let strict = Model::default();
    let other = Model::default();
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("a"));
    let mut poisoned = Balances::new("strict", strict.clone());
    poisoned.poison = Some(-13);
    runner.spawn(poisoned, ProjectionOptions::default().batch_size(100));
    runner.spawn(
        Balances::new("other", other.clone()),
        ProjectionOptions::default(),
    );
    eventually("the other projection applied everything", || {
        other.applied(1) == 6
    })
    .await;
    eventually("failed", || {
        runner.status_of("strict").unwrap().status.state == ProjectionState::Failed
    })
    .await;
    // Everything before the poison event is applied, nothing after.
    assert_eq!(strict.applied(1), 3);
    let status = runner.status_of("strict").unwrap().status;
    assert!(status.last_error.unwrap().contains("cannot apply -13"));
    let stored = checkpoints.get("strict").await.unwrap().unwrap();
    assert_eq!(stored.status.state, ProjectionState::Failed);
    let poison_position = status.error_position.unwrap();
    assert!(stored.position < poison_position);
    let health = runner.health_checks();
    let strict_health = health
        .iter()
        .map(|h| h.report())
        .find(|r| r.component == "projection:strict")
        .unwrap();
    assert_eq!(strict_health.status, HealthStatus::Unhealthy);
    runner.shutdown().await;

    // The fix is deployed: a new handler that accepts it, and an operator resumes.
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("b"));
    runner.spawn(
        Balances::new("strict", strict.clone()),
        ProjectionOptions::default(),
    );
    checkpoints
        .request("strict", ControlRequest::Resume)
        .await
        .unwrap();
    eventually("applied the rest", || strict.applied(1) == 6).await;
    assert_eq!(strict.balances(1)["account-1"], 15);
    assert_eq!(strict.balances(1)["account-2"], -13);
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dead_letter_mode_a_rejected_event_is_set_aside_and_the_projection_goes_on() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    append(&store, 1, &[1, 2]).await;
    append(&store, 2, &[-13]).await;
    append(&store, 1, &[4]).await;
    let model = Model::default();
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("a"));
    let mut poisoned = Balances::new("lenient", model.clone());
    poisoned.poison = Some(-13);
    runner.spawn(
        poisoned,
        ProjectionOptions::default().on_error(OnError::DeadLetter),
    );
    eventually("the rest applied", || model.applied(1) == 3).await;
    let letters = checkpoints.dead_letters("lenient").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].stream_id.as_str(), "account-2");
    assert!(letters[0].error.contains("cannot apply -13"));
    assert_eq!(model.balances(1)["account-1"], 7);
    assert!(!model.balances(1).contains_key("account-2"));
    append(&store, 2, &[5]).await;
    eventually("live again", || model.applied(1) == 4).await;
    assert_eq!(
        checkpoints
            .get("lenient")
            .await
            .unwrap()
            .unwrap()
            .dead_letters,
        1
    );
    runner.shutdown().await;
}
