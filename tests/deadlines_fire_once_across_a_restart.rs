//! Deadlines on the memory store fire once after their time, across a restart and a worker
//! that dies between the command and marking the deadline, and under two racing workers.
//! (The same behaviours run on PostgreSQL in `crossfold-postgres`.)

use crossfold::memory::{MemoryDeadlineStore, MemoryStore};
use crossfold_testkit::{block_on, deadlines};

#[test]
fn deadlines_fire_once_across_a_restart() {
    block_on(deadlines::deadlines_fire_once_across_a_restart(
        MemoryStore::new(),
        MemoryDeadlineStore::new(),
    ));
}

#[test]
fn racing_workers_fire_each_deadline_once() {
    block_on(deadlines::racing_workers_fire_each_deadline_once(
        MemoryStore::new(),
        MemoryDeadlineStore::new(),
    ));
}

/// A worker left running polls by itself, fires what becomes due as the clock moves, and
/// returns when its shutdown signal completes.
#[test]
fn a_running_worker_fires_due_deadlines_and_stops_on_shutdown() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crossfold::core::ManualClock;
    use crossfold::core::deadline::{Deadline, DeadlineId, DeadlineStatus, DeadlineStore};
    use crossfold::executor::DeadlineWorker;
    use crossfold::executor::Executor;

    block_on(async {
        let store = MemoryStore::new();
        let deadlines = MemoryDeadlineStore::new();
        let clock = ManualClock::starting_now();
        let id = DeadlineId::new("expire/order-9").unwrap();
        let due = (clock.now()).saturating_add(Duration::from_secs(60));
        deadlines
            .schedule(
                Deadline::new(id.clone(), "payment-timeout", due)
                    .payload(serde_json::json!({ "order": "order-9" })),
            )
            .await
            .unwrap();
        let handler = deadlines::ExpireHandler::default();
        let worker = DeadlineWorker::new(
            Executor::new(store.clone()),
            deadlines.clone(),
            clock.clone(),
            handler.clone(),
        )
        .poll_interval(Duration::from_millis(5));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(handler.calls.load(Ordering::SeqCst), 0, "not due yet");
        clock.advance(Duration::from_secs(61));
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while deadlines.deadline(&id).await.unwrap().unwrap().status != DeadlineStatus::Fired {
            assert!(
                std::time::Instant::now() < give_up,
                "the worker did not fire"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the worker stops on shutdown")
            .unwrap();
        assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    });
}
