//! Torture: many tasks over a few pooled connections move money between few accounts. Each
//! transfer reads both accounts, folds their balances, and appends a withdrawal and a deposit
//! with `Exact` versions (plus a check of a rarely changing "limits" stream it only reads),
//! retrying on conflict. Afterwards money is conserved, no balance ever went negative, every
//! stream's versions are gap-free, and the global log holds every event exactly once.
//!
//! Each runs with each append alone and with group commit on (two calls in flight, so that
//! appends queue and go in groups). A second torture moves money in and out of many accounts
//! one account per append, so that a transaction holding two accounts' events can only be a
//! group: it checks that groups did form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Commit, TestStore, fresh_store_in_with, json_event, sid};
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

commit_modes!(
    [Alone, Grouped]
    concurrent_transfers_conserve_money_and_keep_history_whole,
    concurrent_deposits_and_withdrawals_conserve_money,
);

async fn concurrent_transfers_conserve_money_and_keep_history_whole(commit: Commit) {
    let store = Arc::new(fresh_store_in_with(commit, |c| c.pool_size(4)).await);
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
    let mut streams: Vec<StreamId> = (0..ACCOUNTS).map(account).collect();
    let total = check_accounts(&store, &streams).await;
    assert_eq!(
        total,
        OPENING_BALANCE * ACCOUNTS as i64,
        "money not conserved"
    );
    streams.push(limits.clone());
    let stream_events = check_log(&store, &streams).await;
    assert_eq!(stream_events[&limits].len(), 11);
}

/// Tasks deposit to and withdraw from many accounts, one account per append with its exact
/// version, retrying on conflict; a withdrawal that would overdraw is not appended. With group
/// commit on, appends on different accounts go together, and appends on the same account
/// wait for a later group. Afterwards the accounts hold the opening balances plus what the
/// tasks say they applied, no balance ever went negative, versions are gap-free and the log
/// holds every event exactly once.
async fn concurrent_deposits_and_withdrawals_conserve_money(commit: Commit) {
    const ACCOUNTS: usize = 12;
    const TASKS: usize = 16;
    const OPERATIONS_PER_TASK: usize = 40;
    let store = Arc::new(fresh_store_in_with(commit, |c| c.pool_size(6)).await);
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
    let applied = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (store, applied, conflicts) = (store.clone(), applied.clone(), conflicts.clone());
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(1000 + task as u64);
            for _ in 0..OPERATIONS_PER_TASK {
                let which = account(rng.usize(..ACCOUNTS));
                let amount = if rng.bool() {
                    rng.i64(1..=50)
                } else {
                    -rng.i64(1..=80)
                };
                loop {
                    let read = store
                        .read_streams(&[StreamRead::all(which.clone())])
                        .await
                        .unwrap();
                    let balance: i64 = read[0].events.iter().map(delta).sum();
                    if balance + amount < 0 {
                        break;
                    }
                    let kind = if amount > 0 { "Deposited" } else { "Withdrawn" };
                    let request = AppendRequest::new().stream(
                        which.clone(),
                        ExpectedVersion::Exact(read[0].version),
                        vec![delta_event(kind, amount)],
                    );
                    match store.append(request).await {
                        Ok(_) => {
                            applied.fetch_add(amount, Ordering::Relaxed);
                            break;
                        }
                        Err(StoreError::Conflict(_)) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("append failed: {e:?}"),
                    }
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    println!(
        "conflicts retried: {}, money moved: {}",
        conflicts.load(Ordering::Relaxed),
        applied.load(Ordering::Relaxed)
    );
    let streams: Vec<StreamId> = (0..ACCOUNTS).map(account).collect();
    let total = check_accounts(&store, &streams).await;
    assert_eq!(
        total,
        OPENING_BALANCE * ACCOUNTS as i64 + applied.load(Ordering::Relaxed),
        "money not conserved"
    );
    let stream_events = check_log(&store, &streams).await;
    let events: usize = stream_events.values().map(Vec::len).sum();
    assert!(events > ACCOUNTS, "nothing but openings: {events} events");
    // Each append wrote one account: a transaction holding events of two accounts is a group.
    let mut accounts_by_commit: HashMap<u64, HashSet<&StreamId>> = HashMap::new();
    for (id, events) in &stream_events {
        for e in events {
            accounts_by_commit
                .entry(e.position.commit())
                .or_default()
                .insert(id);
        }
    }
    let groups = accounts_by_commit.values().filter(|a| a.len() > 1).count();
    match commit {
        Commit::Alone => assert_eq!(groups, 0, "appends shared a transaction"),
        // Sixteen tasks and two calls at once: appends queue and go together.
        _ => assert!(groups > 0, "no two appends ever shared a transaction"),
    }
}

/// The accounts' total; each account's versions are gap-free and its balance never negative.
async fn check_accounts(store: &TestStore, accounts: &[StreamId]) -> i64 {
    let mut total = 0;
    for id in accounts {
        let read = store
            .read_stream(id, Default::default(), usize::MAX)
            .await
            .unwrap();
        let mut balance = 0;
        for (n, e) in read.events.iter().enumerate() {
            assert_eq!(e.stream_version.get(), n as u64 + 1, "gap in {id}");
            balance += delta(e);
            assert!(balance >= 0, "{id} went negative at version {n}");
        }
        assert_eq!(read.version.get(), read.events.len() as u64);
        total += balance;
    }
    total
}

/// Every event of `streams` is in the global log exactly once, at the position its stream
/// read reports, and the log holds nothing else; returns each stream's events.
async fn check_log(
    store: &TestStore,
    streams: &[StreamId],
) -> HashMap<StreamId, Vec<RecordedEvent>> {
    let mut stream_events: HashMap<StreamId, Vec<RecordedEvent>> = HashMap::new();
    for id in streams {
        let read = store
            .read_stream(id, Default::default(), usize::MAX)
            .await
            .unwrap();
        stream_events.insert(id.clone(), read.events);
    }
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
    stream_events
}
