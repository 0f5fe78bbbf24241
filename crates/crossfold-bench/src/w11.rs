//! `crossfold-bench big-log`: W11, the big log, on PostgreSQL: the same measurements on a small log and on a log of
//! 10M+ events over 1M streams, each in a schema of its own, in one run, so that each big-log
//! figure is read as a ratio to the small log's.
//!
//! For each log: load it in bulk through the store's append path (with a progress bar),
//! `VACUUM (ANALYZE)` it (what autovacuum would have done to a log that grew over months),
//! time a subscription catching up from position zero, run W1, W6 and W6x3 (each verified
//! over the whole log), and measure the tables' and indexes' bytes. On the big log also: W1
//! spread over every account, a rebuild of W9's balance projection over all of it, and on
//! its long stream the read of its tail and the first command of a restarted process, with
//! and without a snapshot.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_bench::big_log::{self, Plan};
use crossfold_bench::{LoadOptions, LoadReport, SetUp, Workload, render_table};
use crossfold_core::{ErrorChain, EventStore, Position, StreamId, StreamRead, StreamVersion};
use crossfold_postgres::PgEventStore;
use serde_json::{Value, json};

use crate::args::BigLogArgs;
use crate::cold_start::{figures, first_commands, latency_histogram, micros};
use crate::projections::{BALANCES_PROJECTION, pg_store, psql, rebuild_balances};

/// Accounts W1 and W6 pick from on both logs (the harness's default), so that the two runs
/// differ only in what else the log holds.
const WORKING_SET: usize = 10_000;

pub(crate) async fn big_log(args: BigLogArgs) -> ExitCode {
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("big-log failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One log's figures.
#[derive(Default)]
struct Figures {
    events: u64,
    streams: u64,
    load_secs: f64,
    vacuum_secs: f64,
    catch_up: Option<(u64, f64)>,
    reports: Vec<LoadReport>,
    spread: Option<LoadReport>,
    bytes: Vec<(String, i64)>,
    rebuild: Option<(u64, f64)>,
    long: Option<Value>,
}

impl Figures {
    fn report(&self, workload: Workload) -> Option<&LoadReport> {
        self.reports.iter().find(|r| r.workload == workload.id())
    }

    fn to_json(&self) -> Value {
        json!({
            "events": self.events,
            "streams": self.streams,
            "load_secs": self.load_secs,
            "vacuum_secs": self.vacuum_secs,
            "catch_up_events_per_sec": self.catch_up.map(|(n, s)| n as f64 / s),
            "catch_up_secs": self.catch_up.map(|(_, s)| s),
            "reports": self.reports,
            "w1_every_account": self.spread,
            "bytes": self.bytes.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "w9_rebuild": self.rebuild.map(|(n, s)| json!({"events": n, "secs": s, "events_per_sec": n as f64 / s})),
            "long_stream": self.long,
        })
    }
}

async fn run(args: &BigLogArgs) -> Result<(), String> {
    let pid = std::process::id();
    let mut small_plan = args.plan();
    small_plan.streams = args.small_streams;
    small_plan.long_stream = 0;
    let small_schema = format!("crossfold_w11_small_{pid}");
    eprintln!(
        "w11: the small log, {} streams of {} events",
        small_plan.streams, small_plan.per_stream
    );
    let small = in_schema(args, &small_schema, true, |store| {
        measure_log(args, store, &small_schema, &small_plan, false)
    })
    .await?;

    let plan = args.plan();
    let (schema, keep) = match &args.schema {
        Some(schema) => (schema.clone(), true),
        None => (format!("crossfold_w11_big_{pid}"), args.keep),
    };
    eprintln!(
        "w11: the big log, {} streams of {} events and one of {} (schema {schema})",
        plan.streams, plan.per_stream, plan.long_stream
    );
    let big = in_schema(args, &schema, !keep, |store| {
        measure_log(args, store, &schema, &plan, true)
    })
    .await?;

    println!("\n{}", render_table(&small.reports));
    println!("{}", render_table(&big.reports));
    if let Some(spread) = &big.spread {
        println!("W1 spread over every account of the big log:");
        println!("{}", render_table(std::slice::from_ref(spread)));
    }
    print!("{}", summary(&small, &big, &plan));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json!({
            "workload": "w11",
            "small": small.to_json(),
            "big": big.to_json(),
        }))
        .unwrap_or_default();
        std::fs::write(path, text)
            .map_err(|e| format!("cannot write {}: {}", path.display(), ErrorChain(&e)))?;
    }
    // Every run verified: `next` stopped the run at the first that did not.
    Ok(())
}

/// Connects to `schema` (migrating it), runs `body`, and drops the schema afterwards when
/// `drop` says so and `body` succeeded (a failed run keeps it for inspection).
async fn in_schema<F, Fut>(
    args: &BigLogArgs,
    schema: &str,
    drop: bool,
    body: F,
) -> Result<Figures, String>
where
    F: FnOnce(PgEventStore) -> Fut,
    Fut: Future<Output = Result<Figures, String>>,
{
    let store = pg_store(&args.url, schema, args.pool).await?;
    let result = body(store).await;
    match (&result, drop) {
        (Ok(_), true) => {
            psql(
                &args.url,
                &format!(
                    "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE"
                ),
            )
            .await?;
        }
        (Ok(_), false) => eprintln!("  schema {schema} kept (--schema or --keep)"),
        (Err(_), _) => eprintln!("  schema {schema} kept for inspection"),
    }
    result
}

/// Loads `plan` into `store` (or counts what an earlier run loaded there) and measures it.
async fn measure_log(
    args: &BigLogArgs,
    store: PgEventStore,
    schema: &str,
    plan: &Plan,
    big: bool,
) -> Result<Figures, String> {
    let mut figures = Figures::default();
    let e = |e: crossfold_bench::LoadError| ErrorChain(&e).to_string();
    let mut state = if store
        .head_position()
        .await
        .map_err(|e| ErrorChain(&e).to_string())?
        == Position::START
    {
        let loaded = load_with_progress(&store, plan).await.map_err(e)?;
        figures.load_secs = loaded.secs;
        loaded
    } else {
        eprintln!("  the schema holds a log already: counting it");
        let found = big_log::census(&store).await.map_err(e)?;
        eprintln!("  {} events, read in {:.1} s", found.events, found.secs);
        let planned = plan.events().map_err(e)?;
        if found.events < planned {
            eprintln!(
                "  warning: the log holds fewer events than the plan writes ({planned}): an \
                 interrupted load? Its figures are those of the smaller log"
            );
        }
        found
    };
    let started = Instant::now();
    psql(
        &args.url,
        &format!("VACUUM (ANALYZE) {schema}.events, {schema}.streams"),
    )
    .await?;
    figures.vacuum_secs = started.elapsed().as_secs_f64();
    eprintln!("  VACUUM (ANALYZE) took {:.1} s", figures.vacuum_secs);

    // The catch-up first: the runs after it write to the log.
    let mut best: Option<(u64, Duration)> = None;
    for _ in 0..args.catch_up_rounds.max(1) {
        let (events, took) = big_log::catch_up(&store, args.catch_up_batch)
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        eprintln!(
            "  catch-up from zero: {events} events in {:.2} s, {:.0} events/s",
            took.as_secs_f64(),
            events as f64 / took.as_secs_f64()
        );
        if events != state.events {
            return Err(format!(
                "the catch-up read {events} events, the log holds {}",
                state.events
            ));
        }
        if best.is_none_or(|(_, t)| took < t) {
            best = Some((events, took));
        }
    }
    figures.catch_up = best.map(|(n, t)| (n, t.as_secs_f64()));

    // The reads first: W1 lengthens the streams they read, by an amount that depends on its
    // rate on each log.
    for workload in [Workload::ReadOne, Workload::ReadThree, Workload::Deposit] {
        let report = run_workload(
            args,
            &store,
            workload,
            WORKING_SET.min(plan.streams),
            &state,
        )
        .await?;
        state = next(&report, &state)?;
        figures.reports.push(report);
    }
    if big && args.spread {
        let report = run_workload(args, &store, Workload::Deposit, plan.streams, &state).await?;
        state = next(&report, &state)?;
        figures.spread = Some(report);
    }
    figures.events = state.events;
    figures.bytes = bytes(&args.url, schema).await?;
    figures.streams = psql(&args.url, &format!("SELECT count(*) FROM {schema}.streams"))
        .await?
        .parse()
        .map_err(|_| "no count of streams")?;

    if big && args.rebuild {
        let last = store
            .head_position()
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        eprintln!(
            "  W9: rebuilding the balance projection over {} events",
            state.events
        );
        // From position zero even on a log an earlier run measured: its checkpoint and table
        // go first.
        psql(
            &args.url,
            &format!(
                "SET client_min_messages = warning; DROP TABLE IF EXISTS {schema}.w9_balances; \
                 DELETE FROM {schema}.projection_dead_letters \
                 WHERE projection = '{BALANCES_PROJECTION}'; \
                 DELETE FROM {schema}.projections WHERE name = '{BALANCES_PROJECTION}'"
            ),
        )
        .await?;
        let (secs, total) =
            rebuild_balances(&args.url, &store, schema, last, args.rebuild_batch).await?;
        if total != state.money {
            return Err(format!(
                "the rebuilt balances sum to {total}, the log's accounts hold {}",
                state.money
            ));
        }
        eprintln!(
            "  W9: {} events in {secs:.1} s, {:.0} events/s",
            state.events,
            state.events as f64 / secs
        );
        figures.rebuild = Some((state.events, secs));
        psql(&args.url, &format!("DROP TABLE {schema}.w9_balances")).await?;
    }
    if big && let Some(account) = plan.long_account().map_err(e)? {
        // The first commands after restarts start without a snapshot, even on a log an
        // earlier run measured.
        psql(&args.url, &format!("DELETE FROM {schema}.snapshots")).await?;
        figures.long = Some(long_stream(args, &store, schema, &account).await?);
    }
    Ok(figures)
}

/// The next run's starting point, or why there is none.
fn next(report: &LoadReport, state: &SetUp) -> Result<SetUp, String> {
    eprint!("{}", render_table(std::slice::from_ref(report)));
    big_log::after(report).ok_or_else(|| {
        format!(
            "{} did not verify on a log of {} events: {}{}",
            report.workload,
            state.events,
            report.verification.problems.join("; "),
            report
                .first_error
                .as_deref()
                .map_or_else(String::new, |e| format!(
                    "{} errors, the first: {e}",
                    report.errors
                ))
        )
    })
}

async fn run_workload(
    args: &BigLogArgs,
    store: &PgEventStore,
    workload: Workload,
    accounts: usize,
    state: &SetUp,
) -> Result<LoadReport, String> {
    let mut options = LoadOptions::new(workload);
    options.duration = args.duration;
    options.warmup = args.warmup;
    options.concurrency = args.concurrency;
    options.accounts = accounts;
    options.store_name = "postgres".into();
    eprintln!(
        "  {} ({}) on {accounts} accounts, {} in flight",
        workload.id(),
        workload.name(),
        args.concurrency
    );
    big_log::measure(store, &options, state)
        .await
        .map_err(|e| ErrorChain(&e).to_string())
}

/// Loads `plan`, drawing a progress bar on standard error once a second.
async fn load_with_progress(
    store: &PgEventStore,
    plan: &Plan,
) -> Result<SetUp, crossfold_bench::LoadError> {
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let total = plan.events()?;
    let bar = tokio::spawn({
        let (progress, done) = (progress.clone(), done.clone());
        async move {
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                draw(progress.load(Ordering::Relaxed), total, started.elapsed());
            }
            eprintln!();
        }
    });
    let result = big_log::load(store, plan, &progress).await;
    done.store(true, Ordering::Relaxed);
    let _ = bar.await;
    if let Ok(loaded) = &result {
        eprintln!(
            "  loaded {} events in {:.1} s, {:.0} events/s",
            loaded.events,
            loaded.secs,
            loaded.events as f64 / loaded.secs
        );
    }
    result
}

/// `  [#########...........]  4,200,000 / 11,000,000 events  181,000/s  ETA 37 s`
fn draw(written: u64, total: u64, elapsed: Duration) {
    const WIDTH: u64 = 30;
    let filled = (written * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    let rate = written as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if rate > 0.0 {
        format!("{:.0} s", total.saturating_sub(written) as f64 / rate)
    } else {
        "?".into()
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r  [{}{}] {written:>11} / {total} events  {rate:>9.0}/s  ETA {eta:<8}",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
    );
    let _ = err.flush();
}

/// Bytes of the log's tables and their indexes, per event and per stream.
async fn bytes(url: &str, schema: &str) -> Result<Vec<(String, i64)>, String> {
    let sql = format!(
        "SELECT pg_relation_size('{s}.events'), pg_indexes_size('{s}.events'), \
         pg_total_relation_size('{s}.events'), pg_relation_size('{s}.streams'), \
         pg_indexes_size('{s}.streams'), pg_total_relation_size('{s}.streams')",
        s = schema
    );
    let row = psql(url, &sql).await?;
    let values: Vec<i64> = row
        .split('|')
        .map(|v| v.trim().parse().map_err(|_| format!("not a size: {v:?}")))
        .collect::<Result<_, _>>()?;
    let names = [
        "events_table",
        "events_indexes",
        "events_total",
        "streams_table",
        "streams_indexes",
        "streams_total",
    ];
    let mut sizes: Vec<(String, i64)> = names.iter().map(|n| (*n).to_owned()).zip(values).collect();
    let indexes = psql(
        url,
        &format!(
            "SELECT c.relname || '=' || pg_relation_size(c.oid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = '{schema}.events'::regclass ORDER BY c.relname"
        ),
    )
    .await?;
    for line in indexes.lines() {
        if let Some((name, size)) = line.split_once('=') {
            sizes.push((
                format!("index_{name}"),
                size.parse().map_err(|_| format!("not a size: {size:?}"))?,
            ));
        }
    }
    Ok(sizes)
}

/// The long stream: reading its last 100 events (its version, then the events after
/// version - 100), and the first command of a restarted process, without and with snapshots.
async fn long_stream(
    args: &BigLogArgs,
    store: &PgEventStore,
    schema: &str,
    account: &StreamId,
) -> Result<Value, String> {
    let mut tail = latency_histogram()?;
    let mut version = StreamVersion::EMPTY;
    for _ in 0..args.tail_samples.max(1) {
        let started = Instant::now();
        let read = store
            .read_streams(&[StreamRead::version_only(account.clone())])
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        version = read.first().map_or(StreamVersion::EMPTY, |s| s.version);
        let from = StreamVersion::EMPTY.advance(version.get().saturating_sub(100));
        let events = store
            .read_streams(&[StreamRead::after(account.clone(), from)])
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        let took = started.elapsed();
        let n = events.first().map_or(0, |s| s.events.len());
        if n != 100.min(version.get() as usize) {
            return Err(format!("the tail of {account} held {n} events, not 100"));
        }
        tail.record(micros(took)).map_err(|e| e.to_string())?;
    }
    let (url, schema) = (args.url.clone(), schema.to_owned());
    let start = move || {
        let (url, schema) = (url.clone(), schema.clone());
        async move { pg_store(&url, &schema, 4).await }
    };
    eprintln!("  the long stream ({version} events): first commands after restarts");
    let first = first_commands(&args.restarts, &start, account).await?;
    Ok(json!({
        "events": version.get(),
        "tail_100": figures(&tail),
        "first_command_without_snapshots": figures(&first.plain),
        "first_command_taking_the_first_snapshot": figures(&first.first_snapshot),
        "first_command_with_snapshots": figures(&first.snapshotted),
        "snapshot_every": args.restarts.every,
    }))
}

/// The big log's figures against the small log's and against the goals.
fn summary(small: &Figures, big: &Figures, plan: &Plan) -> String {
    let mut out = String::from("W11, the big log against the small one (same run):\n");
    let rate = |f: &Figures, w: Workload| {
        f.report(w).map(|r| {
            if w == Workload::Deposit {
                r.ops_per_sec
            } else {
                r.events_per_sec
            }
        })
    };
    for (w, unit) in [
        (Workload::Deposit, "ops/s"),
        (Workload::ReadOne, "events/s"),
        (Workload::ReadThree, "events/s"),
    ] {
        if let (Some(s), Some(b)) = (rate(small, w), rate(big, w)) {
            out += &format!(
                "  {:<10} small {s:>10.0} {unit:<8}  big {b:>10.0}  ratio {:.2}{}\n",
                w.id(),
                b / s,
                if w == Workload::Deposit {
                    "  (goal >= 0.80)"
                } else {
                    ""
                }
            );
        }
    }
    if let (Some((sn, ss)), Some((bn, bs))) = (small.catch_up, big.catch_up) {
        out += &format!(
            "  catch-up   small {:>10.0} events/s  big {:>10.0}  ratio {:.2}  (goal >= 500,000 events/s on the big log)\n",
            sn as f64 / ss,
            bn as f64 / bs,
            (bn as f64 / bs) / (sn as f64 / ss)
        );
    }
    if let Some(spread) = &big.spread {
        out += &format!(
            "  W1 over all {} accounts of the big log: {:.0} ops/s\n",
            plan.streams, spread.ops_per_sec
        );
    }
    if let Some((n, secs)) = big.rebuild {
        out += &format!(
            "  W9 rebuild of {n} events: {secs:.1} s, {:.0} events/s  (goal < 120 s for 10M)\n",
            n as f64 / secs
        );
    }
    for f in [small, big] {
        let size = |k: &str| f.bytes.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        out += &format!(
            "  {} events, {} streams: events {:.0} bytes/event (table {:.0}, indexes {:.0}); streams {:.0} bytes/stream (table {:.0}, indexes {:.0})\n",
            f.events,
            f.streams,
            size("events_total") as f64 / f.events.max(1) as f64,
            size("events_table") as f64 / f.events.max(1) as f64,
            size("events_indexes") as f64 / f.events.max(1) as f64,
            size("streams_total") as f64 / f.streams.max(1) as f64,
            size("streams_table") as f64 / f.streams.max(1) as f64,
            size("streams_indexes") as f64 / f.streams.max(1) as f64,
        );
    }
    if let Some(long) = &big.long {
        out += &format!("  long stream: {long}\n");
    }
    out
}
