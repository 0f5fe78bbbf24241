//! Run with: `cargo run --release -p crossfold-postgres --example quick_bench [SECONDS]`
//!
//! A quick throughput check of the PostgreSQL store's hot paths, 16 operations in flight, to
//! compare with the hand-written SQL of the project's `pg-floor` scripts on the same server:
//! single-stream append, 3-stream append (two accounts and a new transfer stream), a 100-event
//! batch into a fresh stream, a one-stream read of about ten events, and live delivery latency
//! to a subscriber in another store (pass a second argument to run only the workloads whose
//! names contain it). The project's load harness is the real benchmark; this is for checking a
//! change quickly. It works in its own schema of `DATABASE_URL` (default: the local server)
//! and drops it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{
    AppendRequest, EventData, EventStore, ExpectedVersion, Metadata, Payload, StreamId,
    StreamVersion,
};
use crossfold_postgres::{PgConfig, PgEventStore};

const ACCOUNTS: u64 = 10_000;
const IN_FLIGHT: usize = 16;

fn event(event_type: &'static str, meta: &Arc<Metadata>) -> EventData {
    let mut e = EventData::new(event_type, Payload::json(&br#"{"amount": 100}"#[..]));
    e.metadata = meta.clone();
    e
}

fn account(n: u64) -> StreamId {
    StreamId::new(format!("account-{n}")).unwrap()
}

async fn run<F, Fut>(name: &str, seconds: u64, op: F)
where
    F: Fn(fastrand::Rng) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = u64> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..IN_FLIGHT {
        let (stop, count, op) = (stop.clone(), count.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t as u64 * 7919 + 1);
            while !stop.load(Ordering::Relaxed) {
                let n = op(rng.fork()).await;
                count.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("{name:<10} {rate:>10.0}/s");
}

/// Commit-to-delivery latency: a subscriber on a second store (standing for another process,
/// so wake-ups travel through NOTIFY/LISTEN) follows appends made at a moderate rate by
/// several tasks; latency is measured from just before each append to delivery.
async fn live(store: &Arc<PgEventStore>, url: &str, schema: &str, seconds: u64) {
    use crossfold_core::{SubscriptionOptions, Timestamp};
    let reader =
        PgEventStore::connect(PgConfig::from_url(url).unwrap().schema(schema).pool_size(2))
            .await
            .unwrap();
    let head = reader.head_position().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..4u64 {
        let (store, stop) = (store.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("live-{t}")).unwrap();
            let mut append_micros = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let e = EventData::new("Live", Payload::json(&b"{}"[..]));
                let start = Instant::now();
                store
                    .append(AppendRequest::new().stream(
                        stream.clone(),
                        ExpectedVersion::Any,
                        vec![e],
                    ))
                    .await
                    .unwrap();
                append_micros.push(start.elapsed().as_micros() as u64);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            append_micros
        }));
    }
    let mut subscription = reader.subscribe(SubscriptionOptions::all().from(head));
    let mut latencies = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let Ok(event) = tokio::time::timeout(Duration::from_secs(1), subscription.next()).await
        else {
            continue;
        };
        let event = event.unwrap();
        let micros = Timestamp::now().unix_micros() - event.metadata.recorded_at.unix_micros();
        latencies.push(micros.max(0) as u64);
    }
    stop.store(true, Ordering::Relaxed);
    let mut appends = Vec::new();
    for w in writers {
        appends.extend(w.await.unwrap());
    }
    appends.sort_unstable();
    println!(
        "live       the appends themselves: p50 {:.1} ms, p99 {:.1} ms",
        appends[appends.len() / 2] as f64 / 1000.0,
        appends[appends.len() * 99 / 100] as f64 / 1000.0
    );
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "live       {} events, append-to-delivery p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        at(0.5) as f64 / 1000.0,
        at(0.99) as f64 / 1000.0
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // Optional second argument: run only the workloads whose names contain it.
    let only = std::env::args().nth(2).unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = format!("cf_quick_bench_{:08x}", fastrand::u32(..));
    let config = PgConfig::from_url(&url)
        .unwrap()
        .schema(&schema)
        .pool_size(IN_FLIGHT);
    let store = Arc::new(PgEventStore::connect(config).await.unwrap());
    store.migrate().await.unwrap();
    let meta = Arc::new(Metadata::now());

    // Open the accounts, ten events each, in batches.
    let mut request = AppendRequest::new();
    for n in 1..=ACCOUNTS {
        request = request.stream(
            account(n),
            ExpectedVersion::NoStream,
            (0..10).map(|_| event("MoneyDeposited", &meta)).collect(),
        );
        if n % 500 == 0 {
            store.append(std::mem::take(&mut request)).await.unwrap();
        }
    }

    let (s, m) = (store.clone(), meta.clone());
    if wanted("single") {
        run("single", seconds, move |mut rng| {
            let (s, m) = (s.clone(), m.clone());
            async move {
                let a = account(rng.u64(1..=ACCOUNTS));
                s.append(AppendRequest::new().stream(
                    a,
                    ExpectedVersion::Any,
                    vec![event("MoneyDeposited", &m)],
                ))
                .await
                .unwrap();
                1
            }
        })
        .await;
    }

    let (s, m) = (store.clone(), meta.clone());
    if wanted("transfer") {
        run("transfer", seconds, move |mut rng| {
            let (s, m) = (s.clone(), m.clone());
            async move {
                let a = rng.u64(1..=ACCOUNTS);
                let b = (a % ACCOUNTS) + 1;
                let transfer = StreamId::new(format!("transfer-{}", uuid::Uuid::now_v7())).unwrap();
                s.append(
                    AppendRequest::new()
                        .stream(
                            account(a),
                            ExpectedVersion::Any,
                            vec![event("MoneyWithdrawn", &m)],
                        )
                        .stream(
                            account(b),
                            ExpectedVersion::Any,
                            vec![event("MoneyDeposited", &m)],
                        )
                        .stream(
                            transfer,
                            ExpectedVersion::NoStream,
                            vec![event("TransferCompleted", &m)],
                        ),
                )
                .await
                .unwrap();
                1
            }
        })
        .await;
    }

    let (s, m) = (store.clone(), meta.clone());
    if wanted("batch") {
        run("batch", seconds, move |_| {
            let (s, m) = (s.clone(), m.clone());
            async move {
                let stream = StreamId::new(format!("batch-{}", uuid::Uuid::now_v7())).unwrap();
                s.append(AppendRequest::new().stream(
                    stream,
                    ExpectedVersion::NoStream,
                    (0..100).map(|_| event("ItemAdded", &m)).collect(),
                ))
                .await
                .unwrap();
                1
            }
        })
        .await;
    }

    let s = store.clone();
    if wanted("read") {
        run("read", seconds, move |mut rng| {
            let s = s.clone();
            async move {
                let a = account(rng.u64(1..=ACCOUNTS));
                let read = s
                    .read_stream(&a, StreamVersion::EMPTY, usize::MAX)
                    .await
                    .unwrap();
                assert!(read.events.len() >= 10);
                1
            }
        })
        .await;
    }

    if wanted("live") {
        live(&store, &url, &schema, seconds).await;
    }

    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
