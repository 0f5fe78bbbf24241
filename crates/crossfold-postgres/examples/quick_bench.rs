//! Run with: `cargo run --release -p crossfold-postgres --example quick_bench [SECONDS]`
//!
//! A quick throughput check of the PostgreSQL store's hot paths, 16 operations in flight, to
//! compare with the hand-written SQL of the project's `pg-floor` scripts on the same server:
//! single-stream append, 3-stream append (two accounts and a new transfer stream), a 100-event
//! batch into a fresh stream, and a one-stream read of about ten events. The project's load
//! harness is the real benchmark; this is for checking a change quickly. It works in its own
//! schema of `DATABASE_URL` (default: the local server) and drops it afterwards.
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

    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
