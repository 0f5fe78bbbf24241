//! Run with: `cargo bench --bench memory`
//!
//! The in-memory store's append and read paths, and the executor's overhead per command on it
//! compared with doing the same work (fold, decide, encode, append) by hand.
#![allow(missing_docs, clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossfold::core::{
    AppendRequest, Command, EventData, EventId, EventStore, ExpectedVersion, Fold, Json, Metadata,
    ReadSet, StreamId, StreamRead, StreamVersion, Upcasters, encode_event,
};
use crossfold::executor::Executor;
use crossfold::memory::MemoryStore;
use crossfold_bench::bank::{BankEvent, Deposit, Open, Transfer};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn event() -> EventData {
    let payload =
        crossfold::core::Codec::encode(&Json, &BankEvent::Deposited { amount: 1 }).unwrap();
    EventData::new("Deposited", payload)
}

fn store_paths(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("memory_store");
    group.throughput(Throughput::Elements(1));
    let store = MemoryStore::new();
    let streams: Vec<StreamId> = (0..1000)
        .map(|i| StreamId::new(format!("s-{i}")).unwrap())
        .collect();
    let mut n = 0usize;
    group.bench_function("append/1_stream_1_event", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let stream = streams[n % streams.len()].clone();
            let store = store.clone();
            async move {
                store
                    .append(AppendRequest::new().stream(
                        stream,
                        ExpectedVersion::Any,
                        vec![event()],
                    ))
                    .await
                    .unwrap()
            }
        })
    });
    group.bench_function("append/3_streams_3_events", |b| {
        b.to_async(&rt).iter(|| {
            n += 3;
            let store = store.clone();
            let mut request = AppendRequest::new();
            for k in 0..3 {
                request = request.stream(
                    streams[(n + k) % streams.len()].clone(),
                    ExpectedVersion::Any,
                    vec![event()],
                );
            }
            async move { store.append(request).await.unwrap() }
        })
    });
    // Streams of ten events to read.
    let read_store = MemoryStore::new();
    rt.block_on(async {
        for s in &streams {
            let events = (0..10).map(|_| event()).collect();
            read_store
                .append(AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, events))
                .await
                .unwrap();
        }
    });
    group.throughput(Throughput::Elements(10));
    group.bench_function("read/1_stream_10_events", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let read = [StreamRead::all(streams[n % streams.len()].clone())];
            let store = read_store.clone();
            async move { store.read_streams(&read).await.unwrap() }
        })
    });
    group.throughput(Throughput::Elements(30));
    group.bench_function("read/3_streams_30_events", |b| {
        b.to_async(&rt).iter(|| {
            n += 3;
            let reads: Vec<StreamRead> = (0..3)
                .map(|k| StreamRead::all(streams[(n + k) % streams.len()].clone()))
                .collect();
            let store = read_store.clone();
            async move { store.read_streams(&reads).await.unwrap() }
        })
    });
    group.finish();
}

/// What the by-hand baseline knows of each account: its folded state and version.
type Known = HashMap<StreamId, (<Deposit as Command>::State, StreamVersion)>;

fn executor_overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("executor");
    group.throughput(Throughput::Elements(1));
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    let accounts: Vec<StreamId> = (0..1000)
        .map(|i| StreamId::new(format!("account-{i}")).unwrap())
        .collect();
    rt.block_on(async {
        for a in &accounts {
            executor
                .execute(Open {
                    account: a.clone(),
                    initial: 1_000_000,
                })
                .await
                .unwrap();
        }
    });
    let mut n = 0usize;
    group.bench_function("execute/deposit", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let executor = executor.clone();
            let account = accounts[n % accounts.len()].clone();
            async move {
                executor
                    .execute(Deposit { account, amount: 1 })
                    .await
                    .unwrap()
            }
        })
    });
    group.bench_function("execute/transfer", |b| {
        b.to_async(&rt).iter(|| {
            n += 2;
            let executor = executor.clone();
            let from = accounts[n % accounts.len()].clone();
            let to = accounts[(n + 1) % accounts.len()].clone();
            let transfer = StreamId::new(format!("transfer-{}", EventId::generate())).unwrap();
            async move {
                executor
                    .execute(Transfer {
                        from,
                        to,
                        transfer,
                        amount: 1,
                    })
                    .await
                    .unwrap()
            }
        })
    });
    let upcasters = Upcasters::new();
    let metadata = Arc::new(Metadata::now());
    // The same deposit by hand, on its own store: the state and version of each account are
    // kept here (as the executor's cache keeps them), then decide, encode and append with the
    // expected version. The difference to `execute/deposit` is the executor's overhead.
    let hand_store = MemoryStore::new();
    let known: Rc<RefCell<Known>> = Rc::default();
    rt.block_on(async {
        let opener = Executor::new(hand_store.clone());
        for a in &accounts {
            opener
                .execute(Open {
                    account: a.clone(),
                    initial: 1_000_000,
                })
                .await
                .unwrap();
            let read = hand_store
                .read_streams(&[StreamRead::all(a.clone())])
                .await
                .unwrap();
            let mut state = <Deposit as Command>::State::default();
            for raw in &read[0].events {
                state.apply(&upcasters.decode(&Json, raw).unwrap());
            }
            known
                .borrow_mut()
                .insert(a.clone(), (state, read[0].version));
        }
    });
    group.bench_function("by_hand/deposit", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let store = hand_store.clone();
            let account = accounts[n % accounts.len()].clone();
            let metadata = metadata.clone();
            let known = known.clone();
            async move {
                let command = Deposit {
                    account: account.clone(),
                    amount: 1,
                };
                let (decided, version) = {
                    let known = known.borrow();
                    let (state, version) = &known[&account];
                    (
                        ReadSet::of(&command).decide(&command, state).unwrap(),
                        *version,
                    )
                };
                let events: Vec<EventData> = decided
                    .iter()
                    .map(|(_, e)| {
                        encode_event(&Json, e, EventId::generate(), metadata.clone()).unwrap()
                    })
                    .collect();
                let appended = store
                    .append(AppendRequest::new().stream(
                        account.clone(),
                        ExpectedVersion::Exact(version),
                        events,
                    ))
                    .await
                    .unwrap();
                let mut known = known.borrow_mut();
                let entry = known.get_mut(&account).unwrap();
                for ((_, event), raw) in decided.into_iter().zip(&appended.events) {
                    entry.1 = raw.stream_version;
                    let recorded = crossfold::core::Recorded::new(event, raw);
                    entry.0.apply(&recorded);
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, store_paths, executor_overhead);
criterion_main!(benches);
