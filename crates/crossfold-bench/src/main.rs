//! `crossfold-bench`: runs Crossfold's standard workloads (W1–W8 and W12, see
//! `docs/benchmarks.md`) on the in-memory store or on PostgreSQL, verifies the data after each
//! run, and prints a table (and JSON on request). With `--compare-floor` it also runs
//! hand-written SQL for the same work through `pgbench` on the same server and prints each
//! PostgreSQL figure as a ratio to it.
//!
//! Two checks of the executor's correctness run as subcommands, for runs longer than the tests
//! make: `crossfold-bench pairs` (no decision on a state that never existed) and
//! `crossfold-bench campaign` (the seeded fault campaign).

mod checks;
mod floor;
mod projections;

use std::process::ExitCode;
use std::time::Duration;

use crossfold_bench::{LoadOptions, LoadReport, Workload, render_table};
use crossfold_memory::MemoryStore;
use crossfold_postgres::{PgConfig, PgEventStore};

pub(crate) const USAGE: &str = "\
crossfold-bench: Crossfold's load harness

USAGE:
    crossfold-bench [OPTIONS]

OPTIONS:
    --store memory|postgres   store to load (default: memory)
    --url URL                 PostgreSQL URL (default: $DATABASE_URL, else
                              postgres://postgres@127.0.0.1:5432/postgres)
    --workloads LIST          comma-separated: w1,w2,w3,w4,w5,w6,w6x3,w7-catchup,w7-live,w8,
                              w12 or 'all' (default: all)
    --duration SECS           measured seconds per run (default: 30)
    --warmup SECS             warm-up seconds per run (default: 5)
    --concurrency LIST        operations in flight, comma-separated (default: 16)
    --accounts N              accounts opened before a run (default: 10000)
    --pool N                  PostgreSQL connections (default: 32)
    --json FILE               also write every report (and the floor) as JSON
    --compare-floor           also run hand-written SQL with pgbench on the same server
    --floor-seconds SECS      seconds per floor script (default: 15)
    --prometheus              install a Prometheus recorder (measures the metrics overhead)
    --no-serialize            let commands on the same streams race to the store instead of
                              queuing in-process
    --quiet                   no progress line
    -h, --help                this text

A run whose data does not verify (money conserved, versions gap-free, each event once in the
log and as many as the store reported writing, invoice numbers gapless) is reported as FAILED
and makes the exit status non-zero.

SUBCOMMANDS (checks of the executor's correctness; exit status non-zero when one fails):
    crossfold-bench pairs [--store memory|postgres] [--url URL] [--executions N]
                          [--per-stream] [--tasks N] [--executors N] [--pairs N]
        Pairs of streams written together, commands that refuse when a pair disagrees:
        counts refusals decided on a state that never existed (must be 0).
        Defaults: memory, 100000 executions, 16 tasks, 4 executors, 8 pairs.
    crossfold-bench campaign [--operations N] [--seed N] [--tasks N] [--accounts N]
                             [--attempts N]
        Banking commands over the in-memory store with conflicts, transient failures,
        timeouts and ambiguous commits injected; checks every outcome against the log.
        Defaults: 1000000 operations, seed 1, 16 tasks, 200 accounts, 3 attempts.

    crossfold-bench projections [--url URL] [--events N] [--accounts N] [--batch N]
                                [--duration SECS] [--concurrency N] [--floor-seconds SECS]
                                [--only w9-memory,w9-postgres,w10]
        W9: a balance projection rebuilt from position zero over N deposit events, on memory
        and on PostgreSQL (compared with a hand-written rebuild through pgbench, one client);
        W10: event created -> read model committed latency of a live projection while W1
        runs. Defaults: 1000000 events, 10000 accounts, batches of 1000, 20 s, 16 in flight.
";

struct Args {
    store: String,
    url: String,
    workloads: Vec<Workload>,
    duration: u64,
    warmup: u64,
    concurrency: Vec<usize>,
    accounts: usize,
    pool: usize,
    json: Option<String>,
    compare_floor: bool,
    floor_seconds: u64,
    prometheus: bool,
    serialize: bool,
    quiet: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut args = Args {
        store: "memory".into(),
        url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        workloads: Workload::ALL.to_vec(),
        duration: 30,
        warmup: 5,
        concurrency: vec![16],
        accounts: 10_000,
        pool: 32,
        json: None,
        compare_floor: false,
        floor_seconds: 15,
        prometheus: false,
        serialize: true,
        quiet: false,
    };
    let mut parser = lexopt::Parser::from_env();
    let text = |v: Result<std::ffi::OsString, lexopt::Error>| -> Result<String, String> {
        v.map_err(|e| e.to_string())?
            .into_string()
            .map_err(|_| "argument is not UTF-8".to_string())
    };
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("store") => args.store = text(parser.value())?,
            Long("url") => args.url = text(parser.value())?,
            Long("workloads") => {
                let v = text(parser.value())?;
                if v != "all" {
                    args.workloads = v.split(',').map(str::parse).collect::<Result<_, _>>()?;
                }
            }
            Long("duration") => args.duration = number(&text(parser.value())?)?,
            Long("warmup") => args.warmup = number(&text(parser.value())?)?,
            Long("concurrency") => {
                args.concurrency = text(parser.value())?
                    .split(',')
                    .map(number)
                    .collect::<Result<_, _>>()?;
            }
            Long("accounts") => args.accounts = number(&text(parser.value())?)?,
            Long("pool") => args.pool = number(&text(parser.value())?)?,
            Long("json") => args.json = Some(text(parser.value())?),
            Long("compare-floor") => args.compare_floor = true,
            Long("floor-seconds") => args.floor_seconds = number(&text(parser.value())?)?,
            Long("prometheus") => args.prometheus = true,
            Long("no-serialize") => args.serialize = false,
            Long("quiet") => args.quiet = true,
            Short('h') | Long("help") => return Ok(None),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if args.store != "memory" && args.store != "postgres" {
        return Err(format!(
            "--store must be memory or postgres, not {:?}",
            args.store
        ));
    }
    Ok(Some(args))
}

pub(crate) fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("pairs") => return checks::pairs().await,
        Some("campaign") => return checks::campaign().await,
        Some("projections") => return projections::projections().await,
        _ => {}
    }
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("crossfold-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let prometheus = if args.prometheus {
        match crossfold_monitoring::install_prometheus() {
            Ok(handle) => {
                // The monitoring crate describes only the metrics common to the stores.
                crossfold_postgres::describe_metrics();
                Some(handle)
            }
            Err(e) => {
                eprintln!("crossfold-bench: cannot install the Prometheus recorder: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };

    let mut reports: Vec<LoadReport> = Vec::new();
    let mut failed = false;
    for &concurrency in &args.concurrency {
        for &workload in &args.workloads {
            let mut options = LoadOptions::new(workload);
            options.duration = Duration::from_secs(args.duration);
            options.warmup = Duration::from_secs(args.warmup);
            options.concurrency = concurrency;
            options.accounts = args.accounts;
            options.progress = !args.quiet;
            options.store_name = args.store.clone();
            options.serialize_in_process = args.serialize;
            eprintln!(
                "{} ({}), {} in flight",
                workload.id(),
                workload.name(),
                concurrency
            );
            let result = match args.store.as_str() {
                "memory" => crossfold_bench::run(MemoryStore::new(), &options)
                    .await
                    .map_err(|e| error_chain(&e)),
                _ => run_postgres(&args, &options).await,
            };
            match result {
                Ok(report) => {
                    failed |= !report.is_valid();
                    eprint!("{}", render_table(std::slice::from_ref(&report)));
                    reports.push(report);
                }
                Err(e) => {
                    eprintln!("  {workload}: {e}");
                    failed = true;
                }
            }
        }
    }

    let floor = if args.compare_floor && args.store == "postgres" {
        eprintln!(
            "floor: hand-written SQL with pgbench, {} s per script",
            args.floor_seconds
        );
        match floor::measure(&args.url, args.floor_seconds, 16).await {
            Ok(floor) => Some(floor),
            Err(e) => {
                eprintln!("  floor not measured: {e}");
                None
            }
        }
    } else {
        None
    };

    println!("\n{}", render_table(&reports));
    if let Some(floor) = &floor {
        print!("{}", ratios(&reports, floor));
    }
    if let Some(handle) = &prometheus {
        let text = handle.render();
        let lines = text.lines().filter(|l| !l.starts_with('#')).count();
        println!("Prometheus recorder installed: {lines} samples exported");
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "reports": reports,
            "floor": floor.as_ref().map(floor::Floor::to_json),
        });
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("crossfold-bench: cannot write {path}: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A fresh schema per run, dropped afterwards.
async fn run_postgres(args: &Args, options: &LoadOptions) -> Result<LoadReport, String> {
    let schema = format!(
        "crossfold_bench_{}_{}",
        options.workload.id().replace('-', "_"),
        std::process::id()
    );
    let config = PgConfig::from_url(&args.url)
        .map_err(|e| e.to_string())?
        .schema(schema.clone())
        .pool_size(args.pool.max(options.concurrency + 2));
    let store = PgEventStore::connect(config)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    let result = crossfold_bench::run(store.clone(), options)
        .await
        .map_err(|e| error_chain(&e));
    drop(store);
    if let Ok((client, connection)) =
        tokio_postgres::connect(&args.url, tokio_postgres::NoTls).await
    {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
    result
}

/// An error and its causes, for one line of output.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Each PostgreSQL figure as a ratio to the hand-written SQL for the same work and to the floor.
fn ratios(reports: &[LoadReport], floor: &floor::Floor) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "Ratios to hand-written SQL measured in the same run (pgbench, 16 clients):\n",
    );
    for (name, tps, latency) in &floor.results {
        let _ = writeln!(out, "  {name:<9} {tps:>9.0} tx/s  {latency:.2} ms");
    }
    let base = floor.tps("floor").unwrap_or(f64::NAN);
    for r in reports.iter().filter(|r| r.concurrency == 16) {
        let (figure, same_work, unit): (f64, Option<(&str, f64)>, &str) = match r.workload.as_str()
        {
            "w1" | "w8" => (
                r.ops_per_sec,
                floor.tps("command").map(|t| ("command", t)),
                "ops/s",
            ),
            "w2" => (
                r.ops_per_sec,
                floor.tps("transfer").map(|t| ("transfer", t)),
                "ops/s",
            ),
            "w3" => (r.ops_per_sec, None, "ops/s"),
            "w4" => (
                r.successes_per_sec,
                floor.tps("transfer").map(|t| ("transfer", t)),
                "successes/s",
            ),
            "w5" => (
                r.events_per_sec,
                floor.tps("batch").map(|t| ("batch", t * 100.0)),
                "events/s",
            ),
            "w6" => (
                r.ops_per_sec,
                floor.tps("read").map(|t| ("read", t)),
                "reads/s",
            ),
            _ => continue,
        };
        let _ = write!(out, "  {:<4} {figure:>10.0} {unit:<11}", r.workload);
        if let Some((script, value)) = same_work {
            let _ = write!(out, "  {:.2} x {script}", figure / value);
        }
        if r.workload != "w5" {
            let _ = write!(out, "  {:.2} x floor", figure / base);
        }
        out.push('\n');
    }
    out
}
