//! An append can fail after the store committed it (the connection drops before the answer
//! arrives, a time limit strikes while it runs). Deciding again with new event ids would then
//! apply a command twice; the executor instead finds out from the store whether its events are
//! there before it decides again, returns the committed attempt as a success, and says
//! "outcome unknown" when it cannot find out — for commands without an idempotency key too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The executor's own tests' ledger domain (these tests use the testkit's fault injection, so
// they live in this package).
#[path = "../crates/crossfold-executor/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crossfold_core::{
    AppendRequest, Appended, EventStore, LogFilter, Position, RecordedEvent, StoreError,
    StreamEvents, StreamId, StreamRead,
};
use crossfold_executor::{Error, Executor, RetryPolicy};
use crossfold_memory::MemoryStore;
use crossfold_testkit::{Fault, FaultKind, FaultyStore, Operation};

fn fast_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .base_delay(Duration::from_micros(100))
        .max_delay(Duration::from_millis(2))
}

async fn log_of(store: &impl EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START, usize::MAX, &LogFilter::all())
        .await
        .unwrap()
}

fn credit(account: &str, amount: i64) -> Credit {
    Credit {
        account: sid(account),
        amount,
    }
}

/// The first append commits and is reported failed with `kind`.
async fn committed_then_reported(kind: FaultKind) {
    let store =
        FaultyStore::in_memory().with(Fault::on(Operation::Append).nth(1).after_call().fail(kind));
    let executor = Executor::builder(store.clone())
        .retry(fast_retries(5))
        .build();
    let done = executor
        .execute(credit("a", 10))
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: the committed append must be found: {e}"));
    let log = log_of(store.inner()).await;
    assert_eq!(log.len(), 1, "{kind:?}: applied once");
    assert_eq!(balance(store.inner(), &sid("a")).await, 10);
    assert_eq!(done.events.len(), 1);
    assert_eq!(done.events[0].event_id, log[0].event_id, "the stored event");
    assert_eq!(done.events[0].position, log[0].position);
    assert!(!done.replayed);
    // One append: the executor never sent a second one. Reads: one to fold the stream, one to
    // catch the view up (which shows the stream moved), one to collect the append's events.
    assert_eq!(store.calls(Operation::Append), 1);
    assert_eq!(store.calls(Operation::ReadStreams), 3);
}

#[tokio::test]
async fn a_commit_reported_as_a_lost_connection_is_found_and_returned() {
    committed_then_reported(FaultKind::Unavailable).await;
}

#[tokio::test]
async fn a_commit_reported_as_a_timeout_is_found_and_returned() {
    committed_then_reported(FaultKind::Timeout).await;
}

#[tokio::test]
async fn an_append_that_never_reached_the_store_costs_one_read_of_what_changed() {
    // After a lost connection (which may hide a commit) or contention (which wrote nothing),
    // the view is caught up with one read of what changed since it — not refolded — and that
    // read also shows the append's place in its stream still free: it did not commit.
    for kind in [FaultKind::Unavailable, FaultKind::Contention] {
        let store = FaultyStore::in_memory().with(Fault::on(Operation::Append).nth(1).fail(kind));
        let executor = Executor::builder(store.clone())
            .retry(fast_retries(5))
            .build();
        let done = executor.execute(credit("a", 10)).await.unwrap();
        assert_eq!(done.attempts, 2);
        assert_eq!(log_of(store.inner()).await.len(), 1, "{kind:?}");
        assert_eq!(store.calls(Operation::ReadStreams), 2, "{kind:?}");
    }
}

#[tokio::test]
async fn a_store_that_stays_down_after_an_append_in_doubt_leaves_the_outcome_unknown() {
    for after_call in [true, false] {
        let mut lost = Fault::on(Operation::Append)
            .nth(1)
            .fail(FaultKind::Unavailable);
        if after_call {
            lost = lost.after_call();
        }
        let store = FaultyStore::in_memory().with(lost).with(
            Fault::on(Operation::ReadStreams)
                .from_call(2)
                .fail(FaultKind::Unavailable),
        );
        let executor = Executor::builder(store.clone())
            .retry(fast_retries(4))
            .build();
        let err = executor.execute(credit("a", 10)).await.unwrap_err();
        match &err {
            Error::OutcomeUnknown {
                source: StoreError::Unavailable(_),
                attempts: 4,
            } => {}
            other => panic!("expected OutcomeUnknown after 4 attempts, got {other:?}"),
        }
        assert!(err.may_have_written() && err.is_transient());
        let written = log_of(store.inner()).await.len();
        assert_eq!(written, usize::from(after_call), "at most once");
        assert_eq!(store.calls(Operation::Append), 1, "never decided again");
    }
}

#[tokio::test]
async fn a_store_that_comes_back_tells_whether_the_append_committed() {
    let store = FaultyStore::in_memory()
        .with(
            Fault::on(Operation::Append)
                .nth(1)
                .after_call()
                .fail(FaultKind::Unavailable),
        )
        .with(
            Fault::on(Operation::ReadStreams)
                .from_call(2)
                .times(3)
                .fail(FaultKind::Unavailable),
        );
    let executor = Executor::builder(store.clone())
        .retry(fast_retries(10))
        .build();
    let done = executor.execute(credit("a", 10)).await.unwrap();
    assert_eq!(done.events.len(), 1);
    assert_eq!(log_of(store.inner()).await.len(), 1);
    assert_eq!(store.calls(Operation::Append), 1);
}

#[tokio::test]
async fn the_last_attempt_in_doubt_is_still_checked() {
    // The only attempt allowed fails in doubt; the executor still looks once before giving up.
    let store = FaultyStore::in_memory().with(
        Fault::on(Operation::Append)
            .after_call()
            .fail(FaultKind::Unavailable),
    );
    let executor = Executor::builder(store.clone())
        .retry(RetryPolicy::none())
        .build();
    let done = executor.execute(credit("a", 10)).await.unwrap();
    assert_eq!(done.events.len(), 1);
    assert_eq!(log_of(store.inner()).await.len(), 1);

    // When the look finds the append's place still free, the append has not committed — yet:
    // a request left running on a server whose client is gone could still commit, so with no
    // attempt left to decide again (which would exclude it) the outcome is unknown.
    let store = FaultyStore::in_memory().with(
        Fault::on(Operation::Append)
            .nth(1)
            .fail(FaultKind::Unavailable),
    );
    let executor = Executor::builder(store.clone())
        .retry(RetryPolicy::none())
        .build();
    let err = executor.execute(credit("a", 10)).await.unwrap_err();
    assert!(
        matches!(err, Error::OutcomeUnknown { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(log_of(store.inner()).await.is_empty());
}

/// A store whose first append is held back and fails as a lost connection, and commits later
/// — just before the next append, as a request left running on a server whose client is gone.
#[derive(Clone)]
struct LateCommit {
    inner: MemoryStore,
    held: Arc<Mutex<Option<AppendRequest>>>,
    appends: Arc<AtomicU64>,
}

impl EventStore for LateCommit {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        self.inner.read_streams(reads).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        if self.appends.fetch_add(1, Ordering::SeqCst) == 0 {
            *self.held.lock().unwrap() = Some(request);
            return Err(StoreError::Unavailable("connection reset by peer".into()));
        }
        let held = self.held.lock().unwrap().take();
        if let Some(held) = held {
            self.inner.append(held).await.unwrap();
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
}

#[tokio::test]
async fn an_append_that_commits_after_its_error_is_recognised_on_the_next_conflict() {
    let store = LateCommit {
        inner: MemoryStore::new(),
        held: Arc::default(),
        appends: Arc::default(),
    };
    let executor = Executor::builder(store.clone())
        .retry(fast_retries(5))
        .build();
    // The failed append is still open when the stream is read again, so the command decides
    // again; its second append conflicts with the first one committing late. The refreshed
    // view holds the first append's events: that is the outcome, not a reason to write again.
    let done = executor.execute(credit("a", 10)).await.unwrap();
    let log = log_of(&store.inner).await;
    assert_eq!(log.len(), 1, "applied once: {log:?}");
    assert_eq!(done.events[0].event_id, log[0].event_id);
    assert_eq!(done.conflicts, 1);
    assert_eq!(store.appends.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_deposits_through_lost_acknowledgements_are_counted_exactly() {
    let store = FaultyStore::in_memory()
        .with(
            Fault::on(Operation::Append)
                .with_probability(0.2, 11)
                .after_call()
                .fail(FaultKind::Unavailable),
        )
        .with(
            Fault::on(Operation::Append)
                .with_probability(0.1, 12)
                .after_call()
                .fail(FaultKind::Timeout),
        )
        .with(
            Fault::on(Operation::ReadStreams)
                .with_probability(0.1, 13)
                .fail(FaultKind::Unavailable),
        );
    let accounts: Vec<StreamId> = (0..4).map(|i| sid(&format!("acct-{i}"))).collect();
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let executor = Executor::builder(store.clone())
            .retry(fast_retries(20))
            .build();
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut unknown, mut failed) = (0i64, 0i64, 0i64);
            for i in 0..100usize {
                let account = accounts[(t + i) % accounts.len()].clone();
                match executor.execute(Credit { account, amount: 1 }).await {
                    Ok(done) => {
                        assert_eq!(done.events.len(), 1);
                        ok += 1;
                    }
                    Err(e @ Error::OutcomeUnknown { .. }) => {
                        assert!(e.may_have_written());
                        unknown += 1;
                    }
                    // Out of attempts (eight executors race for four accounts, and faults
                    // strike), with every append in doubt found not to have committed: a
                    // failure that says nothing was written — which the count below checks.
                    Err(e) if e.is_retryable() && !e.may_have_written() => failed += 1,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            (ok, unknown, failed)
        }));
    }
    let (mut ok, mut unknown, mut failed) = (0, 0, 0);
    for t in tasks {
        let (o, u, f) = t.await.unwrap();
        ok += o;
        unknown += u;
        failed += f;
    }
    assert!(failed <= 8, "{failed} of 800 deposits ran out of attempts");
    assert!(store.injected() > 50, "faults fired: {}", store.injected());
    let mut stored = 0;
    for a in &accounts {
        stored += balance(store.inner(), a).await;
    }
    assert!(
        stored >= ok && stored <= ok + unknown,
        "{ok} deposits returned Ok and {unknown} unknown, but {stored} are stored"
    );
}
