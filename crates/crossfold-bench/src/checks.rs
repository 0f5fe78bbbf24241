//! The `pairs` and `campaign` subcommands: long runs of the executor's correctness checks.

use std::process::ExitCode;

use crossfold_bench::campaign::{CampaignOptions, run_campaign};
use crossfold_bench::pairs::{PairsOptions, PairsReport, run_pairs};
use crossfold_memory::MemoryStore;
use crossfold_postgres::{PgConfig, PgEventStore};

use crate::{USAGE, error_chain, number};

fn usage_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("crossfold-bench: {e}\n\n{USAGE}");
    ExitCode::from(2)
}

fn text(v: Result<std::ffi::OsString, lexopt::Error>) -> Result<String, String> {
    v.map_err(|e| e.to_string())?
        .into_string()
        .map_err(|_| "argument is not UTF-8".to_string())
}

/// `crossfold-bench pairs ...`
pub(crate) async fn pairs() -> ExitCode {
    use lexopt::prelude::*;
    let mut options = PairsOptions::new(100_000);
    let mut store = "memory".to_owned();
    let mut url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut parser = lexopt::Parser::from_args(std::env::args_os().skip(2));
    let parsed: Result<(), String> = (|| {
        while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
            match arg {
                Long("store") => store = text(parser.value())?,
                Long("url") => url = text(parser.value())?,
                Long("executions") => options.executions = number(&text(parser.value())?)?,
                Long("tasks") => options.tasks = number(&text(parser.value())?)?,
                Long("executors") => options.executors = number(&text(parser.value())?)?,
                Long("pairs") => options.pairs = number(&text(parser.value())?)?,
                Long("seed") => options.seed = number(&text(parser.value())?)?,
                Long("per-stream") => options.per_stream = true,
                other => return Err(other.unexpected().to_string()),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        return usage_error(e);
    }
    eprintln!(
        "pairs on {store}: {} executions, {} tasks, {} executors, {} pairs, per_stream={}",
        options.executions, options.tasks, options.executors, options.pairs, options.per_stream
    );
    let result = match store.as_str() {
        "memory" => run_pairs(MemoryStore::new(), &options)
            .await
            .map_err(|e| error_chain(&e)),
        "postgres" => pairs_on_postgres(&url, &options).await,
        other => return usage_error(format!("--store must be memory or postgres, not {other:?}")),
    };
    match result {
        Ok(report) => {
            println!(
                "executions {}  written {}  refused on a state that never existed {}  \
                 gave up {}  errors {}  broken pairs {}  {:.1} s ({:.0} executions/s)",
                report.executions,
                report.written,
                report.impossible_refusals,
                report.gave_up,
                report.errors,
                report.broken_pairs.len(),
                report.elapsed.as_secs_f64(),
                report.executions as f64 / report.elapsed.as_secs_f64().max(1e-9)
            );
            for detail in report
                .first_impossible
                .iter()
                .chain(&report.first_error)
                .chain(&report.broken_pairs)
            {
                println!("  {detail}");
            }
            if report.passed() {
                println!("pairs: passed");
                ExitCode::SUCCESS
            } else {
                println!("pairs: FAILED");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("crossfold-bench pairs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A fresh schema for the run, dropped afterwards.
async fn pairs_on_postgres(url: &str, options: &PairsOptions) -> Result<PairsReport, String> {
    let schema = format!("crossfold_pairs_{}", std::process::id());
    let config = PgConfig::from_url(url)
        .map_err(|e| e.to_string())?
        .schema(schema.clone())
        .pool_size(options.tasks + 2);
    let store = PgEventStore::connect(config)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    let result = run_pairs(store.clone(), options)
        .await
        .map_err(|e| error_chain(&e));
    drop(store);
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
    result
}

/// `crossfold-bench campaign ...`
pub(crate) async fn campaign() -> ExitCode {
    use lexopt::prelude::*;
    let mut options = CampaignOptions::new(1_000_000, 1);
    let mut parser = lexopt::Parser::from_args(std::env::args_os().skip(2));
    let parsed: Result<(), String> = (|| {
        while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
            match arg {
                Long("operations") => options.operations = number(&text(parser.value())?)?,
                Long("seed") => options.seed = number(&text(parser.value())?)?,
                Long("tasks") => options.tasks = number(&text(parser.value())?)?,
                Long("executors") => options.executors = number(&text(parser.value())?)?,
                Long("accounts") => options.accounts = number(&text(parser.value())?)?,
                Long("attempts") => options.max_attempts = number(&text(parser.value())?)?,
                other => return Err(other.unexpected().to_string()),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        return usage_error(e);
    }
    eprintln!(
        "campaign: {} operations, seed {}, {} tasks over {} executors, {} accounts, \
         {} attempts per command",
        options.operations,
        options.seed,
        options.tasks,
        options.executors,
        options.accounts,
        options.max_attempts
    );
    match run_campaign(MemoryStore::new(), &options).await {
        Ok(report) => {
            print!("{}", report.render());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("crossfold-bench campaign: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
