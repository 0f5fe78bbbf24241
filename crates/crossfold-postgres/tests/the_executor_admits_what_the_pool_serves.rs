//! The store tells the executor how many commands it serves at once (its pool, less an eighth
//! and at least one connection left to the notifier, subscriptions, projections and health
//! checks), and an executor over it admits that many: with more commands in flight than
//! connections, none waits for a connection, so even a pool wait timeout far shorter than the
//! queue's wait fails nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{fresh_store_with, sid};
use crossfold_core::{Command, CommandError, DomainEvent, Emit, EventStore, StreamId, StreamRef};
use crossfold_executor::{Executor, RetryPolicy};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Noted;
impl DomainEvent for Noted {
    fn event_type(&self) -> &'static str {
        "Noted"
    }
}

struct Note(StreamId);
impl Command for Note {
    type Event = Noted;
    type State = ();
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.0.clone()
    }
    fn handle<'x>(
        &self,
        _: &(),
        stream: StreamRef<'x>,
        out: &mut Emit<'x, Noted>,
    ) -> Result<(), CommandError> {
        out.append(stream, Noted);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_the_pool_less_an_eighth_and_at_least_one() {
    for (pool, limit) in [(1, 1), (2, 1), (4, 3), (8, 7), (16, 14), (32, 28)] {
        let store = fresh_store_with(|c| c.pool_size(pool)).await;
        assert_eq!(store.store.concurrency_limit(), Some(limit), "pool {pool}");
        let executor = Executor::new(store.store.clone());
        assert_eq!(executor.admission().unwrap().limit, limit, "pool {pool}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_beyond_the_pool_queue_for_admission_instead_of_for_connections() {
    // Four connections, a wait for one of 1 ms at most, no retries: without admission, 64
    // commands in flight would wait for connections behind each other and fail.
    let store = fresh_store_with(|c| c.pool_size(4).wait_timeout(Duration::from_millis(1))).await;
    let executor = Executor::builder(store.store.clone())
        .retry(RetryPolicy::none())
        .admission_timeout(Duration::from_secs(600))
        .build();
    assert_eq!(executor.admission().unwrap().limit, 3);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let executor = executor.clone();
            tokio::spawn(async move { executor.execute(Note(sid(&format!("note-{i}")))).await })
        })
        .collect();
    for task in tasks {
        let done = task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}", crossfold_core::ErrorChain(&e)));
        assert_eq!(done.attempts, 1);
    }
    let status = executor.admission().unwrap();
    assert_eq!((status.running, status.queued, status.refused), (0, 0, 0));
    for i in 0..64 {
        let stream = sid(&format!("note-{i}"));
        assert_eq!(store.stream_version(&stream).await.unwrap().get(), 1);
    }
}
