//! `crossfold-bench tenants`: W1 (a deposit on one account) spread over many tenants on one
//! database — each tenant a schema of its own, every tenant's store on the connections of one
//! (`PgEventStore::tenant`) — against the same number of accounts in a single tenant, the two
//! layouts alternated. Prints each run's rate and latency, how long creating a tenant took,
//! the connections the server saw, and checks that each tenant's log holds exactly the events
//! written through it.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_bench::bank::{Deposit, Open, account_stream};
use crossfold_core::{ErrorChain, EventStore, LogFilter, Position, StreamId};
use crossfold_executor::Executor;
use crossfold_postgres::PgEventStore;

use crate::args::TenantsArgs;
use crate::cold_start::latency_histogram;
use crate::projections::{pg_store, psql};

/// A tenant's store, its executor, its accounts and what was written through it.
struct Tenant {
    store: PgEventStore,
    executor: Executor<PgEventStore>,
    accounts: Vec<StreamId>,
    /// Events written: an opening per account, then a deposit per command.
    events: AtomicU64,
}

pub(crate) async fn tenants(args: TenantsArgs) -> ExitCode {
    let prefix = format!("crossfold_tenants_{}", std::process::id());
    let result = run(&args, &prefix).await;
    let _ = psql(
        &args.url,
        &format!(
            "SET client_min_messages = warning; \
             DO $$ DECLARE s text; BEGIN \
               FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE '{prefix}%' LOOP \
                 EXECUTE format('DROP SCHEMA %I CASCADE', s); \
               END LOOP; END $$"
        ),
    )
    .await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tenants failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `n` tenants of `base`'s connections, migrated, their accounts opened; `accounts` in all.
async fn set_up(
    base: &PgEventStore,
    prefix: &str,
    n: usize,
    accounts: usize,
) -> Result<(Vec<Arc<Tenant>>, Duration), String> {
    let mut tenants = Vec::with_capacity(n);
    let mut migrating = Duration::ZERO;
    for t in 0..n {
        let store = base
            .tenant(&format!("{prefix}_{n}_{t}"))
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        let started = Instant::now();
        store
            .migrate()
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        migrating += started.elapsed();
        let executor = Executor::builder(store.clone()).build();
        let mine: Vec<StreamId> = (t..accounts)
            .step_by(n)
            .map(account_stream)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for account in &mine {
            executor
                .execute(Open {
                    account: account.clone(),
                    initial: 0,
                })
                .await
                .map_err(|e| ErrorChain(&e).to_string())?;
        }
        tenants.push(Arc::new(Tenant {
            store,
            executor,
            events: AtomicU64::new(mine.len() as u64),
            accounts: mine,
        }));
    }
    Ok((tenants, migrating / u32::try_from(n.max(1)).unwrap_or(1)))
}

/// One timed run of deposits on random accounts of random tenants; returns ops/s, p50 and
/// p99 in ms, and failures.
async fn drive(
    tenants: &[Arc<Tenant>],
    args: &TenantsArgs,
) -> Result<(f64, f64, f64, u64), String> {
    let end = Instant::now() + args.duration;
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let tenants = tenants.to_vec();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = latency_histogram()?;
            while Instant::now() < end {
                let tenant = &tenants[fastrand::usize(..tenants.len())];
                let account = tenant.accounts[fastrand::usize(..tenant.accounts.len())].clone();
                let started = Instant::now();
                match tenant
                    .executor
                    .execute(Deposit { account, amount: 1 })
                    .await
                {
                    Ok(_) => {
                        tenant.events.fetch_add(1, Ordering::Relaxed);
                        let micros =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        latency.record(micros.max(1)).map_err(|e| e.to_string())?;
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("tenants: a deposit failed: {}", ErrorChain(&e));
                    }
                }
            }
            Ok::<_, String>(latency)
        }));
    }
    let mut all = latency_histogram()?;
    for task in tasks {
        let h = task.await.map_err(|e| e.to_string())??;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1_000.0;
    Ok((
        all.len() as f64 / args.duration.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        failures.load(Ordering::Relaxed),
    ))
}

/// Every tenant's log holds exactly as many events as were written through it, each of them
/// on one of its own accounts.
async fn verify(tenants: &[Arc<Tenant>]) -> Result<bool, String> {
    let mut ok = true;
    for tenant in tenants {
        let mut after = Position::START;
        let mut seen = 0u64;
        loop {
            let batch = tenant
                .store
                .read_all(after, 10_000, &LogFilter::all().with_system_streams())
                .await
                .map_err(|e| ErrorChain(&e).to_string())?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            for event in &batch {
                if !tenant.accounts.contains(&event.stream_id) {
                    eprintln!(
                        "tenants: {} holds an event of {}, not one of its accounts",
                        tenant.store.schema(),
                        event.stream_id
                    );
                    ok = false;
                }
            }
            seen += batch.len() as u64;
        }
        let written = tenant.events.load(Ordering::Relaxed);
        if seen != written {
            eprintln!(
                "tenants: {} holds {seen} events, {written} were written",
                tenant.store.schema()
            );
            ok = false;
        }
    }
    Ok(ok)
}

async fn connections(url: &str) -> String {
    psql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'crossfold%'",
    )
    .await
    .unwrap_or_else(|e| e)
}

async fn run(args: &TenantsArgs, prefix: &str) -> Result<bool, String> {
    if args.tenants == 0 || args.accounts < args.tenants {
        return Err("--tenants must be at least 1 and at most --accounts".to_owned());
    }
    let base = pg_store(&args.url, &format!("{prefix}_base"), args.pool).await?;
    let started = Instant::now();
    let (one, _) = set_up(&base, prefix, 1, args.accounts).await?;
    let (many, per_tenant) = set_up(&base, prefix, args.tenants, args.accounts).await?;
    eprintln!(
        "tenants: set up 1 and {} tenants ({} accounts each way) in {:.1} s; migrating a tenant \
         took {:.0} ms on average",
        args.tenants,
        args.accounts,
        started.elapsed().as_secs_f64(),
        per_tenant.as_secs_f64() * 1_000.0
    );
    println!("layout       tenants  ops/s  p50 ms  p99 ms  failed  connections");
    let mut ok = true;
    for round in 0..args.rounds {
        let order: [(&str, &[Arc<Tenant>]); 2] = if round % 2 == 0 {
            [("one", &one), ("many", &many)]
        } else {
            [("many", &many), ("one", &one)]
        };
        for (name, tenants) in order {
            let _ = psql(&args.url, "CHECKPOINT").await;
            let (rate, p50, p99, failed) = drive(tenants, args).await?;
            ok &= failed == 0;
            println!(
                "{name:<12} {:>7}  {rate:>5.0}  {p50:>6.2}  {p99:>6.2}  {failed:>6}  {:>11}",
                tenants.len(),
                connections(&args.url).await
            );
        }
    }
    let verified = verify(&one).await? && verify(&many).await?;
    println!(
        "every tenant's log holds exactly its own events: {}",
        if verified { "yes" } else { "NO" }
    );
    Ok(ok && verified)
}
