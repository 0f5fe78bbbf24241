//! Run with: `cargo run --example monitoring --features monitoring`
//! On PostgreSQL: `cargo run --example monitoring --features monitoring,postgres -- --postgres URL`
//!
//! A host application as operators see it: it installs the Prometheus recorder, serves
//! `/metrics`, `/health/live` and `/health/ready` with one call, logs as JSON lines
//! (`--json-logs`; level from `CROSSFOLD_LOG`, e.g. `debug` to see every `crossfold.execute`
//! span with its command, streams, correlation id, actor, attempts and outcome), and runs
//! concurrent transfers between a few accounts — so conflicts, retries and refusals show up
//! in the metrics. Then it keeps serving until interrupted (or for `--exit-after SECONDS`).
//!
//! ```sh
//! cargo run --example monitoring --features monitoring -- --listen 127.0.0.1:9464 &
//! curl -s localhost:9464/metrics | promtool check metrics
//! curl -s localhost:9464/health/ready
//! ```
//!
//! Options: `--listen ADDR` (default `127.0.0.1:9464`; port 0 picks a free one),
//! `--postgres URL` (with the `postgres` feature; the URL's `?schema=` names the schema,
//! `monitoring_example` by default), `--commands N` (transfers to run, default 2000),
//! `--json-logs`, `--exit-after SECONDS`. The first line on stdout is
//! `listening on http://ADDR`, the second `workload done` once the transfers ran.

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use crossfold::core::{EventId, EventStore, StreamId};
use crossfold::executor::{Actor, ExecutionContext, Executor};
use crossfold::monitoring::{Endpoints, HealthRegistry, PrometheusHandle, install_prometheus};
use crossfold_bench::bank::{Open, Transfer, account_stream};
use tracing_subscriber::filter::LevelFilter;

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    listen: String,
    postgres: Option<String>,
    commands: usize,
    json_logs: bool,
    exit_after: Option<Duration>,
}

fn options() -> Result<Options, Failure> {
    let mut options = Options {
        listen: "127.0.0.1:9464".to_owned(),
        postgres: None,
        commands: 2000,
        json_logs: false,
        exit_after: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => options.listen = value()?,
            "--postgres" => options.postgres = Some(value()?),
            "--commands" => options.commands = value()?.parse()?,
            "--json-logs" => options.json_logs = true,
            "--exit-after" => options.exit_after = Some(Duration::from_secs(value()?.parse()?)),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(options)
}

/// Logs to stderr, as JSON lines or as text; `CROSSFOLD_LOG` sets the level (default info).
fn init_logging(json: bool) -> Result<(), Failure> {
    let level = match std::env::var("CROSSFOLD_LOG") {
        Ok(level) => LevelFilter::from_str(&level)?,
        Err(_) => LevelFilter::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let options = options()?;
    init_logging(options.json_logs)?;
    // Before any command runs: metric handles bind to the recorder installed when first used.
    let metrics = install_prometheus()?;
    match options.postgres.clone() {
        Some(url) => postgres(&url, metrics, &options).await,
        None => {
            let store = crossfold::memory::MemoryStore::new();
            let health = HealthRegistry::new().register("event_store", store.clone());
            run(store, health, metrics, &options).await
        }
    }
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str, metrics: PrometheusHandle, options: &Options) -> Result<(), Failure> {
    use crossfold::postgres::{PgConfig, PgEventStore, describe_metrics};
    describe_metrics();
    let mut config = PgConfig::from_url(url)?;
    if !url.contains("schema=") {
        config = config.schema("monitoring_example");
    }
    let store = PgEventStore::connect(config).await?;
    store.migrate().await?;
    // The store's own check covers the server, and the pool and listener listed apart say
    // at a glance which part is in trouble.
    let health = HealthRegistry::new()
        .register("event_store", store.clone())
        .register("pool", store.pool_health())
        .register("listener", store.listener_health());
    run(store, health, metrics, options).await
}

#[cfg(not(feature = "postgres"))]
async fn postgres(
    _url: &str,
    _metrics: PrometheusHandle,
    _options: &Options,
) -> Result<(), Failure> {
    Err("this build has no PostgreSQL support: run with `--features postgres`".into())
}

async fn run<S>(
    store: S,
    health: HealthRegistry,
    metrics: PrometheusHandle,
    options: &Options,
) -> Result<(), Failure>
where
    S: EventStore + Clone + 'static,
{
    let server = Endpoints::new(metrics)
        .health(health)
        .serve(options.listen.as_str())
        .await?;
    println!("listening on http://{}", server.local_addr());
    std::io::stdout().flush()?;
    tracing::info!(address = %server.local_addr(), "serving /metrics, /health/live, /health/ready");

    let executor = Executor::new(store);
    let accounts: Vec<StreamId> = (0..8)
        .map(|n| account_stream(n + fastrand::usize(..1_000_000) * 8))
        .collect::<Result<_, _>>()?;
    for account in &accounts {
        executor
            .execute(Open {
                account: account.clone(),
                initial: 1_000,
            })
            .await?;
    }
    // Four tasks moving money between eight accounts: they collide (conflicts and retries),
    // and now and then an account runs dry (a refusal).
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4 {
        let (executor, accounts) = (executor.clone(), accounts.clone());
        let commands = options.commands / 4;
        tasks.spawn(async move {
            let context = ExecutionContext::new().actor(Actor::new(format!("teller-{task}")));
            for _ in 0..commands {
                let from = fastrand::usize(..accounts.len());
                let to = (from + 1 + fastrand::usize(..accounts.len() - 1)) % accounts.len();
                let Ok(transfer) = StreamId::new(format!("transfer-{}", EventId::generate()))
                else {
                    continue;
                };
                let command = Transfer {
                    from: accounts[from].clone(),
                    to: accounts[to].clone(),
                    transfer,
                    amount: fastrand::i64(1..400),
                };
                if let Err(error) = executor.execute_with(command, &context).await
                    && error.rule().is_none()
                {
                    tracing::warn!(%error, "transfer failed");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    println!("workload done");
    std::io::stdout().flush()?;
    tracing::info!("workload done; serving until interrupted");

    match options.exit_after {
        Some(after) => {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        None => tokio::signal::ctrl_c().await?,
    }
    server.shutdown().await;
    Ok(())
}
