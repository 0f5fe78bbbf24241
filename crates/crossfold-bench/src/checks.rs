//! The `pairs` and `campaign` subcommands: long runs of the executor's correctness checks.

use std::process::ExitCode;

use crossfold_bench::campaign::{CampaignOptions, CampaignReport, run_campaign};
use crossfold_bench::pairs::{PairsOptions, PairsReport, run_pairs};
use crossfold_core::ErrorChain;
use crossfold_memory::MemoryStore;
use crossfold_postgres::{PgConfig, PgEventStore};

use crate::args::{CampaignArgs, PairsArgs, Store};

/// `crossfold-bench pairs ...`
pub(crate) async fn pairs(args: PairsArgs) -> ExitCode {
    let options = args.options();
    let store = args.store.name();
    eprintln!(
        "pairs on {store}: {} executions, {} tasks, {} executors, {} pairs, per_stream={}",
        options.executions, options.tasks, options.executors, options.pairs, options.per_stream
    );
    let result = match args.store {
        Store::Memory => run_pairs(MemoryStore::new(), &options)
            .await
            .map_err(|e| ErrorChain(&e).to_string()),
        Store::Postgres => pairs_on_postgres(&args.url, &options).await,
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
        .map_err(|e| ErrorChain(&e).to_string())?
        .schema(schema.clone())
        .pool_size(options.tasks + 2);
    let store = PgEventStore::connect(config)
        .await
        .map_err(|e| format!("cannot connect: {}", ErrorChain(&e)))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {}", ErrorChain(&e)))?;
    let result = run_pairs(store.clone(), options)
        .await
        .map_err(|e| ErrorChain(&e).to_string());
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
pub(crate) async fn campaign(args: CampaignArgs) -> ExitCode {
    let options = args.options();
    eprintln!(
        "campaign on {}{}: {} operations, seed {}, {} tasks over {} executors, {} accounts, \
         {} attempts per command",
        args.store.name(),
        if args.group_commit && args.store == Store::Postgres {
            " with group commit"
        } else {
            ""
        },
        options.operations,
        options.seed,
        options.tasks,
        options.executors,
        options.accounts,
        options.max_attempts
    );
    let result = match args.store {
        Store::Memory => run_campaign(MemoryStore::new(), &options)
            .await
            .map_err(|e| ErrorChain(&e).to_string()),
        Store::Postgres => campaign_on_postgres(&args, &options).await,
    };
    match result {
        Ok(report) => {
            print!("{}", report.render());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("crossfold-bench campaign: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A campaign in a fresh schema, dropped afterwards.
async fn campaign_on_postgres(
    args: &CampaignArgs,
    options: &CampaignOptions,
) -> Result<CampaignReport, String> {
    let schema = format!("crossfold_campaign_{}", std::process::id());
    let config = PgConfig::from_url(&args.url)
        .map_err(|e| ErrorChain(&e).to_string())?
        .schema(schema.clone())
        .pool_size(options.tasks + 2)
        .group_commit(args.group_commit);
    let store = PgEventStore::connect(config)
        .await
        .map_err(|e| format!("cannot connect: {}", ErrorChain(&e)))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migration failed: {}", ErrorChain(&e)))?;
    let result = run_campaign(store.clone(), options)
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
