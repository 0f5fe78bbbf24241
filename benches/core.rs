//! Run with: `cargo bench --bench core`
//!
//! Costs that do not depend on a store: folding an event into a command's state (decode plus
//! apply), and encoding/decoding one event with each codec.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use crossfold::core::{
    Codec, Command, EventData, EventId, Fold, Json, MessagePack, Metadata, Position, Recorded,
    RecordedEvent, StreamId, StreamVersion, Upcasters, encode_event,
};
use crossfold_bench::bank::{BankEvent, Deposit};

fn recorded(codec: &impl Codec, n: u64) -> Vec<RecordedEvent> {
    let stream = StreamId::new("account-1").unwrap();
    let metadata = Arc::new(Metadata::now());
    (1..=n)
        .map(|v| {
            let event = if v == 1 {
                BankEvent::Opened { initial: 100 }
            } else {
                BankEvent::Deposited { amount: 7 }
            };
            encode_event(codec, &event, EventId::generate(), metadata.clone())
                .unwrap()
                .record(stream.clone(), StreamVersion::new(v), Position::new(v, 0))
        })
        .collect()
}

fn fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("fold");
    let upcasters = Upcasters::new();
    for (name, events) in [
        ("json", recorded(&Json, 1000)),
        ("msgpack", recorded(&MessagePack, 1000)),
    ] {
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function(format!("decode_and_apply/{name}/1000_events"), |b| {
            b.iter(|| {
                let mut state = <Deposit as Command>::State::default();
                for raw in &events {
                    let event: Recorded<BankEvent> = upcasters.decode(&Json, raw).unwrap();
                    state.apply(&event);
                }
                black_box(state)
            })
        });
    }
    let decoded: Vec<Recorded<BankEvent>> = recorded(&Json, 1000)
        .iter()
        .map(|raw| upcasters.decode(&Json, raw).unwrap())
        .collect();
    group.throughput(Throughput::Elements(decoded.len() as u64));
    group.bench_function("apply_only/1000_events", |b| {
        b.iter(|| {
            let mut state = <Deposit as Command>::State::default();
            for event in &decoded {
                state.apply(event);
            }
            black_box(state)
        })
    });
    group.finish();
}

fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    let event = BankEvent::TransferCompleted { amount: 12_345 };
    let metadata = Arc::new(Metadata::now());
    let upcasters = Upcasters::new();
    fn bench_codec<C: Codec>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        codec: C,
        event: &BankEvent,
        metadata: &Arc<Metadata>,
        upcasters: &Upcasters,
    ) {
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                encode_event(
                    &codec,
                    black_box(event),
                    EventId::generate(),
                    metadata.clone(),
                )
                .unwrap()
            })
        });
        let raw = encode_event(&codec, event, EventId::generate(), metadata.clone())
            .unwrap()
            .record(
                StreamId::new("s").unwrap(),
                StreamVersion::new(1),
                Position::new(1, 0),
            );
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                let e: Recorded<BankEvent> = upcasters.decode(&codec, black_box(&raw)).unwrap();
                e
            })
        });
    }
    bench_codec(&mut group, "json", Json, &event, &metadata, &upcasters);
    bench_codec(
        &mut group,
        "msgpack",
        MessagePack,
        &event,
        &metadata,
        &upcasters,
    );
    group.bench_function("event_id/generate", |b| b.iter(EventId::generate));
    group.bench_function("event_data/new", |b| {
        b.iter_batched(
            || Json.encode(&event).unwrap(),
            |payload| EventData::new("TransferCompleted", payload),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, fold, codecs);
criterion_main!(benches);
