//! Torture: many tasks over a few pooled connections move money between few accounts. Each
//! transfer reads both accounts, folds their balances, and appends a withdrawal and a deposit
//! with `Exact` versions (plus a check of a rarely changing "limits" stream it only reads),
//! retrying on conflict. Afterwards money is conserved, no balance ever went negative, every
//! stream's versions are gap-free, and the global log holds every event exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{fresh_store_with, json_event, sid};
use crossfold_core::{
    AppendRequest, EventData, EventStore, ExpectedVersion, LogFilter, Position, RecordedEvent,
    StoreError, StreamId, StreamRead,
};

const ACCOUNTS: usize = 4;
const OPENING_BALANCE: i64 = 100;
const TASKS: usize = 8;
const TRANSFERS_PER_TASK: usize = 25;

fn account(i: usize) -> StreamId {
    sid(&format!("account-{i}"))
}

fn delta_event(kind: &str, delta: i64) -> EventData {
    json_event(kind, &format!("{{\"delta\": {delta}}}"))
}

fn delta(e: &RecordedEvent) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(&e.payload.bytes).unwrap();
    v["delta"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_conserve_money_and_keep_history_whole() {
    let store = Arc::new(fresh_store_with(|c| c.pool_size(4)).await);
    let limits = sid("bank-limits");
    for i in 0..ACCOUNTS {
        store
            .append(AppendRequest::new().stream(
                account(i),
                ExpectedVersion::NoStream,
                vec![delta_event("Opened", OPENING_BALANCE)],
            ))
            .await
            .unwrap();
    }
    store
        .append(AppendRequest::new().stream(
            limits.clone(),
            ExpectedVersion::NoStream,
            vec![json_event("LimitSet", "{}")],
        ))
        .await
        .unwrap();

    let conflicts = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (store, conflicts, done, limits) = (
            store.clone(),
            conflicts.clone(),
            done.clone(),
            limits.clone(),
        );
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(task as u64);
            for _ in 0..TRANSFERS_PER_TASK {
                let from = rng.usize(..ACCOUNTS);
                let to = (from + 1 + rng.usize(..ACCOUNTS - 1)) % ACCOUNTS;
                let amount = rng.i64(1..=40);
                loop {
                    let read = store
                        .read_streams(&[
                            StreamRead::all(account(from)),
                            StreamRead::all(account(to)),
                            StreamRead::version_only(limits.clone()),
                        ])
                        .await
                        .unwrap();
                    let balance: i64 = read[0].events.iter().map(delta).sum();
                    if balance < amount {
                        break; // refused by the business rule: nothing to append
                    }
                    let request = AppendRequest::new()
                        .stream(
                            account(from),
                            ExpectedVersion::Exact(read[0].version),
                            vec![delta_event("Withdrawn", -amount)],
                        )
                        .stream(
                            account(to),
                            ExpectedVersion::Exact(read[1].version),
                            vec![delta_event("Deposited", amount)],
                        )
                        .check(limits.clone(), ExpectedVersion::Exact(read[2].version));
                    match store.append(request).await {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(StoreError::Conflict(_)) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_micros(rng.u64(0..2000))).await;
                        }
                        Err(e) => panic!("transfer failed: {e:?}"),
                    }
                }
            }
        });
    }
    // Meanwhile the read-only stream changes now and then, failing transfers that read it.
    let limits_changes = {
        let (store, limits) = (store.clone(), limits.clone());
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(15)).await;
                store
                    .append(AppendRequest::new().stream(
                        limits.clone(),
                        ExpectedVersion::Any,
                        vec![json_event("LimitSet", "{}")],
                    ))
                    .await
                    .unwrap();
            }
        })
    };
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    limits_changes.await.unwrap();
    println!(
        "transfers: {}, conflicts retried: {}",
        done.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed)
    );
    assert!(done.load(Ordering::Relaxed) > 0);

    // Money is conserved, no balance ever negative, versions gap-free.
    let mut total = 0;
    let mut stream_events: HashMap<StreamId, Vec<RecordedEvent>> = HashMap::new();
    for i in 0..ACCOUNTS {
        let read = store
            .read_stream(&account(i), Default::default(), usize::MAX)
            .await
            .unwrap();
        let mut balance = 0;
        for (n, e) in read.events.iter().enumerate() {
            assert_eq!(
                e.stream_version.get(),
                n as u64 + 1,
                "gap in {}",
                account(i)
            );
            balance += delta(e);
            assert!(balance >= 0, "{} went negative at version {n}", account(i));
        }
        assert_eq!(read.version.get(), read.events.len() as u64);
        total += balance;
        stream_events.insert(account(i), read.events);
    }
    assert_eq!(
        total,
        OPENING_BALANCE * ACCOUNTS as i64,
        "money not conserved"
    );
    let limits_read = store
        .read_stream(&limits, Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(limits_read.events.len(), 11);
    stream_events.insert(limits.clone(), limits_read.events);

    // The global log holds every stream event exactly once, in increasing positions (once it
    // shows the newest of them: other sessions may hold the visibility horizon back).
    if let Some(newest) = stream_events.values().flatten().map(|e| e.position).max() {
        store
            .wait_for_position(newest, std::time::Duration::from_secs(60))
            .await
            .unwrap();
    }
    let mut log = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 50, &LogFilter::all()).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        log.extend(page);
    }
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    let log_ids: HashSet<_> = log.iter().map(|e| e.event_id).collect();
    assert_eq!(
        log_ids.len(),
        log.len(),
        "an event appears twice in the log"
    );
    let stream_ids: HashSet<_> = stream_events
        .values()
        .flatten()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(log_ids, stream_ids, "the log and the streams disagree");
    // Each event's position in the log is the one its stream read reports.
    let by_id: HashMap<_, _> = log.iter().map(|e| (e.event_id, e.position)).collect();
    for e in stream_events.values().flatten() {
        assert_eq!(by_id[&e.event_id], e.position);
    }
}
