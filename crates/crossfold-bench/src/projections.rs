//! The `projections` subcommand: W9 (rebuild a balance projection from position zero) on
//! memory and PostgreSQL — the latter compared with a hand-written batched upsert through
//! `pgbench` in the same run — and W10 (commit → read-model-committed latency while W1 runs).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossfold_bench::bank::{BankEvent, account_stream};
use crossfold_bench::{LoadOptions, Workload};
use crossfold_core::checkpoint::{
    CheckpointCommit, CheckpointError, ControlRequest, DeadLetter, Lease, Leases,
    ProjectionControl, ProjectionRecord, ProjectionStatus, UnitOfWork,
};
use crossfold_core::{
    AppendRequest, ErrorChain, EventData, EventStore, ExpectedVersion, LogFilter, Payload,
    Position, Recorded, Timestamp,
};
use crossfold_memory::{MemoryCheckpoints, MemoryStore, MemoryUnit};
use crossfold_postgres::{PgCheckpoints, PgConfig, PgEventStore, PgUnit};
use crossfold_projections::{
    ApplyContext, HandlerError, Projection, ProjectionOptions, ProjectionRunner, RunnerOptions,
};
use hdrhistogram::Histogram;

use crate::args::{ProjectionRun, ProjectionsArgs};

/// `crossfold-bench projections ...`
pub(crate) async fn projections(args: ProjectionsArgs) -> ExitCode {
    let mut failed = false;
    if args.runs(ProjectionRun::W9Memory)
        && let Err(e) = w9_memory(&args).await
    {
        eprintln!("w9-memory failed: {e}");
        failed = true;
    }
    if args.runs(ProjectionRun::W9Postgres)
        && let Err(e) = w9_postgres(&args).await
    {
        eprintln!("w9-postgres failed: {e}");
        failed = true;
    }
    if args.runs(ProjectionRun::W10)
        && let Err(e) = w10(&args).await
    {
        eprintln!("w10 failed: {e}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn deposit_event(amount: i64) -> EventData {
    EventData::new(
        "Deposited",
        Payload::json(format!(r#"{{"type":"Deposited","amount":{amount}}}"#)),
    )
}

/// Appends `events` deposits, 10 per append to each account in turn (so that 1,000 events in
/// log order touch 100 accounts, as in the hand-written floor's log).
/// Returns the position of the last event written.
async fn load<S: EventStore>(
    store: &S,
    events: usize,
    accounts: usize,
) -> Result<Position, String> {
    let started = Instant::now();
    let mut last = Position::START;
    let mut written = 0;
    let mut account = 0;
    while written < events {
        let n = 10.min(events - written);
        let stream =
            account_stream(account % accounts.max(1)).map_err(|e| ErrorChain(&e).to_string())?;
        account += 1;
        let appended = store
            .append(AppendRequest::new().stream(
                stream,
                ExpectedVersion::Any,
                (0..n).map(|_| deposit_event(1)).collect(),
            ))
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        last = last.max(appended.position().unwrap_or(last));
        written += n;
    }
    eprintln!(
        "  loaded {events} deposit events over {accounts} accounts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(last)
}

/// Sums per account in a batch: the one row per account each batch upserts.
fn sums(events: &[Recorded<BankEvent>]) -> HashMap<&str, i64> {
    let mut sums: HashMap<&str, i64> = HashMap::new();
    for e in events {
        *sums.entry(e.stream_id.as_str()).or_default() += e.event.balance_change();
    }
    sums
}

/// W9 on memory: balances in a map, changed when the checkpoint commits.
struct MemoryBalances(
    Arc<Mutex<HashMap<String, i64>>>,
    Arc<std::sync::atomic::AtomicU64>,
);

impl Projection for MemoryBalances {
    type Event = BankEvent;
    type Unit = MemoryUnit;

    fn name(&self) -> &str {
        "w9"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["account"])
    }

    async fn apply(
        &self,
        unit: &mut MemoryUnit,
        _context: &ApplyContext,
        events: &[Recorded<BankEvent>],
    ) -> Result<(), HandlerError> {
        let sums: Vec<(String, i64)> = sums(events)
            .into_iter()
            .map(|(a, s)| (a.to_owned(), s))
            .collect();
        let (balances, applied) = (self.0.clone(), self.1.clone());
        let count = events.len() as u64;
        unit.on_commit(move || {
            let mut balances = balances
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (account, sum) in sums {
                *balances.entry(account).or_default() += sum;
            }
            applied.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        });
        Ok(())
    }
}

async fn w9_memory(args: &ProjectionsArgs) -> Result<(), String> {
    eprintln!(
        "w9-memory: rebuild from position zero, {} events",
        args.events
    );
    let store = MemoryStore::new();
    load(&store, args.events, args.accounts).await?;
    let balances = Arc::new(Mutex::new(HashMap::new()));
    let applied = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut runner = ProjectionRunner::new(
        store,
        MemoryCheckpoints::new(),
        RunnerOptions::default().owner("bench"),
    );
    let started = Instant::now();
    runner.spawn(
        MemoryBalances(balances.clone(), applied.clone()),
        ProjectionOptions::default().batch_size(args.batch),
    );
    let target = args.events as u64;
    while applied.load(std::sync::atomic::Ordering::Relaxed) < target {
        if started.elapsed() > Duration::from_secs(600) {
            return Err("did not finish in 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    runner.shutdown().await;
    let total: i64 = balances.lock().map_err(|_| "poisoned")?.values().sum();
    if total != args.events as i64 {
        return Err(format!("the balances sum to {total}, not {}", args.events));
    }
    println!(
        "w9-memory  events {}  batch {}  {:.2} s  {:.0} events/s",
        args.events,
        args.batch,
        secs,
        args.events as f64 / secs
    );
    Ok(())
}

/// The name of W9's balance projection (its checkpoint's).
pub(crate) const BALANCES_PROJECTION: &str = "w9";

/// W9 on PostgreSQL: one batched upsert per batch, in the checkpoint's transaction.
pub(crate) struct PgBalances {
    table: String,
}

impl PgBalances {
    /// Balances upserted into `table` (`account text PRIMARY KEY, balance bigint`).
    pub(crate) fn new(table: String) -> Self {
        Self { table }
    }
}

impl Projection for PgBalances {
    type Event = BankEvent;
    type Unit = PgUnit;

    fn name(&self) -> &str {
        BALANCES_PROJECTION
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["account"])
    }

    async fn apply(
        &self,
        unit: &mut PgUnit,
        _context: &ApplyContext,
        events: &[Recorded<BankEvent>],
    ) -> Result<(), HandlerError> {
        let client = unit.client()?;
        let upsert = client
            .prepare_cached(&format!(
                "INSERT INTO {t} (account, balance) SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT (account) DO UPDATE SET balance = {t}.balance + EXCLUDED.balance",
                t = self.table
            ))
            .await
            .map_err(HandlerError::transient)?;
        let (accounts, amounts): (Vec<&str>, Vec<i64>) = sums(events).into_iter().unzip();
        client
            .execute(&upsert, &[&accounts, &amounts])
            .await
            .map_err(HandlerError::transient)?;
        Ok(())
    }
}

pub(crate) async fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("psql")
        .args(["-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .await
        .map_err(|e| format!("cannot run psql: {}", ErrorChain(&e)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The hand-written rebuild through pgbench: rows upserted per second.
async fn w9_floor(url: &str, seconds: u64) -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("crossfold-w9-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| ErrorChain(&e).to_string())?;
    let schema = dir.join("schema.sql");
    std::fs::write(&schema, include_str!("../floor/schema.sql"))
        .map_err(|e| ErrorChain(&e).to_string())?;
    let script = dir.join("rebuild.sql");
    std::fs::write(&script, include_str!("../floor/rebuild.sql"))
        .map_err(|e| ErrorChain(&e).to_string())?;
    let out = tokio::process::Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", url, "-f"])
        .arg(&schema)
        .output()
        .await
        .map_err(|e| format!("cannot run psql: {}", ErrorChain(&e)))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    psql(
        url,
        "DROP TABLE IF EXISTS floor_balances; \
         CREATE TABLE floor_balances (account text PRIMARY KEY, balance bigint NOT NULL)",
    )
    .await?;
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", "1", "-T"])
        .arg(seconds.to_string())
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()
        .await
        .map_err(|e| format!("cannot run pgbench: {}", ErrorChain(&e)))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = psql(
        url,
        "DROP TABLE IF EXISTS floor_events, floor_streams, floor_balances",
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let tps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!(
                "pgbench printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    // Each transaction reads 1,000 events and upserts one row per account among them.
    Ok(tps * 1000.0)
}

pub(crate) async fn pg_store(url: &str, schema: &str, pool: usize) -> Result<PgEventStore, String> {
    let config = PgConfig::from_url(url)
        .map_err(|e| ErrorChain(&e).to_string())?
        .schema(schema)
        .pool_size(pool);
    let store = PgEventStore::connect(config)
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    store
        .migrate()
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    Ok(store)
}

async fn w9_postgres(args: &ProjectionsArgs) -> Result<(), String> {
    eprintln!(
        "w9-postgres: rebuild from position zero, {} events",
        args.events
    );
    let schema = format!("crossfold_w9_{}", std::process::id());
    let store = pg_store(&args.url, &schema, 8).await?;
    let result = w9_postgres_in(args, &store, &schema).await;
    if result.is_ok() {
        let _ = psql(
            &args.url,
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        )
        .await;
    } else {
        eprintln!("  schema {schema} kept for inspection");
    }
    result
}

async fn w9_postgres_in(
    args: &ProjectionsArgs,
    store: &PgEventStore,
    schema: &str,
) -> Result<(), String> {
    // The last event written, not the store's head: a transaction held open elsewhere on the
    // server can keep the head (what readers see) behind what was written.
    let last = load(store, args.events, args.accounts).await?;
    let (secs, total) = rebuild_balances(&args.url, store, schema, last, args.batch).await?;
    if total != args.events as i64 {
        return Err(format!("the balances sum to {total}, not {}", args.events));
    }
    let rate = args.events as f64 / secs;
    eprintln!("  projection: {rate:.0} events/s; now the hand-written rebuild through pgbench");
    let floor = w9_floor(&args.url, args.floor_seconds).await?;
    println!(
        "w9-postgres  events {}  batch {}  {:.1} s  {:.0} events/s  floor {:.0} events/s  ratio {:.2}",
        args.events,
        args.batch,
        secs,
        rate,
        floor,
        rate / floor
    );
    Ok(())
}

/// Rebuilds W9's balances (a table `w9_balances` in `schema`, created here) from position
/// zero until the checkpoint reaches `last`: the seconds it took and the balances' sum.
pub(crate) async fn rebuild_balances(
    url: &str,
    store: &PgEventStore,
    schema: &str,
    last: Position,
    batch: usize,
) -> Result<(f64, i64), String> {
    let table = format!("{schema}.w9_balances");
    psql(
        url,
        &format!("CREATE TABLE {table} (account text PRIMARY KEY, balance bigint NOT NULL)"),
    )
    .await?;
    let checkpoints = PgCheckpoints::new(store);
    let mut runner = ProjectionRunner::new(
        store.clone(),
        checkpoints.clone(),
        RunnerOptions::default().owner("bench"),
    );
    let started = Instant::now();
    runner.spawn(
        PgBalances {
            table: table.clone(),
        },
        ProjectionOptions::default().batch_size(batch),
    );
    let reached = wait_for_checkpoint(
        &checkpoints,
        BALANCES_PROJECTION,
        last,
        Duration::from_secs(1800),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    runner.shutdown().await;
    reached?;
    let total: i64 = psql(url, &format!("SELECT sum(balance) FROM {table}"))
        .await?
        .parse()
        .map_err(|_| "no sum")?;
    Ok((secs, total))
}

/// Waits until projection `name`'s checkpoint is at `position` or beyond, for at most
/// `within`.
pub(crate) async fn wait_for_checkpoint(
    checkpoints: &impl ProjectionControl,
    name: &str,
    position: Position,
    within: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let record = checkpoints
            .get(name)
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        if record.is_some_and(|r| r.position >= position) {
            return Ok(());
        }
        if started.elapsed() > within {
            return Err(format!(
                "{name} did not reach {position} within {}",
                humantime::format_duration(within)
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A unit that remembers when the events it applies were created.
struct TimedUnit {
    inner: PgUnit,
    created: Vec<Timestamp>,
}

/// Checkpoints that record, for every event a commit makes visible in the read model, how long
/// after the event's creation the commit finished.
#[derive(Clone)]
struct Timed {
    inner: PgCheckpoints,
    histogram: Arc<Mutex<Histogram<u64>>>,
}

impl ProjectionControl for Timed {
    async fn list(&self) -> Result<Vec<ProjectionRecord>, CheckpointError> {
        self.inner.list().await
    }
    async fn get(&self, name: &str) -> Result<Option<ProjectionRecord>, CheckpointError> {
        self.inner.get(name).await
    }
    async fn request(
        &self,
        name: &str,
        request: ControlRequest,
    ) -> Result<ProjectionRecord, CheckpointError> {
        self.inner.request(name, request).await
    }
    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, CheckpointError> {
        self.inner.dead_letters(name).await
    }
}

impl Leases for Timed {
    async fn acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, CheckpointError> {
        self.inner.acquire(name, owner, ttl).await
    }
    async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<ProjectionRecord>, CheckpointError> {
        self.inner.renew(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), CheckpointError> {
        self.inner.release(lease).await
    }
    async fn report(
        &self,
        lease: &Lease,
        status: &ProjectionStatus,
    ) -> Result<(), CheckpointError> {
        self.inner.report(lease, status).await
    }
}

impl UnitOfWork for Timed {
    type Unit = TimedUnit;

    async fn begin(&self, lease: &Lease) -> Result<TimedUnit, CheckpointError> {
        Ok(TimedUnit {
            inner: self.inner.begin(lease).await?,
            created: Vec::new(),
        })
    }
    async fn commit(
        &self,
        lease: &Lease,
        unit: TimedUnit,
        commit: CheckpointCommit,
    ) -> Result<(), CheckpointError> {
        self.inner.commit(lease, unit.inner, commit).await?;
        let now = Timestamp::now().unix_micros();
        let mut histogram = self
            .histogram
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for created in unit.created {
            let micros = u64::try_from(now - created.unix_micros()).unwrap_or(0);
            let _ = histogram.record(micros.max(1));
        }
        Ok(())
    }
}

/// W10's projection: W9's batched upsert, remembering event creation times.
struct LiveBalances {
    inner: PgBalances,
    measuring: Arc<std::sync::atomic::AtomicBool>,
}

impl Projection for LiveBalances {
    type Event = BankEvent;
    type Unit = TimedUnit;

    fn name(&self) -> &str {
        "w10"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["account"])
    }

    async fn apply(
        &self,
        unit: &mut TimedUnit,
        context: &ApplyContext,
        events: &[Recorded<BankEvent>],
    ) -> Result<(), HandlerError> {
        self.inner.apply(&mut unit.inner, context, events).await?;
        if self.measuring.load(std::sync::atomic::Ordering::Relaxed) {
            unit.created
                .extend(events.iter().map(|e| e.metadata.recorded_at));
        }
        Ok(())
    }
}

async fn w10(args: &ProjectionsArgs) -> Result<(), String> {
    eprintln!(
        "w10: projection lag while W1 runs at full speed ({} in flight, {})",
        args.concurrency,
        humantime::format_duration(args.duration)
    );
    let schema = format!("crossfold_w10_{}", std::process::id());
    let store = pg_store(&args.url, &schema, 32).await?;
    let result = w10_in(args, &store, &schema).await;
    if result.is_ok() {
        let _ = psql(
            &args.url,
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        )
        .await;
    } else {
        eprintln!("  schema {schema} kept for inspection");
    }
    result
}

async fn w10_in(args: &ProjectionsArgs, store: &PgEventStore, schema: &str) -> Result<(), String> {
    let table = format!("{schema}.w10_balances");
    psql(
        &args.url,
        &format!("CREATE TABLE {table} (account text PRIMARY KEY, balance bigint NOT NULL)"),
    )
    .await?;
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| ErrorChain(&e).to_string())?,
    ));
    let checkpoints = Timed {
        inner: PgCheckpoints::new(store),
        histogram: histogram.clone(),
    };
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut runner = ProjectionRunner::new(
        store.clone(),
        checkpoints,
        RunnerOptions::default().owner("bench"),
    );
    runner.spawn(
        LiveBalances {
            inner: PgBalances { table },
            measuring: measuring.clone(),
        },
        ProjectionOptions::default().batch_size(args.batch),
    );
    let mut options = LoadOptions::new(Workload::Deposit);
    options.duration = args.duration;
    options.warmup = Duration::from_secs(3);
    options.concurrency = args.concurrency;
    options.accounts = args.accounts;
    options.progress = false;
    options.store_name = "postgres".into();
    let flag = measuring.clone();
    let warmup = options.warmup;
    let arm = tokio::spawn(async move {
        // Account opening and the warm-up are not measured.
        tokio::time::sleep(Duration::from_secs(5) + warmup).await;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let report = crossfold_bench::run(store.clone(), &options)
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    arm.abort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    if !report.verification.passed {
        eprintln!("  W1 verification: {:?}", report.verification.problems);
    }
    let status = runner.status_of("w10");
    runner.shutdown().await;
    let h = histogram.lock().map_err(|_| "poisoned")?.clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "w10  W1 {:.0} commands/s ({} in flight, verified: {})  lag (event created -> read model committed) over {} events: p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
        report.operations as f64 / report.duration_secs.max(1e-9),
        args.concurrency,
        report.verification.passed,
        h.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    if let Some(s) = status {
        eprintln!("  projection at the end: {:?}", s.status.state);
    }
    if h.is_empty() {
        return Err("no event was measured".into());
    }
    Ok(())
}
