//! A server that restarts under load loses nothing and applies nothing twice. On a cluster of
//! its own, writers append (raw appends with exact expected versions, and non-idempotent
//! commands through the executor), a subscriber follows the log and a sampler checks health,
//! through an immediate restart, a fast restart and an outage longer than the pool's wait
//! timeout. Afterwards:
//!
//! * every error any of them saw was typed and transient;
//! * every acknowledged event is stored, and every stream's versions are gap-free;
//! * no command was applied twice (each deposit carries an id of its own);
//! * the subscriber saw every event of the log exactly once, in log order;
//! * health went unhealthy during the outage and came back to healthy.
//!
//! Run twice: appends alone, and with group commit (appends in groups when restarts strike).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::events;
use crossfold_core::{
    AppendRequest, Command, CommandError, DomainEvent, Emit, EventId, EventStore, ExpectedVersion,
    Fold, HealthCheck, HealthStatus, LogFilter, Position, Recorded, StreamId, StreamRef,
    StreamVersion, SubscriptionExt, SubscriptionOptions,
};
use crossfold_executor::{Executor, RetryPolicy};
use crossfold_postgres::{PgConfig, PgEventStore};
use crossfold_testkit::cluster::{StopMode, TestCluster};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Deposited {
    deposit: uuid::Uuid,
    amount: u64,
}

impl DomainEvent for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

/// An account's balance.
#[derive(Clone, Default)]
struct Balance(u64);

impl Fold<Deposited> for Balance {
    fn apply(&mut self, event: &Recorded<Deposited>) {
        self.0 += event.amount;
    }
}

/// A deposit with no idempotency key: running it twice would deposit twice.
struct Deposit {
    account: StreamId,
    deposit: uuid::Uuid,
}

impl Command for Deposit {
    type Event = Deposited;
    type State = Balance;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.clone()
    }

    fn handle<'x>(
        &self,
        _: &Balance,
        account: StreamRef<'x>,
        out: &mut Emit<'x, Deposited>,
    ) -> Result<(), CommandError> {
        out.append(
            account,
            Deposited {
                deposit: self.deposit,
                amount: 1,
            },
        );
        Ok(())
    }
}

#[derive(Default)]
struct Observed {
    /// Events whose append returned Ok.
    acknowledged: HashSet<EventId>,
    /// Deposits whose execution returned Ok.
    deposits_done: HashSet<uuid::Uuid>,
    /// Errors seen, as text, with whether each was transient.
    errors: Vec<(bool, String)>,
    health: Vec<HealthStatus>,
    delivered: Vec<(Position, EventId)>,
}

fn sid(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

async fn raw_writer(
    store: PgEventStore,
    stream: StreamId,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Observed>>,
) {
    let mut version = StreamVersion::EMPTY;
    while !stop.load(Ordering::SeqCst) {
        let batch = events("Raw", 1);
        let id = batch[0].event_id;
        match store
            .append(AppendRequest::new().stream(
                stream.clone(),
                ExpectedVersion::Exact(version),
                batch,
            ))
            .await
        {
            Ok(appended) => {
                version = appended.version_of(&stream).unwrap();
                seen.lock().await.acknowledged.insert(id);
            }
            Err(e) => {
                seen.lock()
                    .await
                    .errors
                    .push((e.is_transient(), e.to_string()));
                // The outcome is unknown: learn the stream's version again once the server
                // answers (the event may or may not be among its events).
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Ok(v) = store.stream_version(&stream).await {
                        version = v;
                        break;
                    }
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }
        }
    }
}

async fn command_writer(
    executor: Executor<PgEventStore>,
    account: StreamId,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Observed>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let deposit = uuid::Uuid::now_v7();
        match executor
            .execute(Deposit {
                account: account.clone(),
                deposit,
            })
            .await
        {
            Ok(_) => {
                seen.lock().await.deposits_done.insert(deposit);
            }
            Err(e) => {
                seen.lock()
                    .await
                    .errors
                    .push((e.is_retryable(), e.to_string()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn subscriber(store: PgEventStore, stop: Arc<AtomicBool>, seen: Arc<Mutex<Observed>>) {
    let mut subscription = store.subscribe(
        SubscriptionOptions::all()
            .batch_size(100)
            .max_wait(Duration::from_millis(200)),
    );
    loop {
        match tokio::time::timeout(Duration::from_millis(300), subscription.next_batch()).await {
            Ok(Ok(batch)) => {
                let mut seen = seen.lock().await;
                seen.delivered
                    .extend(batch.events.iter().map(|e| (e.position, e.event_id)));
            }
            Ok(Err(e)) => {
                seen.lock()
                    .await
                    .errors
                    .push((e.is_transient(), e.to_string()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) if stop.load(Ordering::SeqCst) => return,
            Err(_) => {}
        }
    }
}

async fn health_sampler(store: PgEventStore, stop: Arc<AtomicBool>, seen: Arc<Mutex<Observed>>) {
    while !stop.load(Ordering::SeqCst) {
        let report = store.check_health().await;
        seen.lock().await.health.push(report.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarts_lose_nothing() {
    restarts_lose_nothing(false).await;
}

/// The same with group commit on and one call in flight at a time, so that the appends of the
/// four writers go in groups, and restarts and the outage strike groups in the middle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarts_lose_nothing_with_group_commit() {
    restarts_lose_nothing(true).await;
}

async fn restarts_lose_nothing(group_commit: bool) {
    let mut cluster = TestCluster::start_new().unwrap();
    let wait_timeout = Duration::from_millis(500);
    let mut config = PgConfig::from_url(&cluster.url())
        .unwrap()
        .schema("restarts")
        .pool_size(6)
        .wait_timeout(wait_timeout)
        .create_timeout(Duration::from_millis(500));
    if group_commit {
        config = config.group_commit(true).group_commit_calls(1);
    }
    let store = PgEventStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    let executor = Executor::builder(store.clone())
        .retry(
            RetryPolicy::default()
                .max_attempts(200)
                .base_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(200)),
        )
        .build();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Observed::default()));
    let mut tasks = Vec::new();
    for w in 0..2 {
        tasks.push(tokio::spawn(raw_writer(
            store.clone(),
            sid(&format!("raw-{w}")),
            stop.clone(),
            seen.clone(),
        )));
        tasks.push(tokio::spawn(command_writer(
            executor.clone(),
            sid(&format!("account-{w}")),
            stop.clone(),
            seen.clone(),
        )));
    }
    let follower = tokio::spawn(subscriber(store.clone(), stop.clone(), seen.clone()));
    let sampler = tokio::spawn(health_sampler(store.clone(), stop.clone(), seen.clone()));

    let pause = Duration::from_millis(1500);
    tokio::time::sleep(pause).await;
    tokio::task::block_in_place(|| cluster.restart(StopMode::Immediate)).unwrap();
    tokio::time::sleep(pause).await;
    tokio::task::block_in_place(|| cluster.restart(StopMode::Fast)).unwrap();
    tokio::time::sleep(pause).await;
    // An outage longer than the pool's wait timeout.
    tokio::task::block_in_place(|| cluster.stop(StopMode::Immediate)).unwrap();
    tokio::time::sleep(wait_timeout * 4).await;
    tokio::task::block_in_place(|| cluster.start()).unwrap();
    tokio::time::sleep(pause * 2).await;

    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    // Let the subscriber catch up with everything stored, then stop it.
    let head = store.head_position().await.unwrap();
    let started = Instant::now();
    loop {
        let caught_up = seen
            .lock()
            .await
            .delivered
            .last()
            .is_some_and(|(p, _)| *p >= head);
        if caught_up || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.await.unwrap();
    sampler.await.unwrap();
    let seen = seen.lock().await;

    eprintln!(
        "{} events acknowledged, {} deposits done, {} errors, {} health samples",
        seen.acknowledged.len(),
        seen.deposits_done.len(),
        seen.errors.len(),
        seen.health.len()
    );
    // Every error was typed and transient.
    assert!(
        !seen.errors.is_empty(),
        "the restarts caused no error at all"
    );
    let permanent: Vec<_> = seen.errors.iter().filter(|(t, _)| !t).collect();
    assert!(
        permanent.is_empty(),
        "errors that are not transient: {permanent:?}"
    );

    // Nothing acknowledged was lost; versions are gap-free.
    let log = store
        .read_all(Position::START, usize::MAX, &LogFilter::all())
        .await
        .unwrap();
    let stored: HashSet<EventId> = log.iter().map(|e| e.event_id).collect();
    assert_eq!(stored.len(), log.len(), "an event is twice in the log");
    let lost: Vec<_> = seen.acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    let mut versions: HashMap<StreamId, Vec<u64>> = HashMap::new();
    for e in &log {
        versions
            .entry(e.stream_id.clone())
            .or_default()
            .push(e.stream_version.get());
    }
    for (stream, mut v) in versions {
        v.sort_unstable();
        assert_eq!(
            v,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "gaps in {stream}"
        );
    }

    // No command applied twice, and every acknowledged one applied.
    let mut deposits: HashMap<uuid::Uuid, usize> = HashMap::new();
    for e in log.iter().filter(|e| e.event_type == "Deposited") {
        let d: Deposited = crossfold_core::decode_payload(&e.payload).unwrap();
        *deposits.entry(d.deposit).or_default() += 1;
    }
    let twice: Vec<_> = deposits.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "deposits applied twice: {twice:?}");
    let missing: Vec<_> = seen
        .deposits_done
        .iter()
        .filter(|d| !deposits.contains_key(d))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged deposits missing: {missing:?}"
    );
    assert!(seen.deposits_done.len() > 10 && seen.acknowledged.len() > 10);

    // The subscriber saw every event once, in order.
    let delivered: Vec<EventId> = seen.delivered.iter().map(|(_, id)| *id).collect();
    let in_log: Vec<EventId> = log.iter().map(|e| e.event_id).collect();
    assert_eq!(
        delivered, in_log,
        "the subscriber's events differ from the log"
    );

    // Health went unhealthy during the outage and came back to healthy.
    assert!(
        seen.health.contains(&HealthStatus::Unhealthy),
        "{:?}",
        seen.health
    );
    assert_eq!(store.check_health().await.status, HealthStatus::Healthy);
    let first_unhealthy = seen
        .health
        .iter()
        .position(|s| *s == HealthStatus::Unhealthy)
        .unwrap();
    assert!(seen.health[first_unhealthy..].contains(&HealthStatus::Healthy));
}
