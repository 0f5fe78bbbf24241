//! The command line, as clap reads it (and as `--help` shows it).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use crossfold_bench::big_log::Plan;
use crossfold_bench::campaign::CampaignOptions;
use crossfold_bench::pairs::PairsOptions;
use crossfold_bench::{ConcurrencyLimit, Workload};

/// The server when neither --url nor DATABASE_URL names one.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Crossfold's load harness: runs the standard workloads (W1–W8 and W12, see
/// docs/benchmarks.md) on the in-memory store or on PostgreSQL and prints a table.
///
/// A run whose data does not verify (money conserved, versions gap-free, each event once in
/// the log and as many as the store reported writing, invoice numbers gapless) is reported as
/// FAILED and makes the exit status non-zero.
///
/// The subcommands check the executor's correctness (pairs, campaign; exit status non-zero
/// when one fails) or measure projections (projections). Durations are seconds, or written
/// with a unit: 90s, 2m, 1m 30s.
#[derive(Debug, Parser)]
#[command(
    name = "crossfold-bench",
    max_term_width = 100,
    args_conflicts_with_subcommands = true,
    // A flag given twice counts once, the last value winning.
    args_override_self = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

/// Which store to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Store {
    /// The in-memory store.
    Memory,
    /// PostgreSQL, in a fresh schema per run, dropped afterwards.
    Postgres,
}

impl Store {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Postgres => "postgres",
        }
    }
}

/// Workloads, one run each.
#[derive(Clone, Debug)]
pub(crate) struct Workloads(pub(crate) Vec<Workload>);

/// `all`, or workload ids separated by commas.
fn workloads(text: &str) -> Result<Workloads, String> {
    if text == "all" {
        return Ok(Workloads(Workload::ALL.to_vec()));
    }
    text.split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map(Workloads)
}

/// A duration: a number of seconds, or with a unit (`500ms`, `90s`, `2m`, `1m 30s`).
fn seconds(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            format!("expected a number of seconds or a duration such as 90s or 2m ({e})")
        }),
    }
}

/// A schema name the harness can write into SQL as it is: lower-case letters, digits and
/// underscores, not starting with a digit, at most 63 bytes.
fn schema_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && !text.starts_with(|c: char| c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "expected lower-case letters, digits and underscores (not first), at most 63, not {text:?}"
        ))
    }
}

/// Commands per second: from 0.1 to 100,000.
fn rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if (0.1..=100_000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "expected a rate from 0.1 to 100000 per second, not {text:?}"
        )),
    }
}

/// A positive time of at least a second.
fn interval(text: &str) -> Result<Duration, String> {
    let duration = seconds(text)?;
    if duration < Duration::from_secs(1) {
        return Err("expected at least one second".into());
    }
    Ok(duration)
}

/// How many processes: 1 to 64.
fn process_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err("expected a number of processes from 1 to 64".to_owned()),
    }
}

/// A duration in whole seconds (pgbench's `-T`): as [`seconds`], without a fraction.
fn whole_seconds(text: &str) -> Result<u64, String> {
    let duration = seconds(text)?;
    if duration.subsec_nanos() != 0 {
        return Err("pgbench runs for whole seconds".to_owned());
    }
    Ok(duration.as_secs())
}

/// The workloads (without a subcommand).
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// The store to load.
    #[arg(long, value_enum, default_value_t = Store::Memory)]
    pub(crate) store: Store,

    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// Comma-separated: w1,w2,w3,w4,w5,w6,w6x3,w7-catchup,w7-live,w8,w12, or all.
    #[arg(long, value_name = "LIST", default_value = "all", value_parser = workloads)]
    pub(crate) workloads: Workloads,

    /// Measured time per run.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds)]
    pub(crate) duration: Duration,

    /// Warm-up time per run.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    pub(crate) warmup: Duration,

    /// Operations in flight, comma-separated: each workload runs once per value.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "16",
        action = ArgAction::Set
    )]
    pub(crate) concurrency: Vec<usize>,

    /// Accounts opened before a run.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) accounts: usize,

    /// PostgreSQL connections of the store's pool. Commands beyond what it serves wait for
    /// admission in the executor (`--concurrency-limit`); workloads that call the store
    /// directly (w5, w6, w7-catchup) wait for a connection.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub(crate) pool: usize,

    /// Also write every report (and the floor) to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,

    /// Also run hand-written SQL with pgbench on the same server, and print each PostgreSQL
    /// figure as a ratio to it.
    #[arg(long)]
    pub(crate) compare_floor: bool,

    /// Time per hand-written script.
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = whole_seconds)]
    pub(crate) floor_seconds: u64,

    /// Install a Prometheus recorder (measures the metrics' overhead).
    #[arg(long)]
    pub(crate) prometheus: bool,

    /// Let commands on the same streams race to the store instead of queuing in-process.
    #[arg(long)]
    pub(crate) no_serialize: bool,

    /// Commands that lose races to other writers back off and race again instead of taking
    /// turns on the contended streams.
    #[arg(long)]
    pub(crate) no_turns: bool,

    /// Run each workload in this many processes at once against one PostgreSQL schema, each
    /// with --concurrency operations in flight and a share of --pool (at least its operations
    /// in flight plus 2); one verification covers what all of them wrote. Comma-separated to
    /// compare in one run (1,4); without a value, 4.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        num_args = 0..=1,
        default_missing_value = "4",
        action = ArgAction::Set,
        value_parser = process_count
    )]
    pub(crate) processes: Option<Vec<usize>>,

    /// PostgreSQL: group commit on (appends in flight together share one call and one commit).
    #[arg(long)]
    pub(crate) group_commit: bool,

    /// PostgreSQL: partition the fresh schema's log by position, N transaction ids per
    /// partition (4 ahead), before the workload runs.
    #[arg(long, value_name = "N", conflicts_with = "processes")]
    pub(crate) partition_size: Option<u64>,

    /// PostgreSQL, with --group-commit: calls in flight at most (default: what the pool serves).
    #[arg(long, value_name = "N", requires = "group_commit")]
    pub(crate) group_commit_calls: Option<usize>,

    /// Commands the executor runs at once, the others waiting for admission in arrival order:
    /// `store` (what the store serves at once: on PostgreSQL the pool less an eighth, at least
    /// one connection), a number, or `off` (every command goes to the store at once and waits
    /// for a connection there).
    #[arg(long, value_name = "LIMIT", default_value = "store")]
    pub(crate) concurrency_limit: ConcurrencyLimit,

    /// No progress line.
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Pairs of streams written together, and commands that refuse when a pair disagrees:
    /// counts refusals decided on a state that never existed (must be 0).
    Pairs(PairsArgs),
    /// Banking commands over the in-memory store or PostgreSQL (with or without group commit)
    /// with conflicts, transient failures, timeouts and ambiguous commits injected; checks
    /// every outcome against the log.
    Campaign(CampaignArgs),
    /// W9: a balance projection rebuilt from position zero, on memory and on PostgreSQL
    /// (compared with a hand-written rebuild through pgbench, one client); W10: event created
    /// -> read model committed latency of a live projection while W1 runs.
    Projections(ProjectionsArgs),
    /// W8's cold start: the first command on one account whose stream holds many events, in
    /// a process that just started (new executor, and on PostgreSQL a new pool), with and
    /// without snapshots of the command's state.
    ColdStart(ColdStartArgs),
    /// W11, the big log (PostgreSQL): 10M events over 1M streams and a stream of 1M events
    /// loaded through the store's append path, then catch-up from zero, W1, W6 and W6x3 on it
    /// and on a small log in the same run (as ratios), W1 over every account, a W9 rebuild
    /// over the whole log, the tables' bytes per event and per stream, and the long stream's
    /// tail read and first command after a restart, with and without a snapshot.
    BigLog(BigLogArgs),
    /// A long run at a steady rate (PostgreSQL): deposits and transfers, a live projection and
    /// a process manager, sampled every interval (memory, descriptors, connections, latency,
    /// projection lag, the log's growth) into soak.csv and soak.svg, then verified and judged
    /// (RSS flat after the warm-up, p99 stable, no error).
    Soak(SoakArgs),
    /// Many tenants on one database (PostgreSQL): W1 spread over --tenants tenants, each a
    /// schema of its own on one store's connections (`PgEventStore::tenant`), against the same
    /// accounts in one tenant, alternated; then each tenant's log is checked to hold exactly
    /// its own events.
    Tenants(TenantsArgs),
    /// One process's share of a run with --processes (started by the run itself).
    #[command(hide = true)]
    Share(ShareArgs),
}

/// A share of a multi-process run, as the parent process passes it on.
#[derive(Debug, Args)]
pub(crate) struct ShareArgs {
    /// PostgreSQL URL.
    #[arg(long)]
    pub(crate) url: String,
    /// The schema the parent set up.
    #[arg(long)]
    pub(crate) schema: String,
    /// The workload.
    #[arg(long)]
    pub(crate) workload: Workload,
    /// Which share (0-based).
    #[arg(long)]
    pub(crate) index: usize,
    /// Operations in flight.
    #[arg(long)]
    pub(crate) concurrency: usize,
    /// Accounts (as the parent set them up).
    #[arg(long)]
    pub(crate) accounts: usize,
    /// Connections.
    #[arg(long)]
    pub(crate) pool: usize,
    /// Measured time.
    #[arg(long, value_parser = seconds)]
    pub(crate) duration: Duration,
    /// Warm-up time.
    #[arg(long, value_parser = seconds)]
    pub(crate) warmup: Duration,
    /// As the parent's flag.
    #[arg(long)]
    pub(crate) no_serialize: bool,
    /// As the parent's flag.
    #[arg(long)]
    pub(crate) no_turns: bool,
    /// As the parent's flag.
    #[arg(long, default_value = "store")]
    pub(crate) concurrency_limit: ConcurrencyLimit,
    /// As the parent's flag.
    #[arg(long)]
    pub(crate) group_commit: bool,
    /// As the parent's flag.
    #[arg(long, value_name = "N", requires = "group_commit")]
    pub(crate) group_commit_calls: Option<usize>,
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub(crate) struct PairsArgs {
    /// The store to run on.
    #[arg(long, value_enum, default_value_t = Store::Memory)]
    pub(crate) store: Store,

    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// Commands to execute.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub(crate) executions: u64,

    /// Commands keep per-stream parts (`PER_STREAM`) instead of one state per combination of
    /// streams.
    #[arg(long)]
    pub(crate) per_stream: bool,

    /// Tasks executing commands at once.
    #[arg(long, value_name = "N", default_value_t = PairsOptions::new(0).tasks)]
    pub(crate) tasks: usize,

    /// Executors (each with its own caches) the tasks are spread over.
    #[arg(long, value_name = "N", default_value_t = PairsOptions::new(0).executors)]
    pub(crate) executors: usize,

    /// Pairs of streams (few pairs: much contention).
    #[arg(long, value_name = "N", default_value_t = PairsOptions::new(0).pairs)]
    pub(crate) pairs: usize,

    /// Seeds the tasks' choices of pairs and commands.
    #[arg(long, value_name = "N", default_value_t = PairsOptions::new(0).seed)]
    pub(crate) seed: u64,
}

impl PairsArgs {
    pub(crate) fn options(&self) -> PairsOptions {
        let mut options = PairsOptions::new(self.executions);
        options.tasks = self.tasks;
        options.executors = self.executors;
        options.pairs = self.pairs;
        options.seed = self.seed;
        options.per_stream = self.per_stream;
        options
    }
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub(crate) struct CampaignArgs {
    /// The store under the faults.
    #[arg(long, value_enum, default_value_t = Store::Memory)]
    pub(crate) store: Store,

    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// PostgreSQL: group commit on (appends in flight together share one call and one commit).
    #[arg(long)]
    pub(crate) group_commit: bool,

    /// Commands to execute.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) operations: u64,

    /// Seed of the commands and of the faults: the same seed runs the same campaign.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) seed: u64,

    /// Tasks executing commands at once.
    #[arg(long, value_name = "N", default_value_t = CampaignOptions::new(0, 0).tasks)]
    pub(crate) tasks: usize,

    /// Executors (each with its own caches, like processes) the commands are spread over.
    #[arg(long, value_name = "N", default_value_t = CampaignOptions::new(0, 0).executors)]
    pub(crate) executors: usize,

    /// Accounts, opened before the run.
    #[arg(long, value_name = "N", default_value_t = CampaignOptions::new(0, 0).accounts)]
    pub(crate) accounts: usize,

    /// Attempts per command (few, so that commands also end in doubt or give up).
    #[arg(long, value_name = "N", default_value_t = CampaignOptions::new(0, 0).max_attempts)]
    pub(crate) attempts: u32,
}

impl CampaignArgs {
    pub(crate) fn options(&self) -> CampaignOptions {
        let mut options = CampaignOptions::new(self.operations, self.seed);
        options.tasks = self.tasks;
        options.executors = self.executors;
        options.accounts = self.accounts;
        options.max_attempts = self.attempts;
        options
    }
}

/// A part of the `projections` subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProjectionRun {
    /// W9 on the in-memory store.
    #[value(name = "w9-memory")]
    W9Memory,
    /// W9 on PostgreSQL, and the hand-written rebuild.
    #[value(name = "w9-postgres")]
    W9Postgres,
    /// W10 (PostgreSQL).
    #[value(name = "w10")]
    W10,
}

/// How the first command on a long stream after a restart is sampled (`cold-start` and the
/// long stream of `big-log`).
#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    /// Restarts measured with snapshots.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub(crate) samples: usize,

    /// Restarts measured without snapshots (each folds the whole stream).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) plain_samples: usize,

    /// The snapshot policy: a snapshot every N events folded.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub(crate) every: u64,
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub(crate) struct TenantsArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// Tenants to spread the accounts over.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub(crate) tenants: usize,

    /// Accounts in all (spread evenly over the tenants).
    #[arg(long, value_name = "N", default_value_t = 3_000)]
    pub(crate) accounts: usize,

    /// How long each run lasts.
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = seconds)]
    pub(crate) duration: Duration,

    /// Commands in flight.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub(crate) concurrency: usize,

    /// Connections, shared by every tenant.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub(crate) pool: usize,

    /// Runs of each layout, alternated (one tenant first, then many, then many, then one, ...).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) rounds: usize,
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub(crate) struct SoakArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// How long to run.
    #[arg(long, value_name = "TIME", default_value = "60m", value_parser = seconds)]
    pub(crate) duration: Duration,

    /// Commands per second, arriving at a steady rate whatever their latency.
    #[arg(long, value_name = "N", default_value_t = 200.0, value_parser = rate)]
    pub(crate) rate: f64,

    /// Share of the commands that are transfers (W2), in percent; the others are deposits (W1).
    #[arg(long, value_name = "PERCENT", default_value_t = 25, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) transfer_share: u8,

    /// Commands in flight at most; an arrival that finds them all busy is shed and counted.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub(crate) max_in_flight: usize,

    /// Accounts, opened before the run (at least 2: transfers need two).
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(2..))]
    pub(crate) accounts: u32,

    /// PostgreSQL connections of the store's pool.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub(crate) pool: usize,

    /// Time between samples.
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = interval)]
    pub(crate) sample_every: Duration,

    /// Samples left out of the verdict at the start (the warm-up).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) warm_up_samples: usize,

    /// The executor's cache of folded command states, in MiB (its default is 64). Every
    /// transfer and receipt is a new stream, so the caches fill up to their budget over the
    /// run; budgets smaller than the defaults reach that steady state within the warm-up.
    #[arg(long, value_name = "MIB", default_value_t = 4)]
    pub(crate) state_cache_mib: usize,

    /// The executor's cache of recent stream events, in MiB (its default is 256).
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub(crate) event_cache_mib: usize,

    /// Directory for soak.csv and soak.svg.
    #[arg(long, value_name = "DIR", default_value = "soak-out")]
    pub(crate) out: PathBuf,
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub(crate) struct BigLogArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// Account streams of the big log.
    #[arg(long, value_name = "N", default_value_t = Plan::ten_million().streams)]
    pub(crate) streams: usize,

    /// Events in each account stream (an opening and deposits).
    #[arg(long, value_name = "N", default_value_t = Plan::ten_million().per_stream)]
    pub(crate) per_stream: u64,

    /// Events of one more account stream, written beside the others (0: none).
    #[arg(long, value_name = "N", default_value_t = Plan::ten_million().long_stream)]
    pub(crate) long_stream: u64,

    /// Account streams of the small log the big one is compared with.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) small_streams: usize,

    /// New streams per append while loading.
    #[arg(long, value_name = "N", default_value_t = Plan::ten_million().streams_per_append)]
    pub(crate) streams_per_append: usize,

    /// Appends in flight while loading.
    #[arg(long, value_name = "N", default_value_t = Plan::ten_million().workers)]
    pub(crate) loaders: usize,

    /// Measure the big log in this schema: loaded there when it holds no log, counted and
    /// measured again when it does (an earlier run's, kept); never dropped.
    #[arg(long, value_name = "NAME", value_parser = schema_name)]
    pub(crate) schema: Option<String>,

    /// Keep the big log's schema afterwards (its name is printed).
    #[arg(long)]
    pub(crate) keep: bool,

    /// Measured time of each workload.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = seconds)]
    pub(crate) duration: Duration,

    /// Warm-up time of each workload.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    pub(crate) warmup: Duration,

    /// Operations in flight.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub(crate) concurrency: usize,

    /// PostgreSQL connections of the store's pool.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub(crate) pool: usize,

    /// Catch-ups from zero timed on each log (the fastest counts).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) catch_up_rounds: usize,

    /// Events per read of the catch-up.
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    pub(crate) catch_up_batch: usize,

    /// Also run W1 over every account of the big log (not only the 10,000 both logs share).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub(crate) spread: bool,

    /// Also rebuild W9's balance projection over the whole big log.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub(crate) rebuild: bool,

    /// Events per batch of the W9 rebuild.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    pub(crate) rebuild_batch: usize,

    /// Reads of the long stream's last 100 events timed.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) tail_samples: usize,

    /// The first commands on the long stream after restarts.
    #[command(flatten)]
    pub(crate) restarts: RestartArgs,

    /// Also write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

impl BigLogArgs {
    /// What the big log's load writes.
    pub(crate) fn plan(&self) -> Plan {
        Plan {
            streams: self.streams,
            per_stream: self.per_stream,
            long_stream: self.long_stream,
            streams_per_append: self.streams_per_append,
            workers: self.loaders,
        }
    }
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub(crate) struct ColdStartArgs {
    /// The store.
    #[arg(long, value_enum, default_value_t = Store::Postgres)]
    pub(crate) store: Store,

    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// Events in the account's stream before the first command.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) events: u64,

    #[command(flatten)]
    pub(crate) restarts: RestartArgs,

    /// Prints the figures as JSON too.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub(crate) struct ProjectionsArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// W9: deposit events to rebuild from.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) events: usize,

    /// Accounts the deposits go to.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) accounts: usize,

    /// Events per projection batch.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) batch: usize,

    /// W10: measured time.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = seconds)]
    pub(crate) duration: Duration,

    /// W10: commands in flight.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub(crate) concurrency: usize,

    /// W9 on PostgreSQL: time of the hand-written rebuild.
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = whole_seconds)]
    pub(crate) floor_seconds: u64,

    /// Run only these, comma-separated (default: all).
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',', action = ArgAction::Set)]
    pub(crate) only: Vec<ProjectionRun>,
}

impl ProjectionsArgs {
    /// Whether `run` is one to run.
    pub(crate) fn runs(&self, run: ProjectionRun) -> bool {
        self.only.is_empty() || self.only.contains(&run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("crossfold-bench").chain(args.iter().copied()))
    }

    #[test]
    fn the_documented_flags_keep_their_meaning() {
        let cli = parse(&[]).unwrap();
        assert!(cli.command.is_none());
        let load = cli.load;
        assert_eq!(load.store, Store::Memory);
        assert_eq!(load.workloads.0, Workload::ALL);
        assert_eq!(load.duration, Duration::from_secs(30));
        assert_eq!(load.warmup, Duration::from_secs(5));
        assert_eq!(load.concurrency, [16]);
        assert_eq!(
            (load.accounts, load.pool, load.floor_seconds),
            (10_000, 32, 15)
        );
        assert!(!load.compare_floor && !load.prometheus && !load.no_serialize && !load.quiet);
        assert!(load.processes.is_none() && !load.no_turns);
        assert!(!load.group_commit);

        let load = parse(&[
            "--store",
            "postgres",
            "--workloads",
            "w1,w7-catchup",
            "--concurrency",
            "1,16,64",
            "--duration",
            "15",
            "--warmup",
            "500ms",
            "--floor-seconds",
            "1m",
            "--json",
            "r.json",
            "--quiet",
            "--quiet",
            "--duration",
            "2m",
        ])
        .unwrap()
        .load;
        assert_eq!(load.store, Store::Postgres);
        assert_eq!(load.workloads.0, [Workload::Deposit, Workload::CatchUp]);
        assert_eq!(load.concurrency, [1, 16, 64]);
        assert_eq!(load.duration, Duration::from_secs(120), "the last one wins");
        assert_eq!(load.warmup, Duration::from_millis(500));
        assert_eq!(load.floor_seconds, 60);
        assert!(load.quiet);

        assert!(parse(&["--store", "disk"]).is_err());
        assert!(parse(&["--workloads", "w99"]).is_err());
        assert!(parse(&["--floor-seconds", "1500ms"]).is_err());
        assert!(parse(&["--quiet", "pairs"]).is_err());
    }

    #[test]
    fn processes_default_to_four_and_take_a_list() {
        let processes = |args: &[&str]| parse(args).map(|cli| cli.load.processes);
        assert_eq!(processes(&["--processes"]).unwrap(), Some(vec![4]));
        assert_eq!(
            processes(&["--processes", "--store", "postgres"]).unwrap(),
            Some(vec![4]),
            "a flag after it is not its value"
        );
        assert_eq!(
            processes(&["--processes", "1,4"]).unwrap(),
            Some(vec![1, 4])
        );
        assert_eq!(processes(&["--processes=2"]).unwrap(), Some(vec![2]));
        assert_eq!(processes(&[]).unwrap(), None);
        assert!(processes(&["--processes", "0"]).is_err());
        assert!(processes(&["--processes", "65"]).is_err());
        assert!(processes(&["--processes", "four"]).is_err());
        assert!(parse(&["--no-turns"]).unwrap().load.no_turns);
    }

    #[test]
    fn a_share_is_told_everything_it_runs_with() {
        let Some(Command::Share(share)) = parse(&[
            "share",
            "--url",
            "postgres://x@y/z",
            "--schema",
            "s",
            "--workload",
            "w4",
            "--index",
            "3",
            "--concurrency",
            "16",
            "--accounts",
            "10",
            "--pool",
            "18",
            "--duration",
            "5000ms",
            "--warmup",
            "1500ms",
            "--no-turns",
            "--group-commit",
            "--group-commit-calls",
            "6",
        ])
        .unwrap()
        .command
        else {
            panic!("not a share");
        };
        assert_eq!(share.workload, Workload::Contended);
        assert_eq!((share.index, share.concurrency, share.pool), (3, 16, 18));
        assert_eq!(share.duration, Duration::from_secs(5));
        assert_eq!(share.warmup, Duration::from_millis(1500));
        assert!(share.no_turns && !share.no_serialize);
        assert!(share.group_commit);
        assert_eq!(share.group_commit_calls, Some(6));
    }

    #[test]
    fn the_subcommands_take_their_own_flags() {
        let Some(Command::Pairs(pairs)) = parse(&[
            "pairs",
            "--store",
            "postgres",
            "--executions",
            "10",
            "--per-stream",
        ])
        .unwrap()
        .command
        else {
            panic!("not pairs");
        };
        let options = pairs.options();
        assert_eq!(pairs.store, Store::Postgres);
        assert_eq!(options.executions, 10);
        assert!(options.per_stream);
        let defaults = PairsOptions::new(10);
        assert_eq!(
            (
                options.tasks,
                options.executors,
                options.pairs,
                options.seed
            ),
            (
                defaults.tasks,
                defaults.executors,
                defaults.pairs,
                defaults.seed
            )
        );

        let Some(Command::Campaign(campaign)) =
            parse(&["campaign", "--seed", "7", "--attempts", "5"])
                .unwrap()
                .command
        else {
            panic!("not campaign");
        };
        let options = campaign.options();
        assert_eq!((options.operations, options.seed), (1_000_000, 7));
        assert_eq!(options.max_attempts, 5);
        assert_eq!(campaign.store, Store::Memory);
        assert!(!campaign.group_commit);
        let Some(Command::Campaign(campaign)) =
            parse(&["campaign", "--store", "postgres", "--group-commit"])
                .unwrap()
                .command
        else {
            panic!("not campaign");
        };
        assert_eq!(campaign.store, Store::Postgres);
        assert!(campaign.group_commit);
        assert!(parse(&["--group-commit"]).unwrap().load.group_commit);
        let load = parse(&["--group-commit", "--group-commit-calls", "4"])
            .unwrap()
            .load;
        assert_eq!(load.group_commit_calls, Some(4));
        assert!(parse(&["--group-commit-calls", "4"]).is_err());

        let Some(Command::Projections(projections)) =
            parse(&["projections", "--only", "w9-memory,w10", "--duration", "20"])
                .unwrap()
                .command
        else {
            panic!("not projections");
        };
        assert!(projections.runs(ProjectionRun::W9Memory));
        assert!(!projections.runs(ProjectionRun::W9Postgres));
        assert!(projections.runs(ProjectionRun::W10));
        assert_eq!(projections.duration, Duration::from_secs(20));
        assert!(parse(&["projections", "--only", "w11"]).is_err());
    }
}
