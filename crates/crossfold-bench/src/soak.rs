//! `crossfold-bench soak`: a long run at a steady rate on PostgreSQL — deposits (W1) and
//! transfers (W2) arriving at a fixed rate, a live projection of balances into a table, and a
//! process manager issuing one receipt per completed transfer — sampled every interval into a
//! CSV file and drawn as an SVG chart: the process's memory (RSS), its open file descriptors
//! and pool connections, command latency percentiles and rate, the lag of the projection and
//! of the process manager (a probe transfer per sample: the time from its commit until each
//! has applied it), and the events table's size. At the end the read side catches up and the
//! whole log is verified (money conserved, every event once, one receipt per completed
//! transfer, projected balances equal to the accounts'), and the run is judged: RSS flat after
//! the warm-up (slope under 1 % per hour), p99 stable, no error, the rate kept.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossfold_bench::SetUp;
use crossfold_bench::bank::{BankEvent, Deposit, Open, Transfer, account_stream};
use crossfold_bench::big_log::{self, OPENING_BALANCE};
use crossfold_core::checkpoint::ProjectionControl;
use crossfold_core::deadline::DeadlineStore;
use crossfold_core::{
    Codec, Command, CommandError, DomainEvent, Emit, ErrorChain, EventId, EventStore, Recorded,
    StreamId, StreamRef,
};
use crossfold_executor::{Error, Executor};
use crossfold_postgres::{PgCheckpoints, PgDeadlineStore, PgEventStore};
use crossfold_projections::{
    HandlerError, Process, ProcessManager, ProcessManagerProjection, ProjectionOptions,
    ProjectionRunner, RunnerOptions, command_failure,
};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::args::SoakArgs;
use crate::cold_start::latency_histogram;
use crate::projections::{BALANCES_PROJECTION, PgBalances, pg_store, psql, wait_for_checkpoint};

/// The receipt the process manager issues for a completed transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum ReceiptEvent {
    ReceiptIssued { amount: i64 },
}

impl DomainEvent for ReceiptEvent {
    fn event_type(&self) -> &'static str {
        "ReceiptIssued"
    }
}

/// Issues the receipt of a transfer on `receipt-<the transfer's id>`.
struct IssueReceipt {
    receipt: StreamId,
    amount: i64,
}

impl Command for IssueReceipt {
    type Event = ReceiptEvent;
    type State = ();
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.receipt.clone()
    }

    fn handle<'x>(
        &self,
        _: &(),
        receipt: StreamRef<'x>,
        out: &mut Emit<'x, ReceiptEvent>,
    ) -> Result<(), CommandError> {
        out.append(
            receipt,
            ReceiptEvent::ReceiptIssued {
                amount: self.amount,
            },
        );
        Ok(())
    }

    fn expects_new(&self, _: &StreamId) -> bool {
        true
    }
}

/// The process manager's name.
const RECEIPTS: &str = "soak-receipts";

/// One receipt per completed transfer.
struct Receipts;

impl ProcessManager for Receipts {
    type Event = BankEvent;
    type State = ();

    fn name(&self) -> &str {
        RECEIPTS
    }

    fn filter(&self) -> crossfold_core::LogFilter {
        crossfold_core::LogFilter::categories(["transfer"])
    }

    async fn react<S: EventStore, C: Codec, D: DeadlineStore>(
        &self,
        _: &(),
        event: &Recorded<BankEvent>,
        process: &mut Process<'_, S, C, D>,
    ) -> Result<(), HandlerError> {
        let BankEvent::TransferCompleted { amount } = event.event else {
            return Ok(());
        };
        let id = event
            .stream_id
            .as_str()
            .strip_prefix("transfer-")
            .unwrap_or(event.stream_id.as_str());
        let receipt = StreamId::new(format!("receipt-{id}")).map_err(HandlerError::rejected)?;
        process
            .execute(IssueReceipt { receipt, amount })
            .await
            .map_err(command_failure)?;
        Ok(())
    }
}

/// Counts shared by the commands in flight and the sampler.
#[derive(Default)]
struct Counters {
    commands: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    shed: AtomicU64,
    deposited: AtomicU64,
    written: AtomicU64,
    transfers: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    /// Counts an error, keeping the first one's text.
    fn error(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(error);
    }
}

/// One row of the CSV.
#[derive(Clone, Debug, Default)]
struct Sample {
    minute: f64,
    rss_mib: f64,
    fds: u64,
    connections: usize,
    commands_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    shed: u64,
    projection_lag_ms: f64,
    manager_lag_ms: f64,
    events: u64,
    events_mib: f64,
}

const CSV_HEADER: &str = "minute,rss_mib,open_fds,pool_connections,commands_per_sec,p50_ms,p99_ms,max_ms,errors,shed,projection_lag_ms,process_manager_lag_ms,events_written,events_table_mib";

impl Sample {
    fn csv(&self) -> String {
        format!(
            "{:.2},{:.2},{},{},{:.1},{:.2},{:.2},{:.2},{},{},{:.1},{:.1},{},{:.2}",
            self.minute,
            self.rss_mib,
            self.fds,
            self.connections,
            self.commands_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.errors,
            self.shed,
            self.projection_lag_ms,
            self.manager_lag_ms,
            self.events,
            self.events_mib
        )
    }
}

/// This process's resident memory in MiB (Linux), 0 where it cannot be read.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// This process's open file descriptors (Linux), 0 where they cannot be counted.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

pub(crate) async fn soak(args: SoakArgs) -> ExitCode {
    let schema = format!("crossfold_soak_{}", std::process::id());
    let result = match pg_store(&args.url, &schema, args.pool).await {
        Ok(store) => run(&args, store, &schema).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(true) => {
            let _ = psql(
                &args.url,
                &format!(
                    "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE"
                ),
            )
            .await;
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("soak: a goal was missed (schema {schema} kept for inspection)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak failed: {e} (schema {schema} kept for inspection)");
            ExitCode::FAILURE
        }
    }
}

/// Runs the soak; `Ok(true)` when every goal held.
async fn run(args: &SoakArgs, store: PgEventStore, schema: &str) -> Result<bool, String> {
    let accounts: Arc<Vec<StreamId>> = Arc::new(
        (0..args.accounts as usize)
            .map(account_stream)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
    );
    let executor = Executor::builder(store.clone())
        .state_cache_bytes(args.state_cache_mib << 20)
        .event_cache_bytes(args.event_cache_mib << 20)
        .build();
    for account in accounts.iter() {
        executor
            .execute(Open {
                account: account.clone(),
                initial: OPENING_BALANCE,
            })
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
    }
    let set_up = SetUp {
        money: OPENING_BALANCE * i64::from(args.accounts),
        events: u64::from(args.accounts),
        secs: 0.0,
    };

    // The read side: balances into a table, receipts through a process manager.
    let table = format!("{schema}.soak_balances");
    psql(
        &args.url,
        &format!("CREATE TABLE {table} (account text PRIMARY KEY, balance bigint NOT NULL)"),
    )
    .await?;
    let checkpoints = PgCheckpoints::new(&store);
    let mut runner = ProjectionRunner::new(
        store.clone(),
        checkpoints.clone(),
        RunnerOptions::default().owner("soak"),
    );
    runner.spawn(
        PgBalances::new(table.clone()),
        ProjectionOptions::default().batch_size(500),
    );
    runner.spawn(
        ProcessManagerProjection::new(
            Receipts,
            executor.clone(),
            PgDeadlineStore::new(&store),
            checkpoints.clone(),
        ),
        ProjectionOptions::default().batch_size(100),
    );

    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(latency_histogram()?));
    let started = Instant::now();
    let end = started + args.duration;
    let driver = tokio::spawn(drive(
        executor.clone(),
        accounts.clone(),
        args.rate,
        args.transfer_share,
        args.max_in_flight,
        end,
        counters.clone(),
        latency.clone(),
    ));

    let csv_path = args.out.join("soak.csv");
    std::fs::create_dir_all(&args.out).map_err(|e| ErrorChain(&e).to_string())?;
    let mut csv = format!("{CSV_HEADER}\n");
    let mut samples: Vec<Sample> = Vec::new();
    let mut last = (Instant::now(), 0u64, 0u64, 0u64);
    let mut next = started + args.sample_every;
    eprintln!(
        "soak: {} commands/s ({} % transfers) for {}, sampled every {}; CSV in {}",
        args.rate,
        args.transfer_share,
        humantime::format_duration(args.duration),
        humantime::format_duration(args.sample_every),
        csv_path.display()
    );
    while next <= end {
        tokio::time::sleep_until(next.into()).await;
        next += args.sample_every;
        let window = std::mem::replace(
            &mut *latency
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            latency_histogram()?,
        );
        let now = Instant::now();
        let commands = counters.commands.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let shed = counters.shed.load(Ordering::Relaxed);
        let (lag, manager_lag) = probe(&executor, &accounts, &checkpoints, &counters).await;
        let events_bytes: f64 = psql(
            &args.url,
            &format!("SELECT pg_total_relation_size('{schema}.events')"),
        )
        .await?
        .parse()
        .unwrap_or(0.0);
        let ms = |q: f64| window.value_at_quantile(q) as f64 / 1_000.0;
        let sample = Sample {
            minute: started.elapsed().as_secs_f64() / 60.0,
            rss_mib: rss_mib(),
            fds: open_fds(),
            connections: store.pool_status().size,
            commands_per_sec: (commands - last.1) as f64 / (now - last.0).as_secs_f64(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: window.max() as f64 / 1_000.0,
            errors: errors - last.2,
            shed: shed - last.3,
            projection_lag_ms: lag.as_secs_f64() * 1_000.0,
            manager_lag_ms: manager_lag.as_secs_f64() * 1_000.0,
            events: set_up.events + counters.written.load(Ordering::Relaxed),
            events_mib: events_bytes / 1_048_576.0,
        };
        last = (now, commands, errors, shed);
        eprintln!(
            "  {:>6.1} min  rss {:>7.1} MiB  fds {:>4}  conns {:>3}  {:>6.0}/s  p50 {:>6.2} ms  p99 {:>7.2} ms  lag {:>6.1}/{:>6.1} ms  errors {}  shed {}",
            sample.minute,
            sample.rss_mib,
            sample.fds,
            sample.connections,
            sample.commands_per_sec,
            sample.p50_ms,
            sample.p99_ms,
            sample.projection_lag_ms,
            sample.manager_lag_ms,
            sample.errors,
            sample.shed
        );
        csv.push_str(&sample.csv());
        csv.push('\n');
        std::fs::write(&csv_path, &csv).map_err(|e| ErrorChain(&e).to_string())?;
        samples.push(sample);
    }
    driver.await.map_err(|e| ErrorChain(&e).to_string())?;

    // The read side catches up with everything (the receipts it writes included), then the
    // log is checked whole.
    loop {
        let head = store
            .head_position()
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        for name in [BALANCES_PROJECTION, RECEIPTS] {
            wait_for_checkpoint(&checkpoints, name, head, Duration::from_secs(120)).await?;
        }
        let now = store
            .head_position()
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        if now == head {
            break;
        }
    }
    runner.shutdown().await;
    let transfers = counters.transfers.load(Ordering::Relaxed);
    let receipts: u64 = psql(
        &args.url,
        &format!("SELECT count(*) FROM {schema}.streams WHERE stream_id LIKE 'receipt-%'"),
    )
    .await?
    .parse()
    .map_err(|_| "no count of receipts")?;
    let expected = SetUp {
        money: set_up.money + counters.deposited.load(Ordering::Relaxed) as i64,
        events: set_up.events + counters.written.load(Ordering::Relaxed) + receipts,
        secs: 0.0,
    };
    let verification = big_log::check(&store, &accounts, &expected)
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    let balances: i64 = psql(&args.url, &format!("SELECT sum(balance) FROM {table}"))
        .await?
        .parse()
        .map_err(|_| "no sum of balances")?;

    let svg_path = args.out.join("soak.svg");
    std::fs::write(&svg_path, svg(&samples)).map_err(|e| ErrorChain(&e).to_string())?;
    let judged = judge(&samples, args.warm_up_samples);
    let mut ok = judged.ok;
    println!(
        "soak: {} samples, CSV {}, chart {}",
        samples.len(),
        csv_path.display(),
        svg_path.display()
    );
    print!("{}", judged.text);
    let first_error = counters
        .first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let errors = counters.errors.load(Ordering::Relaxed);
    println!(
        "  commands {}  rejected (insufficient funds) {}  errors {errors}{}  shed (rate not kept) {}",
        counters.commands.load(Ordering::Relaxed),
        counters.rejected.load(Ordering::Relaxed),
        first_error.map_or_else(String::new, |e| format!(" (first: {e})")),
        counters.shed.load(Ordering::Relaxed)
    );
    ok &= errors == 0 && counters.shed.load(Ordering::Relaxed) == 0;
    let checks = [
        (
            verification.passed,
            format!(
                "log verified: {} events, money conserved, versions gap-free{}",
                verification.events,
                if verification.passed {
                    String::new()
                } else {
                    format!(" -- FAILED: {}", verification.problems.join("; "))
                }
            ),
        ),
        (
            receipts == transfers,
            format!("receipts {receipts} for {transfers} completed transfers (one each)"),
        ),
        (
            balances == expected.money,
            format!(
                "projected balances sum to {balances} (the accounts hold {})",
                expected.money
            ),
        ),
    ];
    for (held, what) in checks {
        println!("  {} {what}", if held { "ok  " } else { "FAIL" });
        ok &= held;
    }
    Ok(ok)
}

/// Issues commands at `rate` per second until `end`: each a deposit or (`transfer_share` %)
/// a transfer, at most `max_in_flight` at once (a tick that finds them all busy is shed and
/// counted: the rate was not kept).
#[allow(clippy::too_many_arguments)]
async fn drive(
    executor: Executor<PgEventStore>,
    accounts: Arc<Vec<StreamId>>,
    rate: f64,
    transfer_share: u8,
    max_in_flight: usize,
    end: Instant,
    counters: Arc<Counters>,
    latency: Arc<Mutex<Histogram<u64>>>,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        ticker.tick().await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            counters.shed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let transfer = if rng.u8(0..100) < transfer_share {
            match StreamId::new(format!("transfer-{}", EventId::generate())) {
                Ok(stream) => Some(stream),
                Err(e) => {
                    counters.error(ErrorChain(&e).to_string());
                    continue;
                }
            }
        } else {
            None
        };
        let from = accounts[rng.usize(0..accounts.len())].clone();
        let mut to = accounts[rng.usize(0..accounts.len())].clone();
        while to == from && accounts.len() > 1 {
            to = accounts[rng.usize(0..accounts.len())].clone();
        }
        let amount = rng.i64(1..100);
        let (executor, counters, latency) = (executor.clone(), counters.clone(), latency.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let is_transfer = transfer.is_some();
            let (result, deposited) = match transfer {
                Some(transfer) => (
                    executor
                        .execute(Transfer {
                            from,
                            to,
                            transfer,
                            amount,
                        })
                        .await,
                    0,
                ),
                None => (
                    executor
                        .execute(Deposit {
                            account: from,
                            amount,
                        })
                        .await,
                    amount,
                ),
            };
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = latency
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(took.max(1));
            counters.commands.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(done) => {
                    let written = done.events.len() as u64;
                    counters.written.fetch_add(written, Ordering::Relaxed);
                    if written > 0 {
                        counters
                            .deposited
                            .fetch_add(deposited as u64, Ordering::Relaxed);
                        if is_transfer {
                            counters.transfers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(Error::Command(CommandError::Rejected { .. })) => {
                    counters.rejected.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => counters.error(ErrorChain(&e).to_string()),
            }
            drop(permit);
        });
        // Finished tasks are reaped as the run goes, so the set never grows.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// The lag of the read side now: a probe transfer of 1 between the first two accounts, and
/// the time from its commit until the balance projection has applied its account events and
/// the process manager its completion (each waited for at most a minute; a probe that fails
/// or is not applied in time counts as an error).
async fn probe(
    executor: &Executor<PgEventStore>,
    accounts: &[StreamId],
    checkpoints: &PgCheckpoints,
    counters: &Counters,
) -> (Duration, Duration) {
    let failed = |e: String| {
        counters.error(e);
        (Duration::ZERO, Duration::ZERO)
    };
    let (Some(from), Some(to)) = (accounts.first(), accounts.get(1)) else {
        return failed("the probe needs two accounts".into());
    };
    let transfer = match StreamId::new(format!("transfer-{}", EventId::generate())) {
        Ok(t) => t,
        Err(e) => return failed(ErrorChain(&e).to_string()),
    };
    let done = match executor
        .execute(Transfer {
            from: from.clone(),
            to: to.clone(),
            transfer: transfer.clone(),
            amount: 1,
        })
        .await
    {
        Ok(done) => done,
        Err(e) => return failed(format!("probe: {}", ErrorChain(&e))),
    };
    let committed = Instant::now();
    counters.commands.fetch_add(1, Ordering::Relaxed);
    counters
        .written
        .fetch_add(done.events.len() as u64, Ordering::Relaxed);
    if done.events.is_empty() {
        return failed("the probe transfer wrote nothing".into());
    }
    counters.transfers.fetch_add(1, Ordering::Relaxed);
    // The newest of its account events (`true`) or its completion (`false`).
    let last = |account: bool| {
        done.events
            .iter()
            .filter(|e| (e.stream_id == transfer) != account)
            .map(|e| e.position)
            .max()
            .unwrap_or_default()
    };
    // Both followed at once, each lag taken when its checkpoint is first seen past the probe.
    let targets = [(BALANCES_PROJECTION, last(true)), (RECEIPTS, last(false))];
    let mut lags: [Option<Duration>; 2] = [None; 2];
    while lags.iter().any(Option::is_none) {
        for (lag, (name, position)) in lags.iter_mut().zip(targets) {
            if lag.is_some() {
                continue;
            }
            match checkpoints.get(name).await {
                Ok(record) if record.as_ref().is_some_and(|r| r.position >= position) => {
                    *lag = Some(committed.elapsed());
                }
                Ok(_) => {}
                Err(e) => return failed(ErrorChain(&e).to_string()),
            }
        }
        if committed.elapsed() > Duration::from_secs(60) {
            return failed(format!(
                "the probe at {} was not applied within a minute",
                last(false)
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (lags[0].unwrap_or_default(), lags[1].unwrap_or_default())
}

/// The verdict on the samples after the first `warm_up` of them.
struct Judged {
    ok: bool,
    text: String,
}

/// Least-squares slope of `ys` against `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

fn judge(samples: &[Sample], warm_up: usize) -> Judged {
    let steady: Vec<&Sample> = samples.iter().skip(warm_up).collect();
    let mut text = String::new();
    if steady.len() < 3 {
        let _ = writeln!(
            text,
            "  too few samples after the warm-up ({}) to judge: run longer",
            steady.len()
        );
        return Judged { ok: false, text };
    }
    let minutes: Vec<f64> = steady.iter().map(|s| s.minute).collect();
    let rss: Vec<f64> = steady.iter().map(|s| s.rss_mib).collect();
    let mean_rss = rss.iter().sum::<f64>() / rss.len() as f64;
    // MiB per minute, as a share of the mean per hour.
    let rss_per_hour = slope(&minutes, &rss) * 60.0 / mean_rss.max(f64::MIN_POSITIVE) * 100.0;
    let mut p99: Vec<f64> = steady.iter().map(|s| s.p99_ms).collect();
    let first_half = p99[..p99.len() / 2].to_vec();
    let second_half = p99[p99.len() / 2..].to_vec();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut a, mut b) = (first_half, second_half);
    let (early, late) = (median(&mut a), median(&mut b));
    let overall = median(&mut p99);
    let fds: Vec<f64> = steady.iter().map(|s| s.fds as f64).collect();
    let fd_slope = slope(&minutes, &fds) * 60.0;
    let rss_ok = rss_per_hour.abs() < 1.0;
    let p99_ok = late <= early * 1.5 + 1.0;
    let _ = writeln!(
        text,
        "  {} RSS after the warm-up ({} samples): mean {mean_rss:.1} MiB, slope {rss_per_hour:+.2} % per hour (goal: under 1 %)",
        if rss_ok { "ok  " } else { "FAIL" },
        steady.len()
    );
    let _ = writeln!(
        text,
        "  {} p99 latency: median {overall:.2} ms; first half {early:.2} ms, second half {late:.2} ms (goal: the second at most 1.5 x the first + 1 ms)",
        if p99_ok { "ok  " } else { "FAIL" }
    );
    let _ = writeln!(
        text,
        "       open descriptors: slope {fd_slope:+.2} per hour; pool connections {}..{}",
        steady.iter().map(|s| s.connections).min().unwrap_or(0),
        steady.iter().map(|s| s.connections).max().unwrap_or(0)
    );
    Judged {
        ok: rss_ok && p99_ok,
        text,
    }
}

/// Four charts (RSS, p99 and p50 latency, commands/s, projection lag) against minutes, as one
/// SVG with no script and no external resource.
fn svg(samples: &[Sample]) -> String {
    type Series<'a> = (&'a str, &'a str, fn(&Sample) -> f64);
    let panels: [(&str, Vec<Series<'_>>); 6] = [
        (
            "resident memory, MiB",
            vec![("RSS", "#1f77b4", |s| s.rss_mib)],
        ),
        (
            "command latency, ms",
            vec![
                ("p99", "#d62728", |s| s.p99_ms),
                ("p50", "#2ca02c", |s| s.p50_ms),
            ],
        ),
        (
            "commands per second",
            vec![("rate", "#9467bd", |s| s.commands_per_sec)],
        ),
        (
            "read side lag (probe), ms",
            vec![
                ("manager", "#8c564b", |s| s.manager_lag_ms),
                ("projection", "#ff7f0e", |s| s.projection_lag_ms),
            ],
        ),
        (
            "open descriptors, pool connections",
            vec![
                ("fds", "#17becf", |s| s.fds as f64),
                ("conns", "#7f7f7f", |s| s.connections as f64),
            ],
        ),
        (
            "events table with indexes, MiB",
            vec![("size", "#bcbd22", |s| s.events_mib)],
        ),
    ];
    let (width, panel_h, left, top) = (900.0, 200.0, 70.0, 30.0);
    let height = panels.len() as f64 * (panel_h + 50.0) + 20.0;
    let max_x = samples.iter().map(|s| s.minute).fold(1.0, f64::max);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, (title, series)) in panels.iter().enumerate() {
        let y0 = top + i as f64 * (panel_h + 50.0);
        let max_y = samples
            .iter()
            .flat_map(|s| series.iter().map(move |(_, _, f)| f(s)))
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let plot_w = width - left - 20.0;
        let _ = writeln!(
            out,
            "<text x=\"{left}\" y=\"{:.1}\" font-weight=\"bold\">{title}</text>\n\
             <rect x=\"{left}\" y=\"{y0:.1}\" width=\"{plot_w}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{max_y:.1}</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">0</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{max_x:.0} min</text>",
            y0 - 8.0,
            left - 5.0,
            y0 + 10.0,
            left - 5.0,
            y0 + panel_h,
            left + plot_w,
            y0 + panel_h + 15.0
        );
        for (k, (name, colour, f)) in series.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .map(|s| {
                    format!(
                        "{:.1},{:.1}",
                        left + s.minute / max_x * plot_w,
                        y0 + panel_h - f(s) / max_y * panel_h
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{name}</text>",
                points.join(" "),
                left + plot_w - 80.0 * (k as f64 + 1.0),
                y0 - 8.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(minute: f64, rss: f64, p99: f64) -> Sample {
        Sample {
            minute,
            rss_mib: rss,
            p99_ms: p99,
            ..Sample::default()
        }
    }

    #[test]
    fn flat_memory_and_steady_latency_pass_and_growth_fails() {
        let flat: Vec<Sample> = (0..60)
            .map(|m| sample(m as f64, 100.0 + (m % 3) as f64 * 0.01, 10.0))
            .collect();
        assert!(judge(&flat, 5).ok, "{}", judge(&flat, 5).text);
        // 100 MiB growing 0.05 MiB a minute: 3 % per hour.
        let growing: Vec<Sample> = (0..60)
            .map(|m| sample(m as f64, 100.0 + m as f64 * 0.05, 10.0))
            .collect();
        assert!(!judge(&growing, 5).ok);
        let slowing: Vec<Sample> = (0..60)
            .map(|m| sample(m as f64, 100.0, if m < 30 { 10.0 } else { 40.0 }))
            .collect();
        assert!(!judge(&slowing, 5).ok);
        assert!(!judge(&flat[..6], 5).ok, "too few samples to judge");
    }

    #[test]
    fn the_csv_and_the_chart_hold_every_sample() {
        let samples: Vec<Sample> = (0..10).map(|m| sample(m as f64, 50.0, 3.0)).collect();
        assert_eq!(
            samples[0].csv().split(',').count(),
            CSV_HEADER.split(',').count()
        );
        let chart = svg(&samples);
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert_eq!(chart.matches("<polyline").count(), 9);
        // Nothing fetched from elsewhere: the one address is the SVG namespace.
        assert_eq!(chart.matches("http").count(), 1);
    }
}
