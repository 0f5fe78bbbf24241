//! Banking commands from many tasks through the executor, over a store that injects conflicts,
//! transient failures, timeouts and ambiguous commits: every command's outcome matches the log
//! (none applied twice, none applied that said it was not), money is conserved, versions are
//! gap-free — and the same seed injects the same faults; on PostgreSQL too, with each append
//! alone and with group commit. The 1,000,000-operation run is `crossfold-bench campaign`
//! (figures in docs/benchmarks.md).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests report failures by panicking"
)]

#[allow(dead_code, reason = "this file uses the broken stores only")]
mod common;

use std::collections::{HashMap, HashSet};

use crossfold_bench::campaign::{CampaignOptions, run_campaign};
use crossfold_core::{EventStore, LogFilter, Position};
use crossfold_memory::MemoryStore;
use crossfold_postgres::{PgConfig, PgEventStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_campaign_keeps_the_books() {
    let options = CampaignOptions::new(20_000, 42);
    let report = run_campaign(MemoryStore::new(), &options).await.unwrap();
    assert!(report.passed(), "{}", report.render());
    assert_eq!(report.operations, 20_000);
    for (fault, injected) in &report.faults {
        assert!(*injected > 0, "{fault} never struck:\n{}", report.render());
    }
    // Commands met every ending the campaign tells apart.
    assert!(
        report.succeeded > 0 && report.refused > 0,
        "{}",
        report.render()
    );
    assert!(
        report.gave_up + report.gave_up_failing + report.in_doubt > 0,
        "{}",
        report.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_injects_the_same_faults() {
    let run = |seed| async move {
        let mut options = CampaignOptions::new(3_000, seed);
        // One task: the store sees the same calls in the same order each time.
        options.tasks = 1;
        run_campaign(MemoryStore::new(), &options).await.unwrap()
    };
    let (first, again, other) = (run(5).await, run(5).await, run(6).await);
    for report in [&first, &again, &other] {
        assert!(report.passed(), "{}", report.render());
    }
    assert!(first.fault_log_digest.is_some());
    assert_eq!(first.fault_log_digest, again.fault_log_digest);
    assert_eq!(first.faults, again.faults);
    assert_eq!(first.store_calls, again.store_calls);
    assert_eq!(
        (
            first.succeeded,
            first.refused,
            first.gave_up,
            first.gave_up_failing,
            first.in_doubt
        ),
        (
            again.succeeded,
            again.refused,
            again.gave_up,
            again.gave_up_failing,
            again.in_doubt
        )
    );
    assert_eq!(first.money, again.money);
    assert_ne!(first.fault_log_digest, other.fault_log_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_applied_twice_fails_the_campaign() {
    // The store writes the first deposit twice (a second event of the same command).
    let store = common::BrokenStore::new(common::Flaw::DuplicatesAnEvent, "Deposited");
    let report = run_campaign(store.clone(), &CampaignOptions::new(500, 1))
        .await
        .unwrap();
    assert!(store.struck());
    assert!(!report.passed());
    // Which command's deposit is written twice depends on how the tasks interleave: a deposit
    // then shows applied twice, a transfer (three events) leaves four events in the log.
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("applied 2 times") || p.contains("(Transfer) left 4 events")),
        "{}",
        report.render()
    );
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Transactions of the log that hold the events of more than one command (one correlation
/// id per command): the work of group commit.
async fn shared_transactions(store: &PgEventStore) -> usize {
    let mut commands: HashMap<u64, HashSet<uuid::Uuid>> = HashMap::new();
    let mut after = Position::START;
    loop {
        let page = store
            .read_all(after, 10_000, &LogFilter::all())
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            if let Some(command) = event.metadata.correlation_id {
                commands
                    .entry(event.position.commit())
                    .or_default()
                    .insert(command);
            }
        }
    }
    commands.values().filter(|c| c.len() > 1).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_on_postgres_keeps_the_books_with_and_without_group_commit() {
    for group_commit in [false, true] {
        let url = database_url();
        let schema = format!("cf_test_campaign_{}_{group_commit}", std::process::id());
        let config = PgConfig::from_url(&url)
            .unwrap()
            .schema(&schema)
            .pool_size(18)
            .group_commit(group_commit)
            .group_commit_calls(2);
        let store = PgEventStore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url} ({e}); set DATABASE_URL"));
        store.migrate().await.unwrap();
        let report = run_campaign(store.clone(), &CampaignOptions::new(3_000, 11))
            .await
            .unwrap();
        let shared = shared_transactions(&store).await;
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .unwrap();
        assert!(
            report.passed(),
            "group commit {group_commit}:\n{}",
            report.render()
        );
        assert_eq!(report.operations, 3_000);
        assert!(report.injected() > 0, "{}", report.render());
        // Sixteen tasks, and two calls at once: appends queue and share transactions.
        if group_commit {
            assert!(shared > 0, "no two commands ever shared a transaction");
        } else {
            assert_eq!(
                shared, 0,
                "commands shared a transaction without group commit"
            );
        }
    }
}
