//! Admission control: at most the concurrency limit's executions run at once, the others are
//! admitted in arrival order, an admitted execution keeps its place through its retries, and
//! one that cannot be admitted (a full queue, the admission timeout, its own time limit) is
//! refused with `Error::Overloaded`, having written nothing.
//!
//! A store whose appends wait at a gate until the test opens it fills the executor's places
//! deterministically; the tests wait for states (an append started, so many queued), never for
//! amounts of time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crossfold_core::{
    AppendRequest, Appended, Codec, EventData, EventStore, ExpectedVersion, Json, LogFilter,
    Position, RecordedEvent, StoreError, StreamEvents, StreamRead,
};
use crossfold_executor::{Error, Executed, ExecutionContext, Executor};
use crossfold_memory::MemoryStore;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::sync::Semaphore;

/// What the gated store does to the next appends that pass its gate, in order.
enum Fault {
    /// Fails with a transient error (nothing written).
    Contention,
    /// Another writer appends to the stream first, so the append conflicts.
    Conflict,
}

/// A memory store that logs every call, makes appends wait at a gate, and can fail them.
#[derive(Clone)]
struct Gated {
    inner: MemoryStore,
    /// What it answers to `concurrency_limit`.
    limit: Option<usize>,
    /// Each append takes a permit, for good; none are there until the test adds them.
    gate: Arc<Semaphore>,
    calls: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
}

impl Gated {
    fn new(limit: Option<usize>) -> Self {
        Self {
            inner: MemoryStore::new(),
            limit,
            gate: Arc::new(Semaphore::new(0)),
            calls: Arc::new(Mutex::new(Vec::new())),
            faults: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn log(&self, call: &str, streams: impl Iterator<Item = String>) {
        let streams: Vec<String> = streams.collect();
        self.calls
            .lock()
            .unwrap()
            .push(format!("{call} {}", streams.join(",")));
    }
}

impl EventStore for Gated {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        self.log("read", reads.iter().map(|r| r.stream.to_string()));
        self.inner.read_streams(reads).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.log(
            "append",
            request.streams.iter().map(|s| s.stream.to_string()),
        );
        self.gate.acquire().await.unwrap().forget();
        let fault = self.faults.lock().unwrap().pop_front();
        match fault {
            Some(Fault::Contention) => {
                return Err(StoreError::Contention("injected".into()));
            }
            Some(Fault::Conflict) => {
                let stream = request.streams[0].stream.clone();
                let sneaky = EventData::new(
                    "Credited",
                    Json.encode(&Ledger::Credited { amount: 1 }).unwrap(),
                );
                self.inner
                    .append(AppendRequest::new().stream(stream, ExpectedVersion::Any, vec![sneaky]))
                    .await?;
            }
            None => {}
        }
        self.inner.append(request).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit, filter).await
    }
    async fn head_position(&self) -> Result<Position, StoreError> {
        self.inner.head_position().await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }
    fn concurrency_limit(&self) -> Option<usize> {
        self.limit
    }
}

fn credit(account: &str) -> Credit {
    Credit {
        account: sid(account),
        amount: 10,
    }
}

/// Waits until `done` holds; a state that never comes fails the test instead of hanging it.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..20_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

/// Awaits an execution that must end without help from the test (a refusal).
async fn ends<T>(execution: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), execution)
        .await
        .expect("the execution hung instead of being refused")
}

/// Starts `account`'s credit and waits until its append waits at the gate: from then on it
/// holds its place.
async fn hold(
    executor: &Executor<Gated>,
    account: &'static str,
) -> tokio::task::JoinHandle<Result<Executed, Error>> {
    let running = tokio::spawn({
        let executor = executor.clone();
        async move { executor.execute(credit(account)).await }
    });
    let store = executor.store().clone();
    let append = format!("append {account}");
    until(&append.clone(), || store.calls().contains(&append)).await;
    running
}

/// Starts `account`'s credit and waits until it is the `position`th execution in the queue.
async fn queue(
    executor: &Executor<Gated>,
    account: &'static str,
    position: usize,
) -> tokio::task::JoinHandle<Result<Executed, Error>> {
    let waiting = tokio::spawn({
        let executor = executor.clone();
        async move { executor.execute(credit(account)).await }
    });
    until(&format!("{account} queued"), || {
        executor.admission().unwrap().queued == position
    })
    .await;
    waiting
}

/// The streams of `calls` in the order they were first called, each with its calls contiguous
/// (no other execution's call in between).
fn contiguous_order(calls: &[String]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for call in calls {
        let stream = call.split(' ').nth(1).unwrap().to_owned();
        match order.last() {
            Some(last) if *last == stream => {}
            _ => {
                assert!(
                    !order.contains(&stream),
                    "{stream} was called again after another execution ran: {calls:?}"
                );
                order.push(stream);
            }
        }
    }
    order
}

#[test]
fn the_limit_comes_from_the_store_unless_the_builder_says_otherwise() {
    assert_eq!(Executor::new(MemoryStore::new()).admission(), None);
    let limited = Gated::new(Some(3));
    let status = Executor::new(limited.clone()).admission().unwrap();
    assert_eq!(
        (status.limit, status.running, status.queued),
        (3, 0, 0),
        "{status:?}"
    );
    assert_eq!(status.queue_depth, 4096);
    assert_eq!(status.timeout, Duration::from_secs(5));
    let overridden = Executor::builder(limited.clone())
        .concurrency_limit(5)
        .admission_queue_depth(7)
        .admission_timeout(Duration::from_millis(300))
        .build()
        .admission()
        .unwrap();
    assert_eq!(
        (overridden.limit, overridden.queue_depth, overridden.timeout),
        (5, 7, Duration::from_millis(300))
    );
    assert_eq!(
        Executor::builder(limited)
            .no_concurrency_limit()
            .build()
            .admission(),
        None
    );
    let at_least_one = Executor::builder(MemoryStore::new())
        .concurrency_limit(0)
        .build()
        .admission()
        .unwrap();
    assert_eq!(at_least_one.limit, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_admitted_in_arrival_order() {
    let store = Gated::new(Some(1));
    // The store's limit, one at a time: each execution's calls show when it was admitted.
    let executor = Executor::new(store.clone());
    let first = hold(&executor, "account-0").await;
    let names = [
        "account-1",
        "account-2",
        "account-3",
        "account-4",
        "account-5",
        "account-6",
    ];
    let mut waiting = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        waiting.push(queue(&executor, name, i + 1).await);
    }
    let status = executor.admission().unwrap();
    assert_eq!((status.running, status.queued), (1, 6), "{status:?}");
    store.open();
    first.await.unwrap().unwrap();
    for execution in waiting {
        execution.await.unwrap().unwrap();
    }
    let order = contiguous_order(&store.calls());
    let expected: Vec<String> = (0..=6).map(|i| format!("account-{i}")).collect();
    assert_eq!(order, expected);
    let status = executor.admission().unwrap();
    assert_eq!(
        (
            status.running,
            status.queued,
            status.admitted_after_waiting,
            status.refused
        ),
        (0, 0, 6, 0),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_with_its_depth_and_writes_nothing() {
    let store = Gated::new(None);
    let executor = Executor::builder(store.clone())
        .concurrency_limit(1)
        .admission_queue_depth(2)
        .build();
    let first = hold(&executor, "account-0").await;
    let second = queue(&executor, "account-1", 1).await;
    let third = queue(&executor, "account-2", 2).await;

    // The gate is still closed: this must come back on its own.
    let refused = ends(executor.execute(credit("account-9")))
        .await
        .unwrap_err();
    match &refused {
        Error::Overloaded { queued, waited } => {
            assert_eq!((*queued, *waited), (2, Duration::ZERO), "{refused:?}");
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert!(refused.is_overloaded() && refused.is_retryable() && !refused.may_have_written());

    store.open();
    for execution in [first, second, third] {
        execution.await.unwrap().unwrap();
    }
    assert!(
        !store.calls().iter().any(|c| c.contains("account-9")),
        "a refused execution called the store: {:?}",
        store.calls()
    );
    assert!(!store.inner.stream_exists(&sid("account-9")).await.unwrap());
    assert_eq!(store.inner.len(), 3);
    assert_eq!(executor.admission().unwrap().refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_not_admitted_in_time_is_refused_not_timed_out() {
    let store = Gated::new(None);
    let admission_timeout = Duration::from_millis(50);
    let executor = Executor::builder(store.clone())
        .concurrency_limit(1)
        .admission_timeout(admission_timeout)
        .build();
    let first = hold(&executor, "account-0").await;

    // The admission timeout.
    let refused = ends(executor.execute(credit("account-1")))
        .await
        .unwrap_err();
    match &refused {
        Error::Overloaded { queued, waited } => {
            assert_eq!(*queued, 0, "{refused:?}");
            assert!(*waited >= admission_timeout, "{refused:?}");
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }

    // The execution's own time limit, nearer than an admission timeout of an hour: waiting for
    // admission counts against it, and an execution still waiting when it strikes has written
    // nothing, so it is refused, not timed out.
    let patient = Executor::builder(store.clone())
        .concurrency_limit(1)
        .admission_timeout(Duration::from_secs(3600))
        .build();
    let holding = hold(&patient, "account-2").await;
    let limited = ExecutionContext::new().timeout(Duration::from_millis(20));
    let refused = ends(patient.execute_with(credit("account-3"), &limited))
        .await
        .unwrap_err();
    assert!(refused.is_overloaded(), "{refused:?}");
    assert!(!refused.may_have_written());

    store.open();
    first.await.unwrap().unwrap();
    holding.await.unwrap().unwrap();
    for refused in ["account-1", "account-3"] {
        assert!(!store.calls().iter().any(|c| c.contains(refused)));
        assert!(!store.inner.stream_exists(&sid(refused)).await.unwrap());
    }
    assert_eq!(store.inner.len(), 2);
    assert_eq!(executor.admission().unwrap().refused, 1);
    assert_eq!(patient.admission().unwrap().refused, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_execution_keeps_its_place_through_its_retries() {
    let store = Gated::new(Some(1));
    let executor = Executor::new(store.clone());
    // The first append fails for a moment (retried after a backoff), the second conflicts
    // (retried after a fresh read), the third stands.
    store
        .faults
        .lock()
        .unwrap()
        .extend([Fault::Contention, Fault::Conflict]);
    let first = hold(&executor, "account-0").await;
    let second = queue(&executor, "account-1", 1).await;
    store.open();
    let done = first.await.unwrap().unwrap();
    assert_eq!((done.attempts, done.conflicts), (3, 1));
    second.await.unwrap().unwrap();
    let calls = store.calls();
    let appends = calls.iter().filter(|c| *c == "append account-0").count();
    assert_eq!(appends, 3, "{calls:?}");
    // Had the first execution given its place back between attempts, the second would have
    // been admitted during the backoff, and its calls would come between the first's.
    assert_eq!(contiguous_order(&calls), ["account-0", "account-1"]);
}

/// A command whose stream another command of the process holds gives its place back while it
/// waits for the stream, and once it holds the stream it takes the next place ahead of the
/// commands that arrived after it. One thread, so that every step is deterministic.
#[tokio::test(flavor = "current_thread")]
async fn a_command_waiting_for_its_stream_holds_no_place_and_returns_ahead_of_the_queue() {
    let store = Gated::new(Some(2));
    let executor = Executor::new(store.clone());
    let first = hold(&executor, "account-x").await;
    // Admitted to the free place, finds account-x locked by the first, gives the place back.
    let same_stream = tokio::spawn({
        let executor = executor.clone();
        async move { executor.execute(credit("account-x")).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let status = executor.admission().unwrap();
    assert_eq!((status.running, status.queued), (1, 0), "{status:?}");
    // So another stream's command runs at once.
    let other = hold(&executor, "account-y").await;
    let later = queue(&executor, "account-z", 1).await;
    let latest = queue(&executor, "account-w", 2).await;

    // The first finishes: its place goes to the first in the queue (the waiter for account-x
    // has not asked for one yet); then the waiter, holding account-x, queues ahead of the rest.
    store.gate.add_permits(1);
    until("the first finished", || first.is_finished()).await;
    until("account-z's append", || {
        store.calls().contains(&"append account-z".to_owned())
    })
    .await;
    until("the waiter for account-x queued", || {
        executor.admission().unwrap().queued == 2
    })
    .await;
    // account-y finishes: its place goes to the waiter for account-x, not to account-w.
    store.gate.add_permits(1);
    let appends_of_x = || {
        store
            .calls()
            .iter()
            .filter(|c| *c == "append account-x")
            .count()
    };
    until("the second append of account-x", || appends_of_x() == 2).await;
    assert!(
        !store.calls().iter().any(|c| c.contains("account-w")),
        "{:?}",
        store.calls()
    );
    assert_eq!(executor.admission().unwrap().queued, 1);
    store.open();
    for execution in [first, same_stream, other, later, latest] {
        execution.await.unwrap().unwrap();
    }
    assert_eq!(store.inner.len(), 5);
}

#[test]
fn waits_refusals_and_the_queue_are_measured() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let store = Gated::new(Some(1));
            let executor = Executor::builder(store.clone())
                .admission_queue_depth(2)
                .build();
            let first = hold(&executor, "account-0").await;
            let second = queue(&executor, "account-1", 1).await;
            // Refused when its own time limit strikes, with the second still queued.
            let limited = ExecutionContext::new().timeout(Duration::from_millis(10));
            let late = executor
                .execute_with(credit("account-2"), &limited)
                .await
                .unwrap_err();
            assert!(
                matches!(late, Error::Overloaded { queued: 1, .. }),
                "{late:?}"
            );
            let third = queue(&executor, "account-3", 2).await;
            let full = executor.execute(credit("account-4")).await.unwrap_err();
            assert!(
                matches!(full, Error::Overloaded { queued: 2, .. }),
                "{full:?}"
            );
            let text = handle.render();
            assert!(
                text.contains("crossfold_executor_admission_queue_depth 2"),
                "{text}"
            );
            store.open();
            for execution in [first, second, third] {
                execution.await.unwrap().unwrap();
            }
        });
    });
    let text = handle.render();
    for line in [
        "crossfold_executor_admission_queue_depth 0",
        // The second, the late one and the third waited; the refused-at-once one did not.
        "crossfold_executor_admission_wait_seconds_count 3",
        "crossfold_executor_admission_refusals_total{command=\"Credit\",reason=\"timeout\"} 1",
        "crossfold_executor_admission_refusals_total{command=\"Credit\",reason=\"queue_full\"} 1",
        "crossfold_commands_total{command=\"Credit\",outcome=\"overloaded\"} 2",
        "crossfold_commands_total{command=\"Credit\",outcome=\"success\"} 3",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
