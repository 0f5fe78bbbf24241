//! W8's cold start: the first command on an account whose stream holds many events, in a
//! process that just started, with and without snapshots of the command's state.
//!
//! "Just started" is a new executor (empty caches) and, on PostgreSQL, a new store with a new
//! pool: what a restarted process has. Connecting is not timed; the first command is, from
//! the call to its result — reading (the snapshot and the events after it, or the whole
//! stream), folding, deciding and appending.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossfold_bench::bank::{Balances, Deposit, Open, account_stream};
use crossfold_core::{
    AppendRequest, ErrorChain, EventData, EventStore, ExpectedVersion, Payload, SnapshotPolicy,
    SnapshotStore, StreamId,
};
use crossfold_executor::{Executor, Snapshots};
use crossfold_memory::MemoryStore;
use hdrhistogram::Histogram;

use crate::args::{ColdStartArgs, RestartArgs, Store};
use crate::projections::{pg_store, psql};

/// Events per append while the stream is filled.
const LOAD_BATCH: u64 = 10_000;

pub(crate) async fn cold_start(args: ColdStartArgs) -> ExitCode {
    let result = match args.store {
        Store::Memory => {
            let store = MemoryStore::new();
            measure(&args, &|| {
                let store = store.clone();
                async move { Ok(store) }
            })
            .await
        }
        Store::Postgres => {
            let schema = format!("crossfold_cold_{}", std::process::id());
            let result = match pg_store(&args.url, &schema, 4).await {
                Ok(_) => {
                    let (url, schema) = (args.url.clone(), schema.clone());
                    measure(&args, &move || {
                        let (url, schema) = (url.clone(), schema.clone());
                        async move { pg_store(&url, &schema, 4).await }
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            let _ = psql(
                &args.url,
                &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            )
            .await;
            result
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cold-start failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Fills one account's stream, then times the first command of new processes, without and
/// with snapshots. `start` gives the store a new process would have.
async fn measure<S, F, Fut>(args: &ColdStartArgs, start: &F) -> Result<(), String>
where
    S: EventStore + SnapshotStore + Clone + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S, String>>,
{
    let account = account_stream(0).map_err(|e| e.to_string())?;
    let store = start().await?;
    fill(&store, &account, args.events).await?;
    drop(store);

    let first = first_commands(&args.restarts, start, &account).await?;

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    eprintln!(
        "cold start, first command on a stream of {} events ({}):",
        args.events,
        args.store.name()
    );
    eprintln!(
        "  {:<34} {:>7} {:>10} {:>10} {:>10}",
        "", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for (name, h) in [
        ("without snapshots", &first.plain),
        ("taking the first snapshot", &first.first_snapshot),
        ("with snapshots", &first.snapshotted),
    ] {
        eprintln!(
            "  {:<34} {:>7} {:>10.2} {:>10.2} {:>10.2}",
            name,
            h.len(),
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1_000.0
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "w8-cold-start",
                "store": args.store.name(),
                "events": args.events,
                "snapshot_every": args.restarts.every,
                "without_snapshots": figures(&first.plain),
                "first_snapshot": figures(&first.first_snapshot),
                "with_snapshots": figures(&first.snapshotted),
            })
        );
    }
    Ok(())
}

/// The latencies of the first command after restarts on one stream.
pub(crate) struct FirstCommands {
    /// Without snapshots: each folds the whole stream.
    pub(crate) plain: Histogram<u64>,
    /// The one that takes the first snapshot.
    pub(crate) first_snapshot: Histogram<u64>,
    /// With snapshots.
    pub(crate) snapshotted: Histogram<u64>,
}

/// Times the first command on `account` of new processes (`start` gives the store a new
/// process would have): without snapshots, then taking the first snapshot, then with them.
pub(crate) async fn first_commands<S, F, Fut>(
    args: &RestartArgs,
    start: &F,
    account: &StreamId,
) -> Result<FirstCommands, String>
where
    S: EventStore + SnapshotStore + Clone + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S, String>>,
{
    let plain = restarts(args.plain_samples, start, account, None).await?;
    let policy = SnapshotPolicy::every(args.every);
    // The process before the restarts takes the first snapshot (its load is the slow one).
    let first_snapshot = restarts(1, start, account, Some(policy)).await?;
    let snapshotted = restarts(args.samples, start, account, Some(policy)).await?;
    Ok(FirstCommands {
        plain,
        first_snapshot,
        snapshotted,
    })
}

/// An empty histogram of latencies in microseconds, up to an hour.
pub(crate) fn latency_histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())
}

/// A histogram of latencies in microseconds as JSON: samples, p50, p99 and max in ms.
pub(crate) fn figures(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    serde_json::json!({
        "samples": h.len(),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": h.max() as f64 / 1_000.0,
    })
}

/// Opens the account and appends deposits until its stream holds `events` events.
async fn fill<S: EventStore + Clone>(
    store: &S,
    account: &StreamId,
    events: u64,
) -> Result<(), String> {
    let started = Instant::now();
    Executor::new(store.clone())
        .execute(Open {
            account: account.clone(),
            initial: 0,
        })
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    let mut written = 1;
    while written < events {
        let n = LOAD_BATCH.min(events - written);
        let deposits: Vec<EventData> = (0..n)
            .map(|_| {
                EventData::new(
                    "Deposited",
                    Payload::json(r#"{"type":"Deposited","amount":1}"#),
                )
            })
            .collect();
        store
            .append(AppendRequest::new().stream(account.clone(), ExpectedVersion::Any, deposits))
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        written += n;
    }
    eprintln!(
        "  filled {account} with {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `samples` new processes, each timing its first command (a deposit) on the account.
async fn restarts<S, F, Fut>(
    samples: usize,
    start: &F,
    account: &StreamId,
    snapshots: Option<SnapshotPolicy>,
) -> Result<Histogram<u64>, String>
where
    S: EventStore + SnapshotStore + Clone + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S, String>>,
{
    let mut latency = latency_histogram()?;
    for _ in 0..samples {
        let store = start().await?;
        let mut builder = Executor::builder(store.clone());
        if let Some(policy) = snapshots {
            builder = builder.snapshots(Snapshots::new(store).keep::<Balances>(policy));
        }
        let executor = builder.build();
        let started = Instant::now();
        executor
            .execute(Deposit {
                account: account.clone(),
                amount: 1,
            })
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        let took = started.elapsed();
        // The snapshot a command leaves is written after it, and is not part of its time.
        executor.snapshots_written().await;
        latency.record(micros(took)).map_err(|e| e.to_string())?;
    }
    Ok(latency)
}

pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}
