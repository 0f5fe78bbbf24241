//! Run with: `cargo bench --features postgres --bench postgres`
//!
//! The PostgreSQL store's append and read paths, one operation at a time (latency, not
//! throughput: `crossfold-bench --store postgres` measures throughput under concurrency).
//! Needs a server: `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`. Works
//! in a schema of its own, dropped at the end.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossfold::core::{
    AppendRequest, Codec, EventData, EventStore, ExpectedVersion, Json, StreamId, StreamRead,
};
use crossfold::postgres::{PgConfig, PgEventStore};
use crossfold_bench::bank::BankEvent;

fn event() -> EventData {
    EventData::new(
        "Deposited",
        Json.encode(&BankEvent::Deposited { amount: 1 }).unwrap(),
    )
}

fn postgres(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("crossfold_criterion_{}", std::process::id());
    let store = rt.block_on(async {
        let config = PgConfig::from_url(&url)
            .expect("DATABASE_URL is not a valid URL")
            .schema(schema.clone());
        let store = PgEventStore::connect(config)
            .await
            .expect("cannot reach PostgreSQL: set DATABASE_URL to a server you can write to");
        store.migrate().await.expect("migration failed");
        store
    });
    let streams: Vec<StreamId> = (0..1000)
        .map(|i| StreamId::new(format!("s-{i}")).unwrap())
        .collect();
    rt.block_on(async {
        for s in &streams {
            let events = (0..10).map(|_| event()).collect();
            store
                .append(AppendRequest::new().stream(s.clone(), ExpectedVersion::Any, events))
                .await
                .unwrap();
        }
    });

    let mut group = c.benchmark_group("postgres");
    let mut n = 0usize;
    group.throughput(Throughput::Elements(1));
    group.bench_function("append/1_stream_1_event", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let stream = StreamId::new(format!("fresh-{n}-{}", std::process::id())).unwrap();
            let store = store.clone();
            async move {
                store
                    .append(AppendRequest::new().stream(
                        stream,
                        ExpectedVersion::NoStream,
                        vec![event()],
                    ))
                    .await
                    .unwrap()
            }
        })
    });
    group.bench_function("append/3_streams_checked", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let store = store.clone();
            let mut request = AppendRequest::new();
            for k in 0..3 {
                request = request.stream(
                    streams[(n * 3 + k) % streams.len()].clone(),
                    ExpectedVersion::Any,
                    vec![event()],
                );
            }
            async move { store.append(request).await.unwrap() }
        })
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("append/100_events", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let stream = StreamId::new(format!("batch-{n}-{}", std::process::id())).unwrap();
            let store = store.clone();
            let events = (0..100).map(|_| event()).collect();
            async move {
                store
                    .append(AppendRequest::new().stream(stream, ExpectedVersion::NoStream, events))
                    .await
                    .unwrap()
            }
        })
    });
    group.throughput(Throughput::Elements(10));
    group.bench_function("read/1_stream", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let store = store.clone();
            let read = [StreamRead::all(streams[n % streams.len()].clone())];
            async move { store.read_streams(&read).await.unwrap() }
        })
    });
    group.finish();

    rt.block_on(async {
        if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
        }
    });
}

criterion_group!(benches, postgres);
criterion_main!(benches);
