//! Fair contention across processes: two executors, each with its own connections and its own
//! in-process queue (as two application nodes would be), increment one counter stream at once,
//! many increments each. With the default retry policy every increment gets through — none
//! gives up after its attempts while the other node's increments succeed — and the counter ends
//! at the number of successes, each number taken once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config, fresh_store_with, sid};
use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, EventStore, Fold, Recorded, StreamId, StreamRef,
};
use crossfold_executor::Executor;
use crossfold_postgres::PgEventStore;
use serde::{Deserialize, Serialize};

/// Tasks per node, each executing increments one after another.
const TASKS: usize = 8;
/// Increments per task.
const INCREMENTS: usize = 40;

#[derive(Serialize, Deserialize)]
struct Incremented {
    to: u64,
}

impl DomainEvent for Incremented {
    fn event_type(&self) -> &'static str {
        "Incremented"
    }
}

#[derive(Clone, Default)]
struct Count(u64);

impl Fold<Incremented> for Count {
    fn apply(&mut self, event: &Recorded<Incremented>) {
        self.0 = event.event.to;
    }
}

/// Reads the counter and writes its next value.
struct Increment {
    counter: StreamId,
}

impl Command for Increment {
    type Event = Incremented;
    type State = Count;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.counter.clone()
    }

    fn handle<'x>(
        &self,
        count: &Count,
        counter: StreamRef<'x>,
        out: &mut Emit<'x, Incremented>,
    ) -> Result<(), CommandError> {
        out.append(counter, Incremented { to: count.0 + 1 });
        Ok(())
    }
}

/// What one node's increments came to.
#[derive(Debug, Default)]
struct Tally {
    succeeded: usize,
    failed: usize,
    first_failure: Option<String>,
}

async fn node(executor: Executor<PgEventStore>, counter: StreamId) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (executor, counter) = (executor.clone(), counter.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..INCREMENTS {
                match executor
                    .execute(Increment {
                        counter: counter.clone(),
                    })
                    .await
                {
                    Ok(_) => tally.succeeded += 1,
                    Err(e) => {
                        tally.failed += 1;
                        tally
                            .first_failure
                            .get_or_insert_with(|| crossfold_core::ErrorChain(&e).to_string());
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        let tally = tally.unwrap();
        total.succeeded += tally.succeeded;
        total.failed += tally.failed;
        total.first_failure = total.first_failure.or(tally.first_failure);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_increment_of_two_nodes_on_one_counter_gets_through() {
    let first = fresh_store_with(|c| c.pool_size(TASKS + 2)).await;
    // The second node: its own pool on the same schema, its own executor (caches and queue).
    let second = PgEventStore::connect(config(&first.schema.0).pool_size(TASKS + 2))
        .await
        .unwrap();
    let counter = sid("counter-1");
    let nodes = [
        Executor::new(first.store.clone()),
        Executor::new(second.clone()),
    ];
    let runs: Vec<_> = nodes
        .into_iter()
        .map(|executor| tokio::spawn(node(executor, counter.clone())))
        .collect();
    let mut tallies = Vec::new();
    for run in runs {
        tallies.push(run.await.unwrap());
    }
    let succeeded: usize = tallies.iter().map(|t| t.succeeded).sum();
    let failed: usize = tallies.iter().map(|t| t.failed).sum();
    assert_eq!(
        failed, 0,
        "increments gave up while the other node's went through: {tallies:?}"
    );

    let stored = first
        .store
        .read_stream(&counter, Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(succeeded, 2 * TASKS * INCREMENTS);
    assert_eq!(stored.events.len(), succeeded, "one event per success");
    let counts: Vec<u64> = stored
        .events
        .iter()
        .map(|e| {
            serde_json::from_slice::<Incremented>(&e.payload.bytes)
                .unwrap()
                .to
        })
        .collect();
    let expected: Vec<u64> = (1..=succeeded as u64).collect();
    assert!(
        counts == expected,
        "the counter took every number once, in order"
    );
}
