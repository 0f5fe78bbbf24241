//! `--processes`: a workload run by several processes of this command at once against one
//! PostgreSQL schema, as several application nodes would run it.
//!
//! This process sets the schema and the data up, starts each share as a process of its own
//! (`crossfold-bench share ...`, hidden), and says go once all of them are connected, so that
//! their windows coincide. Each share prints `ready` on standard output when it is, waits for a
//! line on its standard input, runs, and prints its [`ShareReport`] as one line of JSON. This
//! process merges the shares (their latency histograms, not their percentiles) and verifies
//! everything all of them wrote.

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use crossfold_bench::{LoadOptions, LoadReport, Share, ShareReport};
use crossfold_core::ErrorChain;
use crossfold_postgres::{PgConfig, PgEventStore};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::args::{LoadArgs, ShareArgs};

/// How long a share may take to connect and say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The connections each of `processes` processes gets: a share of `--pool`, at least the
/// operations in flight plus 2.
pub(crate) fn pool_per_process(pool: usize, processes: usize, concurrency: usize) -> usize {
    (pool / processes.max(1)).max(concurrency + 2)
}

/// Runs `options.workload` in `options.processes` processes against a fresh schema, dropped
/// afterwards.
pub(crate) async fn run(args: &LoadArgs, options: &LoadOptions) -> Result<LoadReport, String> {
    let processes = options.processes.max(1);
    let schema = format!(
        "crossfold_bench_{}_{}p_{}",
        options.workload.id().replace('-', "_"),
        processes,
        std::process::id()
    );
    let result = run_in(args, options, &schema).await;
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

/// A store on the run's schema; `group_commit`: whether appends are grouped, and with how many
/// calls at most (`None`: the store's default).
async fn connect(
    url: &str,
    schema: &str,
    pool: usize,
    group_commit: Option<Option<usize>>,
) -> Result<PgEventStore, String> {
    let config = PgConfig::from_url(url)
        .map_err(|e| ErrorChain(&e).to_string())?
        .schema(schema)
        .pool_size(pool);
    let config = match group_commit {
        None => config,
        Some(None) => config.group_commit(true),
        Some(Some(calls)) => config.group_commit(true).group_commit_calls(calls),
    };
    PgEventStore::connect(config)
        .await
        .map_err(|e| format!("cannot connect: {}", ErrorChain(&e)))
}

async fn run_in(
    args: &LoadArgs,
    options: &LoadOptions,
    schema: &str,
) -> Result<LoadReport, String> {
    let processes = options.processes.max(1);
    // Set up, then let go of the connections: the shares need them.
    let set_up = {
        let store = connect(&args.url, schema, args.pool.clamp(2, 32), None).await?;
        store
            .migrate()
            .await
            .map_err(|e| format!("migration failed: {}", ErrorChain(&e)))?;
        crossfold_bench::set_up(store, options)
            .await
            .map_err(|e| ErrorChain(&e).to_string())?
    };

    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this program to start it again: {e}"))?;
    let pool = pool_per_process(args.pool, processes, options.concurrency);
    let mut shares = Vec::with_capacity(processes);
    for index in 0..processes {
        let mut command = Command::new(&exe);
        command
            .arg("share")
            .args(["--url", &args.url, "--schema", schema])
            .args(["--workload", options.workload.id()])
            .args(["--index", &index.to_string()])
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--accounts", &options.accounts.to_string()])
            .args(["--pool", &pool.to_string()])
            .args(["--duration", &format!("{}ms", options.duration.as_millis())])
            .args(["--warmup", &format!("{}ms", options.warmup.as_millis())]);
        if !options.serialize_in_process {
            command.arg("--no-serialize");
        }
        if !options.take_turns {
            command.arg("--no-turns");
        }
        if args.group_commit {
            command.arg("--group-commit");
            if let Some(calls) = args.group_commit_calls {
                command.args(["--group-commit-calls", &calls.to_string()]);
            }
        }
        command.args([
            "--concurrency-limit",
            &options.concurrency_limit.to_string(),
        ]);
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start share {index}: {e}"))?;
        shares.push(Running::new(index, child)?);
    }
    for share in &mut shares {
        share.ready().await?;
    }
    for share in &mut shares {
        share.go().await?;
    }
    let mut reports = Vec::with_capacity(processes);
    for share in shares {
        reports.push(share.report().await?);
    }

    let store = connect(&args.url, schema, 4, None).await?;
    crossfold_bench::combine(&store, options, &set_up, reports)
        .await
        .map_err(|e| ErrorChain(&e).to_string())
}

/// A share's process, as this process talks to it.
struct Running {
    index: usize,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Running {
    fn new(index: usize, mut child: Child) -> Result<Self, String> {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("share {index}: no standard output"))?;
        Ok(Self {
            index,
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The share's next line, or why there is none.
    async fn line(&mut self) -> Result<String, String> {
        match self.lines.next_line().await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => {
                let status = self.child.wait().await.map_err(|e| e.to_string())?;
                Err(format!("share {} ended ({status})", self.index))
            }
            Err(e) => Err(format!("share {}: {e}", self.index)),
        }
    }

    async fn ready(&mut self) -> Result<(), String> {
        match tokio::time::timeout(READY_WITHIN, self.line()).await {
            Ok(Ok(line)) if line == "ready" => Ok(()),
            Ok(Ok(line)) => Err(format!("share {} said {line:?}, not ready", self.index)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "share {} was not ready within {READY_WITHIN:?}",
                self.index
            )),
        }
    }

    async fn go(&mut self) -> Result<(), String> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| format!("share {}: no standard input", self.index))?;
        stdin
            .write_all(b"go\n")
            .await
            .map_err(|e| format!("share {}: {e}", self.index))?;
        stdin
            .flush()
            .await
            .map_err(|e| format!("share {}: {e}", self.index))
    }

    async fn report(mut self) -> Result<ShareReport, String> {
        let line = self.line().await?;
        let report = serde_json::from_str(&line)
            .map_err(|e| format!("share {} answered {line:?}: {e}", self.index))?;
        let status = self.child.wait().await.map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("share {} ended ({status})", self.index));
        }
        Ok(report)
    }
}

/// `crossfold-bench share ...`: one share, run as the parent process says.
pub(crate) async fn share(args: ShareArgs) -> ExitCode {
    match run_share(args).await {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("crossfold-bench share: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("crossfold-bench share: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_share(args: ShareArgs) -> Result<ShareReport, String> {
    let group_commit = args.group_commit.then_some(args.group_commit_calls);
    let store = connect(&args.url, &args.schema, args.pool, group_commit).await?;
    let mut options = LoadOptions::new(args.workload);
    options.duration = args.duration;
    options.warmup = args.warmup;
    options.concurrency = args.concurrency;
    options.accounts = args.accounts;
    options.store_name = "postgres".into();
    options.serialize_in_process = !args.no_serialize;
    options.take_turns = !args.no_turns;
    options.concurrency_limit = args.concurrency_limit;
    let start = async {
        println!("ready");
        let read = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await;
        match read {
            Ok(Ok(n)) if n > 0 => Ok(()),
            Ok(Ok(_)) => Err("the parent process went away".to_owned()),
            Ok(Err(e)) => Err(format!("cannot read the go: {e}")),
            Err(e) => Err(format!("cannot read the go: {e}")),
        }
    };
    crossfold_bench::run_share(store, &options, Share { index: args.index }, start)
        .await
        .map_err(|e| ErrorChain(&e).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_gets_a_share_of_the_pool_but_enough_for_its_operations() {
        assert_eq!(pool_per_process(32, 1, 16), 32);
        assert_eq!(pool_per_process(32, 4, 16), 18);
        assert_eq!(pool_per_process(128, 4, 16), 32);
        assert_eq!(pool_per_process(32, 4, 1), 8);
    }
}
