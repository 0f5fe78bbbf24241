//! The seeded fault campaign: banking commands from many tasks through the executor, over a
//! store that injects conflicts, transient failures, timeouts and ambiguous commits (appends
//! written, then reported as failed), checked afterwards against the log.
//!
//! Every command runs with a correlation id of its own, which the executor copies into the
//! metadata of every event it writes, so the verification finds each command in the log and
//! counts how many times it was applied. None of the commands has an idempotency key: the
//! executor's own handling of appends in doubt is what keeps them from being applied twice.
//!
//! What the verification requires:
//! * a command that returned `Ok` was applied exactly once, and the events it returned are the
//!   ones stored; one that was refused or gave up was not applied; one whose error says it may
//!   have written ([`Error::may_have_written`]) was applied at most once;
//! * money is conserved: the accounts hold the opening balances plus the deposits and minus
//!   the withdrawals that were applied, and no balance ever goes negative;
//! * every stream's versions are gap-free in the log, and no event belongs to no command.
//!
//! The faults are drawn from generators seeded from [`CampaignOptions::seed`]. With one task the
//! sequence of store calls is fixed, so the same seed injects the same faults into the same
//! calls (compare [`CampaignReport::fault_log_digest`]); with many tasks each fault still draws
//! the same sequence of decisions, but which call (and command) meets which decision depends on
//! how the tasks interleave.
//!
//! ```
//! use crossfold_bench::campaign::{CampaignOptions, run_campaign};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let options = CampaignOptions::new(2_000, 7);
//! let report = run_campaign(crossfold_memory::MemoryStore::new(), &options).await.unwrap();
//! assert!(report.passed(), "{:?}", report.problems);
//! assert!(report.injected() > 0);
//! # });
//! ```

mod command;
mod faults;
mod verify;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{ErrorChain, EventStore, StoreError, StreamId, ValidationError};
use crossfold_executor::{Error, ExecutionContext, Executor, RetryPolicy};
use crossfold_testkit::FaultyStore;
use uuid::Uuid;

use crate::bank::{Open, account_stream};

use self::command::{Ending, Kind, Record, TaskResult, command_id, one_command};
use self::faults::{fault_names, faulty};
use self::verify::verify;

/// How often each fault strikes, as a probability per call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultRates {
    /// An append fails with a version conflict (nothing written).
    pub conflict: f64,
    /// An append fails as unavailable before reaching the store (nothing written).
    pub unavailable: f64,
    /// An append is rolled back for contention (nothing written).
    pub contention: f64,
    /// An append times out before reaching the store (nothing written).
    pub timeout: f64,
    /// An append is written, then reported as a lost connection (an ambiguous commit).
    pub lost_acknowledgement: f64,
    /// An append is written, then reported as timed out (an ambiguous commit).
    pub late_timeout: f64,
    /// A read fails as unavailable.
    pub read_unavailable: f64,
    /// A read times out.
    pub read_timeout: f64,
}

impl Default for FaultRates {
    fn default() -> Self {
        Self {
            conflict: 0.02,
            unavailable: 0.01,
            contention: 0.01,
            timeout: 0.005,
            lost_acknowledgement: 0.01,
            late_timeout: 0.005,
            read_unavailable: 0.01,
            read_timeout: 0.005,
        }
    }
}

/// How to run a campaign.
#[derive(Clone, Debug)]
pub struct CampaignOptions {
    /// Banking commands to execute (account openings not included).
    pub operations: u64,
    /// Seeds the faults and the tasks' choices of commands, accounts and amounts.
    pub seed: u64,
    /// Tasks executing commands concurrently.
    pub tasks: usize,
    /// Executors (each with its own caches, like processes) the commands are spread over.
    pub executors: usize,
    /// Accounts, opened before the run.
    pub accounts: usize,
    /// Opening balance of each account, in cents.
    pub opening_balance: i64,
    /// Attempts per command. Few, so that the retry policy does run out now and then, and
    /// commands end in doubt or give up, not only succeed or get refused.
    pub max_attempts: u32,
    /// The faults.
    pub rates: FaultRates,
    /// Whether to record every injection (see [`CampaignReport::fault_log_digest`]).
    pub log_faults: bool,
}

impl CampaignOptions {
    /// `operations` commands with `seed`: 16 tasks over 4 executors, 200 accounts, 3 attempts
    /// per command, the default fault rates, injections logged.
    pub fn new(operations: u64, seed: u64) -> Self {
        Self {
            operations,
            seed,
            tasks: 16,
            executors: 4,
            accounts: 200,
            opening_balance: 1_000,
            max_attempts: 3,
            rates: FaultRates::default(),
            log_faults: true,
        }
    }
}

/// What a campaign did and found.
#[derive(Clone, Debug, Default)]
pub struct CampaignReport {
    /// Commands executed.
    pub operations: u64,
    /// Commands that returned `Ok`.
    pub succeeded: u64,
    /// Commands refused by a business rule (insufficient funds).
    pub refused: u64,
    /// Commands that gave up because their streams kept changing (nothing written).
    pub gave_up: u64,
    /// Commands that gave up because the store kept failing in ways that write nothing
    /// (reads, appends rolled back or refused before they reached the store).
    pub gave_up_failing: u64,
    /// Commands whose error said they may have been applied.
    pub in_doubt: u64,
    /// Of those, how many the log shows applied.
    pub in_doubt_applied: u64,
    /// Any other error (a failure of the campaign).
    pub errors: u64,
    /// The first other error.
    pub first_error: Option<String>,
    /// Each fault, described, with how many times it was injected.
    pub faults: Vec<(String, u64)>,
    /// Store calls made through the faulty store.
    pub store_calls: u64,
    /// A digest of the log of injections (operation, call number, fault), if logged: equal for
    /// two runs that injected the same faults into the same calls.
    pub fault_log_digest: Option<u64>,
    /// Events in the log afterwards.
    pub events: u64,
    /// Money in the accounts afterwards.
    pub money: i64,
    /// Money the accounts should hold: opening balances plus applied deposits minus applied
    /// withdrawals.
    pub expected_money: i64,
    /// What the verification found wrong (empty when the campaign passed).
    pub problems: Vec<String>,
    /// Time the commands took (verification not included).
    pub elapsed: Duration,
}

impl CampaignReport {
    /// Whether every command's outcome matches the log and the books balance.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.errors == 0
    }

    /// Faults injected in all.
    pub fn injected(&self) -> u64 {
        self.faults.iter().map(|(_, n)| n).sum()
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "operations {}  ok {}  refused {}  gave up: conflicts {}, failures {}  \
             in doubt {} (applied {})  errors {}",
            self.operations,
            self.succeeded,
            self.refused,
            self.gave_up,
            self.gave_up_failing,
            self.in_doubt,
            self.in_doubt_applied,
            self.errors
        );
        let _ = writeln!(
            out,
            "store calls {}  faults injected {}  fault log digest {}",
            self.store_calls,
            self.injected(),
            self.fault_log_digest
                .map_or_else(|| "-".to_owned(), |d| format!("{d:016x}"))
        );
        for (fault, n) in &self.faults {
            let _ = writeln!(out, "  {n:>9}  {fault}");
        }
        let _ = writeln!(
            out,
            "events {}  money {} (expected {})  {:.1} s",
            self.events,
            self.money,
            self.expected_money,
            self.elapsed.as_secs_f64()
        );
        if let Some(e) = &self.first_error {
            let _ = writeln!(out, "first error: {e}");
        }
        if self.passed() {
            out.push_str("verification: passed\n");
        } else {
            out.push_str("verification: FAILED\n");
            for p in &self.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
        out
    }
}

/// Why a campaign could not run or be verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// Opening the accounts failed.
    #[error("opening the accounts failed: {0}")]
    Setup(#[source] Error),
    /// Reading the log back failed.
    #[error("reading the log back failed")]
    Verify(#[source] StoreError),
    /// A stream name could not be built.
    #[error(transparent)]
    Name(#[from] ValidationError),
}

/// Runs a campaign over `inner` wrapped in a fault-injecting store. `inner` should be empty.
pub async fn run_campaign<S: EventStore + Clone + 'static>(
    inner: S,
    options: &CampaignOptions,
) -> Result<CampaignReport, CampaignError> {
    let accounts: Vec<StreamId> = (0..options.accounts.max(2))
        .map(account_stream)
        .collect::<Result<_, _>>()?;
    let mut records: HashMap<Uuid, Record> = HashMap::new();

    // The accounts are opened before any fault is injected.
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let opener = Executor::new(inner.clone());
    for account in &accounts {
        let id = command_id(&mut rng);
        let done = opener
            .execute_with(
                Open {
                    account: account.clone(),
                    initial: options.opening_balance,
                },
                &ExecutionContext::new().correlation_id(id),
            )
            .await
            .map_err(CampaignError::Setup)?;
        records.insert(
            id,
            Record {
                kind: Kind::Open,
                amount: options.opening_balance,
                ending: Ending::Succeeded,
                first_event: done.events.first().map(|e| e.event_id),
            },
        );
    }

    let store = faulty(inner.clone(), options);
    let retry = RetryPolicy::default()
        .max_attempts(options.max_attempts)
        .base_delay(Duration::from_micros(20))
        .max_delay(Duration::from_millis(1));
    let executors: Vec<Executor<FaultyStore<S>>> = (0..options.executors.max(1))
        .map(|_| Executor::builder(store.clone()).retry(retry).build())
        .collect();
    let accounts = Arc::new(accounts);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..options.tasks.max(1) {
        let (executors, accounts, next) = (executors.clone(), accounts.clone(), next.clone());
        let total = options.operations;
        let seed = options
            .seed
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(t as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut out = TaskResult::default();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let (id, record) = one_command(&mut rng, &executors, &accounts).await;
                if let (Ending::Error, None) = (record.0.ending, &out.first_error) {
                    out.first_error = record.1;
                }
                out.records.push((id, record.0));
            }
            out
        }));
    }
    let mut report = CampaignReport::default();
    for task in tasks {
        match task.await {
            Ok(result) => {
                if report.first_error.is_none() {
                    report.first_error = result.first_error;
                }
                records.extend(result.records);
            }
            Err(e) => {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert(format!("a task failed: {}", ErrorChain(&e)));
            }
        }
    }
    report.elapsed = started.elapsed();
    for record in records.values() {
        if record.kind == Kind::Open {
            continue;
        }
        report.operations += 1;
        match record.ending {
            Ending::Succeeded => report.succeeded += 1,
            Ending::Refused => report.refused += 1,
            Ending::GaveUp => report.gave_up += 1,
            Ending::GaveUpFailing => report.gave_up_failing += 1,
            Ending::InDoubt => report.in_doubt += 1,
            Ending::Error => report.errors += 1,
        }
    }
    report.faults = store
        .injected_by_fault()
        .into_iter()
        .zip(fault_names())
        .map(|((_, n), name)| (name.to_owned(), n))
        .collect();
    report.store_calls = store.total_calls();
    if options.log_faults {
        let mut hasher = std::hash::DefaultHasher::new();
        store.log().hash(&mut hasher);
        report.fault_log_digest = Some(hasher.finish());
    }
    store.clear();
    verify(&inner, &records, &accounts, &mut report)
        .await
        .map_err(CampaignError::Verify)?;
    Ok(report)
}
