//! On the memory stores: projections fold the whole log (catch-up then live) once, side by side
//! with their own filters and checkpoints; a rebuild while events arrive switches generations
//! only once the new one has caught up; pause and resume through another handle of the store.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use crossfold_core::LogFilter;
use crossfold_core::checkpoint::ControlRequest;
use crossfold_core::checkpoint::{ProjectionControl, ProjectionState};
use crossfold_memory::{MemoryCheckpoints, MemoryStore};
use crossfold_projections::{ProjectionOptions, ProjectionRunner};

fn fold(log: &[(u32, i64)]) -> BTreeMap<String, i64> {
    let mut balances = BTreeMap::new();
    for (account, amount) in log {
        *balances.entry(format!("account-{account}")).or_default() += amount;
    }
    balances
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_catch_up_then_follow_each_with_its_own_filter() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    let mut log = Vec::new();
    for i in 0..300 {
        let account = i % 7;
        append(&store, account, &[i64::from(i)]).await;
        log.push((account, i64::from(i)));
    }
    let all = Model::default();
    let only_three = Model::default();
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("a"));
    runner.spawn(
        Balances::new("all", all.clone()),
        ProjectionOptions::default().batch_size(16),
    );
    let mut three = Balances::new("three", only_three.clone());
    three.filter = LogFilter::streams([crossfold_core::StreamId::new("account-3").unwrap()]);
    runner.spawn(three, ProjectionOptions::default());
    for i in 300..500 {
        let account = i % 7;
        append(&store, account, &[i64::from(i)]).await;
        log.push((account, i64::from(i)));
    }
    eventually("both projections caught up", || {
        all.applied(1) == 500
            && only_three.applied(1) == log.iter().filter(|(a, _)| *a == 3).count() as u64
    })
    .await;
    assert_eq!(all.balances(1), fold(&log));
    let expected_three: BTreeMap<_, _> = fold(&log)
        .into_iter()
        .filter(|(a, _)| a == "account-3")
        .collect();
    assert_eq!(only_three.balances(1), expected_three);
    eventually("live status reported", || {
        runner
            .status()
            .iter()
            .all(|s| s.status.state == ProjectionState::Live)
    })
    .await;
    // The status reaches the store within a status interval.
    let mut stored = checkpoints.get("all").await.unwrap().unwrap();
    for _ in 0..200 {
        if stored.status.events_applied == 500 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        stored = checkpoints.get("all").await.unwrap().unwrap();
    }
    assert_eq!(stored.status.events_applied, 500);
    assert_eq!(stored.lease_owner.as_deref(), Some("a"));
    runner.shutdown().await;
    // A clean shutdown hands the lease over at once.
    assert_eq!(
        checkpoints.get("all").await.unwrap().unwrap().lease_owner,
        None
    );

    // A new runner resumes after the checkpoint: nothing is applied twice.
    append(&store, 1, &[1000]).await;
    log.push((1, 1000));
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("b"));
    runner.spawn(
        Balances::new("all", all.clone()),
        ProjectionOptions::default(),
    );
    eventually("the new event", || all.applied(1) == 501).await;
    assert_eq!(all.balances(1), fold(&log));
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_events_arrive_switches_once_the_new_generation_caught_up() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    let model = Model::default();
    let mut log = Vec::new();
    for i in 0..2000 {
        append(&store, i % 5, &[1]).await;
        log.push((i % 5, 1));
    }
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("a"));
    runner.spawn(
        Balances::new("balances", model.clone()),
        ProjectionOptions::default().batch_size(8),
    );
    eventually("generation 1 caught up", || model.applied(1) == 2000).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300u32 {
                append(&store, i % 5, &[2]).await;
                tokio::task::yield_now().await;
            }
        })
    };
    // Another handle of the same store (as another process would hold) asks for the rebuild.
    let control = checkpoints.clone();
    control
        .request("balances", ControlRequest::Rebuild)
        .await
        .unwrap();
    eventually("the rebuild started", || model.applied(2) > 0).await;
    let during = checkpoints.get("balances").await.unwrap().unwrap();
    if during.serving_generation == 1 {
        assert_eq!(during.generation, 2);
    }
    writer.await.unwrap();
    for i in 0..300u32 {
        log.push((i % 5, 2));
    }
    eventually("generation 2 serves", || {
        let r = runner.status_of("balances").unwrap();
        r.serving_generation == 2 && model.applied(2) == 2300
    })
    .await;
    assert_eq!(model.balances(2), fold(&log));
    // Generation 1 went on being served until the switch; it is left as it was.
    assert!(model.applied(1) >= 2000);
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_through_another_handle() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    let model = Model::default();
    let mut runner = ProjectionRunner::new(store.clone(), checkpoints.clone(), options("a"));
    runner.spawn(
        Balances::new("p", model.clone()),
        ProjectionOptions::default(),
    );
    append(&store, 1, &[5]).await;
    eventually("first event", || model.applied(1) == 1).await;
    let control = checkpoints.clone();
    control.request("p", ControlRequest::Pause).await.unwrap();
    eventually("paused", || {
        runner.status_of("p").unwrap().status.state == ProjectionState::Paused
    })
    .await;
    append(&store, 1, &[7]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(model.applied(1), 1, "a paused projection applies nothing");
    assert_eq!(
        control.get("p").await.unwrap().unwrap().status.state,
        ProjectionState::Paused
    );
    control.request("p", ControlRequest::Resume).await.unwrap();
    eventually("resumed", || model.applied(1) == 2).await;
    assert_eq!(model.balances(1)["account-1"], 12);
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_at_once_when_the_owner_shuts_down() {
    let store = MemoryStore::new();
    let checkpoints = MemoryCheckpoints::new();
    let model = Model::default();
    append(&store, 1, &[1, 2]).await;
    // A long lease, so that a takeover well within it shows a release, not an expiry.
    let ttl = std::time::Duration::from_secs(10);
    let mut first = ProjectionRunner::new(
        store.clone(),
        checkpoints.clone(),
        options("first").lease_ttl(ttl),
    );
    first.spawn(
        Balances::new("p", model.clone()),
        ProjectionOptions::default(),
    );
    eventually("first applied", || model.applied(1) == 2).await;
    let mut second = ProjectionRunner::new(
        store.clone(),
        checkpoints.clone(),
        options("second").lease_ttl(ttl),
    );
    second.spawn(
        Balances::new("p", model.clone()),
        ProjectionOptions::default(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!second.status_of("p").unwrap().owned, "one owner at a time");
    let stopped = std::time::Instant::now();
    first.shutdown().await;
    eventually("the standby took over", || {
        second.status_of("p").unwrap().owned
    })
    .await;
    // Released, not expired: well within the lease's time to live.
    assert!(stopped.elapsed() < ttl / 2, "{:?}", stopped.elapsed());
    append(&store, 1, &[3]).await;
    eventually("the new owner applies", || model.applied(1) == 3).await;
    assert_eq!(model.balances(1)["account-1"], 6);
    second.shutdown().await;
}
