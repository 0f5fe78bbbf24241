//! `crossfold-bench`: runs Crossfold's standard workloads (W1–W8 and W12, see
//! `docs/benchmarks.md`) on the in-memory store or on PostgreSQL, verifies the data after each
//! run, and prints a table (and JSON on request). With `--compare-floor` it also runs
//! hand-written SQL for the same work through `pgbench` on the same server and prints each
//! PostgreSQL figure as a ratio to it.
//!
//! Two checks of the executor's correctness run as subcommands, for runs longer than the tests
//! make: `crossfold-bench pairs` (no decision on a state that never existed) and
//! `crossfold-bench campaign` (the seeded fault campaign). `crossfold-bench --help` lists
//! every option.

mod args;
mod checks;
mod cold_start;
mod floor;
mod processes;
mod projections;
mod soak;
mod tenants;
mod w11;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use comfy_table::{CellAlignment, Table, presets};
use crossfold_bench::{LoadOptions, LoadReport, render_table};
use crossfold_core::ErrorChain;
use crossfold_memory::MemoryStore;
use crossfold_postgres::{PgConfig, PgEventStore};

use crate::args::{Cli, Command, LoadArgs, Store};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.load.processes.is_some() && cli.load.store != Store::Postgres {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--processes needs --store postgres: the memory store lives inside one process, \
                 so other processes cannot share it",
            )
            .exit();
    }
    match cli.command {
        Some(Command::Pairs(args)) => checks::pairs(args).await,
        Some(Command::Campaign(args)) => checks::campaign(args).await,
        Some(Command::Projections(args)) => projections::projections(args).await,
        Some(Command::Share(args)) => processes::share(args).await,
        Some(Command::ColdStart(args)) => cold_start::cold_start(args).await,
        Some(Command::BigLog(args)) => w11::big_log(args).await,
        Some(Command::Soak(args)) => soak::soak(args).await,
        Some(Command::Tenants(args)) => tenants::tenants(args).await,
        None => load(cli.load).await,
    }
}

/// Runs each workload at each concurrency, then prints every report (and the floor).
async fn load(args: LoadArgs) -> ExitCode {
    let prometheus = if args.prometheus {
        match crossfold_monitoring::install_prometheus() {
            Ok(handle) => {
                // The monitoring crate describes only the metrics common to the stores.
                crossfold_postgres::describe_metrics();
                Some(handle)
            }
            Err(e) => {
                eprintln!(
                    "crossfold-bench: cannot install the Prometheus recorder: {}",
                    ErrorChain(&e)
                );
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };

    let mut reports: Vec<LoadReport> = Vec::new();
    let mut failed = false;
    // `None`: in this process; `Some(n)`: in n processes of their own.
    let process_counts: Vec<Option<usize>> = match &args.processes {
        Some(counts) => counts.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    for &concurrency in &args.concurrency {
        for &workload in &args.workloads.0 {
            for &processes in &process_counts {
                let mut options = LoadOptions::new(workload);
                options.duration = args.duration;
                options.warmup = args.warmup;
                options.concurrency = concurrency;
                options.accounts = args.accounts;
                options.progress = !args.quiet && processes.is_none();
                options.store_name = args.store.name().to_owned();
                options.serialize_in_process = !args.no_serialize;
                options.take_turns = !args.no_turns;
                options.processes = processes.unwrap_or(1);
                options.concurrency_limit = args.concurrency_limit;
                match processes {
                    None => eprintln!(
                        "{} ({}), {} in flight",
                        workload.id(),
                        workload.name(),
                        concurrency
                    ),
                    Some(n) => eprintln!(
                        "{} ({}), {n} process{} with {} in flight each",
                        workload.id(),
                        workload.name(),
                        if n == 1 { "" } else { "es" },
                        concurrency
                    ),
                }
                let result = match (args.store, processes) {
                    (Store::Memory, _) => crossfold_bench::run(MemoryStore::new(), &options)
                        .await
                        .map_err(|e| ErrorChain(&e).to_string()),
                    (Store::Postgres, None) => run_postgres(&args, &options).await,
                    (Store::Postgres, Some(_)) => processes::run(&args, &options).await,
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
    }

    let floor = if args.compare_floor && args.store == Store::Postgres {
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
            eprintln!(
                "crossfold-bench: cannot write {}: {}",
                path.display(),
                ErrorChain(&e)
            );
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
async fn run_postgres(args: &LoadArgs, options: &LoadOptions) -> Result<LoadReport, String> {
    let schema = format!(
        "crossfold_bench_{}_{}",
        options.workload.id().replace('-', "_"),
        std::process::id()
    );
    let config = PgConfig::from_url(&args.url)
        .map_err(|e| ErrorChain(&e).to_string())?
        .schema(schema.clone())
        .pool_size(args.pool)
        .group_commit(args.group_commit);
    let config = match args.group_commit_calls {
        Some(calls) => config.group_commit_calls(calls),
        None => config,
    };
    let store = PgEventStore::connect(config)
        .await
        .map_err(|e| format!("cannot connect: {}", ErrorChain(&e)))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {}", ErrorChain(&e)))?;
    if let Some(size) = args.partition_size {
        store
            .partition_log(crossfold_postgres::PgLogPartitioning::new(size).margin(1_000))
            .await
            .map_err(|e| format!("cannot partition the log: {}", ErrorChain(&e)))?;
    }
    let result = crossfold_bench::run(store.clone(), options)
        .await
        .map_err(|e| ErrorChain(&e).to_string());
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

/// A table without borders, its columns a space apart, numbers (columns `numbers`) aligned
/// right, indented by `indent` spaces.
fn plain_table(header: &[&str], numbers: std::ops::Range<usize>, indent: u16) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(header.to_vec());
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((if i == 0 { indent } else { 0 }, 2));
        if numbers.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// Each PostgreSQL figure as a ratio to the hand-written SQL for the same work and to the floor.
fn ratios(reports: &[LoadReport], floor: &floor::Floor) -> String {
    let mut scripts = plain_table(&["script", "tx/s", "latency ms"], 1..3, 2);
    for (name, tps, latency) in &floor.results {
        scripts.add_row(vec![
            name.clone(),
            format!("{tps:.0}"),
            format!("{latency:.2}"),
        ]);
    }
    let base = floor.tps("floor").unwrap_or(f64::NAN);
    let mut figures = plain_table(
        &["workload", "figure", "unit", "x same work", "x floor"],
        1..2,
        2,
    );
    for r in reports
        .iter()
        .filter(|r| r.concurrency == 16 && r.processes == 1)
    {
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
        figures.add_row(vec![
            r.workload.clone(),
            format!("{figure:.0}"),
            unit.to_owned(),
            same_work.map_or_else(String::new, |(script, value)| {
                format!("{:.2} x {script}", figure / value)
            }),
            if r.workload == "w5" {
                String::new()
            } else {
                format!("{:.2}", figure / base)
            },
        ]);
    }
    format!(
        "Ratios to hand-written SQL measured in the same run (pgbench, 16 clients):\n{}\n{}\n",
        scripts.trim_fmt(),
        figures.trim_fmt()
    )
}
