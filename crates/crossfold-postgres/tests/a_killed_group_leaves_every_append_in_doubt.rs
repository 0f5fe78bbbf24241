//! Group commit in flight. Other sessions hold stream rows locked so that calls block where
//! the test wants them: appends that arrive while the calls group commit allows are all busy
//! queue, and go together, in one commit, as soon as a call returns. A group whose connection
//! is killed in the middle of its call (`pg_terminate_backend` on its backend, from another
//! session) leaves every append in it in doubt — none of them wrote anything — and the
//! executor settles such appends as it settles any append in doubt: each command ends applied
//! exactly once, with all its events.
//!
//! The locks give the lockers transaction ids, which hold back the server's visibility
//! horizon while they are held: this is a test binary of its own so that no other test of
//! the crate waits on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::future::Future;
use std::time::Duration;

use common::{Commit, TestStore, events, fresh_store_in_with, raw_client, sid};
use crossfold_core::{
    AppendRequest, Appended, Command, CommandError, DomainEvent, Emit, ErrorChain, EventStore,
    ExpectedVersion, Fold, Recorded, StoreError, StreamId, StreamRef, StreamVersion,
};
use crossfold_executor::{Executor, RetryPolicy};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// Polls `check` until it holds; fails the test after a minute.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..3000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting until {what}");
}

/// A session holding the row of `stream` locked until it rolls back.
async fn lock(schema: &str, stream: &str) -> tokio_postgres::Client {
    let client = raw_client().await;
    client
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM {schema}.streams WHERE stream_id = '{stream}' FOR UPDATE"
        ))
        .await
        .unwrap();
    client
}

async fn release(locker: tokio_postgres::Client) {
    locker.batch_execute("ROLLBACK").await.unwrap();
}

/// The backends of `schema`'s store waiting for a lock in a call of `function`.
async fn blocked(schema: &str, function: &str) -> Vec<i32> {
    raw_client()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' \
               AND query LIKE '%.' || $2 || '(%'",
            &[&schema, &function],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A store with group commit on and three streams to block calls on; a lone append to each of
/// the first two is blocked by a lock, so that both calls group commit allows at once are busy.
struct Blocked {
    store: TestStore,
    schema: String,
    lockers: Vec<tokio_postgres::Client>,
    lone: Vec<JoinHandle<Result<Appended, StoreError>>>,
}

async fn blocked_store() -> Blocked {
    let store =
        fresh_store_in_with(Commit::Grouped, |c| c.pool_size(8).group_commit_calls(2)).await;
    let schema = store.schema().to_owned();
    for b in ["blocker-1", "blocker-2", "blocker-3"] {
        store
            .append(AppendRequest::new().stream(sid(b), ExpectedVersion::NoStream, events("B", 1)))
            .await
            .unwrap();
    }
    let mut lockers = Vec::new();
    for b in ["blocker-1", "blocker-2", "blocker-3"] {
        lockers.push(lock(&schema, b).await);
    }
    let mut lone = Vec::new();
    for b in ["blocker-1", "blocker-2"] {
        let store = store.store.clone();
        lone.push(tokio::spawn(async move {
            store
                .append(AppendRequest::new().stream(sid(b), ExpectedVersion::Any, events("B", 1)))
                .await
        }));
    }
    until("both lone appends wait for their locks", || async {
        blocked(&schema, "append_one").await.len() == 2
    })
    .await;
    Blocked {
        store,
        schema,
        lockers,
        lone,
    }
}

/// The backend of the group call waiting for a lock.
async fn group_backend(schema: &str) -> i32 {
    for _ in 0..3000 {
        if let [pid] = blocked(schema, "append_group").await[..] {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for the group call to wait for its lock");
}

fn spawn_append(
    store: &TestStore,
    request: AppendRequest,
) -> JoinHandle<Result<Appended, StoreError>> {
    let store = store.store.clone();
    tokio::spawn(async move { store.append(request).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_arrive_while_the_calls_are_busy_commit_together() {
    let Blocked {
        store,
        schema: _,
        mut lockers,
        mut lone,
    } = blocked_store().await;
    let mut queued = Vec::new();
    for i in 1..=5 {
        queued.push(spawn_append(
            &store,
            AppendRequest::new().stream(
                sid(&format!("c-{i}")),
                ExpectedVersion::NoStream,
                events("C", 2),
            ),
        ));
    }
    // One of them expects a version its stream does not have.
    queued.push(spawn_append(
        &store,
        AppendRequest::new().stream(
            sid("c-9"),
            ExpectedVersion::Exact(StreamVersion::new(7)),
            events("C", 1),
        ),
    ));
    until("the appends queue", || async {
        store.group_commit_waiting() == 6
    })
    .await;

    // The first call returns: what queued goes as one group.
    release(lockers.remove(0)).await;
    let first = lone.remove(0).await.unwrap().unwrap();
    let mut committed = Vec::new();
    for (i, handle) in queued.into_iter().enumerate() {
        let outcome = handle.await.unwrap();
        if i == 5 {
            assert!(
                matches!(&outcome, Err(StoreError::Conflict(c)) if c[0].actual == StreamVersion::EMPTY),
                "{outcome:?}"
            );
        } else {
            let appended = outcome.unwrap();
            assert_eq!(appended.len(), 2);
            committed.push(appended);
        }
    }
    let commits: Vec<u64> = committed
        .iter()
        .flat_map(|a| a.events.iter().map(|e| e.position.commit()))
        .collect();
    assert!(
        commits.iter().all(|c| *c == commits[0]),
        "the five appends share one transaction: {commits:?}"
    );
    assert_ne!(first.events[0].position.commit(), commits[0]);
    assert!(!store.stream_exists(&sid("c-9")).await.unwrap());
    for locker in lockers {
        release(locker).await;
    }
    lone.remove(0).await.unwrap().unwrap();
    assert_eq!(store.group_commit_waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_connection_is_killed_leaves_every_append_in_doubt() {
    let Blocked {
        store,
        schema,
        mut lockers,
        mut lone,
    } = blocked_store().await;
    // The group will wait for the lock on blocker-3, its first stream.
    let mut queued = vec![spawn_append(
        &store,
        AppendRequest::new().stream(sid("blocker-3"), ExpectedVersion::Any, events("B", 1)),
    )];
    for i in 1..=6 {
        queued.push(spawn_append(
            &store,
            AppendRequest::new().stream(
                sid(&format!("c-{i}")),
                ExpectedVersion::NoStream,
                events("C", 2),
            ),
        ));
    }
    until("the appends queue", || async {
        store.group_commit_waiting() == 7
    })
    .await;
    release(lockers.remove(0)).await;
    lone.remove(0).await.unwrap().unwrap();
    let group = group_backend(&schema).await;
    let killed: bool = raw_client()
        .await
        .query_one("SELECT pg_terminate_backend($1)", &[&group])
        .await
        .unwrap()
        .get(0);
    assert!(killed);

    // Every append of the group is in doubt, with the error a lost connection gives a lone
    // append — and none of them wrote anything.
    for handle in queued {
        let error = handle.await.unwrap().unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        let chain = ErrorChain(&error).to_string();
        assert!(chain.contains("group of 7 appends"), "{chain}");
    }
    for i in 1..=6 {
        assert!(!store.stream_exists(&sid(&format!("c-{i}"))).await.unwrap());
    }
    assert_eq!(
        store.stream_version(&sid("blocker-3")).await.unwrap(),
        StreamVersion::new(1)
    );
    for locker in lockers {
        release(locker).await;
    }
    lone.remove(0).await.unwrap().unwrap();
    // The store goes on: the same appends, sent again, commit.
    for i in 1..=6 {
        store
            .append(AppendRequest::new().stream(
                sid(&format!("c-{i}")),
                ExpectedVersion::NoStream,
                events("C", 2),
            ))
            .await
            .unwrap();
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Deposited {
    deposit: uuid::Uuid,
}

impl DomainEvent for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

#[derive(Clone, Default)]
struct Deposits(u64);

impl Fold<Deposited> for Deposits {
    fn apply(&mut self, _: &Recorded<Deposited>) {
        self.0 += 1;
    }
}

/// Two deposit events, with no idempotency key: applied twice, the account would show four.
struct Deposit {
    account: StreamId,
    deposit: uuid::Uuid,
}

impl Command for Deposit {
    type Event = Deposited;
    type State = Deposits;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.clone()
    }

    fn handle<'x>(
        &self,
        _: &Deposits,
        account: StreamRef<'x>,
        out: &mut Emit<'x, Deposited>,
    ) -> Result<(), CommandError> {
        for _ in 0..2 {
            out.append(
                account,
                Deposited {
                    deposit: self.deposit,
                },
            );
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_settles_the_commands_of_a_killed_group() {
    let Blocked {
        store,
        schema,
        mut lockers,
        mut lone,
    } = blocked_store().await;
    let executor = Executor::builder(store.store.clone())
        .retry(
            RetryPolicy::default()
                .max_attempts(20)
                .base_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(50)),
        )
        .build();
    let mut queued = vec![spawn_append(
        &store,
        AppendRequest::new().stream(sid("blocker-3"), ExpectedVersion::Any, events("B", 1)),
    )];
    let mut commands = Vec::new();
    for i in 1..=5 {
        let executor = executor.clone();
        let command = Deposit {
            account: sid(&format!("d-{i}")),
            deposit: uuid::Uuid::now_v7(),
        };
        let deposit = command.deposit;
        commands.push((
            command.account.clone(),
            deposit,
            tokio::spawn(async move { executor.execute(command).await }),
        ));
    }
    until("the commands' appends queue", || async {
        store.group_commit_waiting() == 6
    })
    .await;
    release(lockers.remove(0)).await;
    lone.remove(0).await.unwrap().unwrap();
    let group = group_backend(&schema).await;
    raw_client()
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&group])
        .await
        .unwrap();
    assert!(matches!(
        queued.remove(0).await.unwrap(),
        Err(StoreError::Unavailable(_))
    ));

    // Each command found its append in doubt, found out it had not committed, and ran again:
    // it is applied once, with both its events.
    for (account, deposit, handle) in commands {
        let executed = handle.await.unwrap().unwrap();
        assert!(executed.attempts >= 2, "{account}: {executed:?}");
        assert_eq!(executed.events.len(), 2);
        let read = store
            .read_stream(&account, StreamVersion::EMPTY, usize::MAX)
            .await
            .unwrap();
        assert_eq!(read.events.len(), 2, "{account}");
        assert_eq!(
            read.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            executed
                .events
                .iter()
                .map(|e| e.event_id)
                .collect::<Vec<_>>()
        );
        let payloads: Vec<Deposited> = read
            .events
            .iter()
            .map(|e| serde_json::from_slice(&e.payload.bytes).unwrap())
            .collect();
        assert!(payloads.iter().all(|p| p.deposit == deposit));
    }
    for locker in lockers {
        release(locker).await;
    }
    lone.remove(0).await.unwrap().unwrap();
}
