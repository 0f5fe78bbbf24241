//! A snapshot can make a command faster, never decide differently: random histories of
//! deposits and transfers (with streams found by discovery), random restarts (caches lost,
//! snapshots kept), random snapshot policies and random bumps of the state's version, run
//! once with snapshots and once without, on the memory store and on PostgreSQL, give the same
//! decisions and the same events.
//!
//! The events carry a digest of the state they were decided on — of every event folded, in
//! the order of its stream — so a state loaded from a snapshot that differs in anything (an
//! event missed or folded twice, a stream at the wrong version) shows in the log. Events of
//! different streams that no command ordered have no order of their own (their ids may fall
//! either way within a millisecond, differently in each run), so the digest chains each
//! stream's events and combines the streams' chains.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, EventStore, Fold, LogFilter, Position, Recorded,
    SnapshotPolicy, SnapshotState, SnapshotStore, StreamId, StreamRef,
};
use crossfold_executor::{Executor, Snapshots};
use crossfold_memory::MemoryStore;
use crossfold_postgres::{PgConfig, PgEventStore};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const ACCOUNTS: u8 = 4;

fn account(n: u8) -> StreamId {
    StreamId::new(format!("acct-{n}")).unwrap()
}

fn number(stream: &StreamId) -> u64 {
    stream.as_str()["acct-".len()..].parse().unwrap()
}

fn mix(digest: u64, value: u64) -> u64 {
    (digest ^ value)
        .wrapping_mul(0x0000_0100_0000_01b3)
        .rotate_left(17)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Money {
    Deposited {
        amount: u64,
        link: Option<u8>,
        digest: u64,
    },
    Withdrawn {
        amount: u64,
        digest: u64,
    },
}

impl DomainEvent for Money {
    fn event_type(&self) -> &'static str {
        match self {
            Money::Deposited { .. } => "Deposited",
            Money::Withdrawn { .. } => "Withdrawn",
        }
    }
}

fn digest_of(digest: u64, event: &Recorded<Money>) -> u64 {
    let amount = match event.event {
        Money::Deposited { amount, .. } => amount,
        Money::Withdrawn { amount, .. } => u64::MAX - amount,
    };
    mix(
        mix(
            mix(digest, number(&event.stream_id)),
            event.stream_version.get(),
        ),
        amount,
    )
}

/// One account's balance, folded per stream (`V` is the state's snapshot version).
#[derive(Clone, Default, Serialize, Deserialize)]
struct Account<const V: u32> {
    balance: u64,
    digest: u64,
}

impl<const V: u32> Fold<Money> for Account<V> {
    const PER_STREAM: bool = true;

    fn apply(&mut self, event: &Recorded<Money>) {
        match event.event {
            Money::Deposited { amount, .. } => self.balance += amount,
            Money::Withdrawn { amount, .. } => self.balance -= amount,
        }
        self.digest = digest_of(self.digest, event);
    }

    fn merge(&mut self, part: &Self) {
        self.balance += part.balance;
        self.digest ^= part.digest;
    }
}

impl<const V: u32> SnapshotState for Account<V> {
    const NAME: &'static str = "test.account";
    const VERSION: u32 = V;
}

/// Balances of every stream read, the streams they link to, and each stream's chained
/// digest.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Ledger<const V: u32> {
    balances: BTreeMap<u64, u64>,
    links: BTreeSet<u8>,
    chains: BTreeMap<u64, u64>,
}

impl<const V: u32> Ledger<V> {
    fn digest(&self) -> u64 {
        self.chains.iter().fold(0, |digest, (stream, chain)| {
            mix(mix(digest, *stream), *chain)
        })
    }
}

impl<const V: u32> Fold<Money> for Ledger<V> {
    fn apply(&mut self, event: &Recorded<Money>) {
        let balance = self.balances.entry(number(&event.stream_id)).or_default();
        match event.event {
            Money::Deposited { amount, link, .. } => {
                *balance += amount;
                self.links.extend(link);
            }
            Money::Withdrawn { amount, .. } => *balance -= amount,
        }
        let chain = self.chains.entry(number(&event.stream_id)).or_default();
        *chain = digest_of(*chain, event);
    }
}

impl<const V: u32> SnapshotState for Ledger<V> {
    const NAME: &'static str = "test.ledger";
    const VERSION: u32 = V;
}

struct Deposit<const V: u32> {
    to: u8,
    amount: u64,
    link: Option<u8>,
}

impl<const V: u32> Command for Deposit<V> {
    type Event = Money;
    type State = Account<V>;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        account(self.to)
    }

    fn handle<'x>(
        &self,
        state: &Account<V>,
        to: StreamRef<'x>,
        out: &mut Emit<'x, Money>,
    ) -> Result<(), CommandError> {
        out.append(
            to,
            Money::Deposited {
                amount: self.amount,
                link: self.link,
                digest: state.digest,
            },
        );
        Ok(())
    }
}

/// Moves money between two accounts, reading the accounts their deposits link to as well.
struct Transfer<const V: u32> {
    from: u8,
    to: u8,
    amount: u64,
}

impl<const V: u32> Command for Transfer<V> {
    type Event = Money;
    type State = Ledger<V>;
    type Streams = [StreamId; 2];

    fn streams(&self) -> [StreamId; 2] {
        [account(self.from), account(self.to)]
    }

    fn discover(&self, state: &Ledger<V>) -> Vec<StreamId> {
        state.links.iter().map(|&n| account(n)).collect()
    }

    fn handle<'x>(
        &self,
        state: &Ledger<V>,
        [from, to]: [StreamRef<'x>; 2],
        out: &mut Emit<'x, Money>,
    ) -> Result<(), CommandError> {
        let balance = state
            .balances
            .get(&u64::from(self.from))
            .copied()
            .unwrap_or(0);
        if balance < self.amount {
            return Err(CommandError::rejected(
                "insufficient_funds",
                format!("{balance} digest {}", state.digest()),
            ));
        }
        out.append(
            from,
            Money::Withdrawn {
                amount: self.amount,
                digest: state.digest(),
            },
        );
        out.append(
            to,
            Money::Deposited {
                amount: self.amount,
                link: None,
                digest: state.digest(),
            },
        );
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        to: u8,
        amount: u64,
        link: Option<u8>,
    },
    Transfer {
        from: u8,
        to: u8,
        amount: u64,
    },
    /// A new process: the caches are gone; the snapshots stay (written first or not).
    Restart {
        wait_for_snapshots: bool,
    },
    /// The state's snapshot version changes (between 1 and 2).
    Bump,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..ACCOUNTS, 1..50u64, prop::option::weighted(0.15, 0..ACCOUNTS))
            .prop_map(|(to, amount, link)| Op::Deposit { to, amount, link }),
        6 => (0..ACCOUNTS, 1..ACCOUNTS, 1..80u64).prop_map(|(from, step, amount)| Op::Transfer {
            from,
            to: (from + step) % ACCOUNTS,
            amount,
        }),
        2 => any::<bool>().prop_map(|wait_for_snapshots| Op::Restart { wait_for_snapshots }),
        1 => Just(Op::Bump),
    ]
}

/// How the run with snapshots keeps them.
#[derive(Clone, Copy, Debug)]
struct Setup {
    every: u64,
    caches: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (1..6u64, any::<bool>()).prop_map(|(every, caches)| Setup { every, caches })
}

fn executor<S: EventStore + SnapshotStore + Clone + 'static>(
    store: &S,
    snapshots: Option<Setup>,
) -> Executor<S> {
    let mut builder = Executor::builder(store.clone());
    if let Some(setup) = snapshots {
        let policy = SnapshotPolicy::every(setup.every);
        builder = builder.snapshots(
            Snapshots::new(store.clone())
                .keep::<Account<1>>(policy)
                .keep::<Account<2>>(policy)
                .keep::<Ledger<1>>(policy)
                .keep::<Ledger<2>>(policy),
        );
        if !setup.caches {
            builder = builder.state_cache_bytes(0).event_cache_bytes(0);
        }
    }
    builder.build()
}

/// What a command did: the events it wrote (stream, version, payload) or why it refused.
type Outcome = Result<Vec<(String, u64, String)>, String>;

async fn run<S: EventStore + SnapshotStore + Clone + 'static>(
    store: &S,
    ops: &[Op],
    snapshots: Option<Setup>,
) -> Vec<Outcome> {
    let mut process = executor(store, snapshots);
    let mut version = 1;
    let mut outcomes = Vec::new();
    for op in ops {
        let executed = match (op.clone(), version) {
            (Op::Deposit { to, amount, link }, 1) => {
                process.execute(Deposit::<1> { to, amount, link }).await
            }
            (Op::Deposit { to, amount, link }, _) => {
                process.execute(Deposit::<2> { to, amount, link }).await
            }
            (Op::Transfer { from, to, amount }, 1) => {
                process.execute(Transfer::<1> { from, to, amount }).await
            }
            (Op::Transfer { from, to, amount }, _) => {
                process.execute(Transfer::<2> { from, to, amount }).await
            }
            (Op::Restart { wait_for_snapshots }, _) => {
                if wait_for_snapshots {
                    process.snapshots_written().await;
                }
                process = executor(store, snapshots);
                continue;
            }
            (Op::Bump, _) => {
                version = 3 - version;
                continue;
            }
        };
        outcomes.push(match executed {
            Ok(executed) => Ok(executed
                .events
                .iter()
                .map(|e| {
                    (
                        e.stream_id.to_string(),
                        e.stream_version.get(),
                        String::from_utf8_lossy(&e.payload.bytes).into_owned(),
                    )
                })
                .collect()),
            Err(error) => Err(error.to_string()),
        });
    }
    process.snapshots_written().await;
    outcomes
}

/// Every event in the log, as (stream, version, payload).
async fn log_of<S: EventStore>(store: &S) -> Vec<(String, u64, String)> {
    store
        .read_all(Position::START, usize::MAX, &LogFilter::all())
        .await
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.stream_id.to_string(),
                e.stream_version.get(),
                String::from_utf8_lossy(&e.payload.bytes).into_owned(),
            )
        })
        .collect()
}

async fn compare<S: EventStore + SnapshotStore + Clone + 'static>(
    with: &S,
    without: &S,
    ops: &[Op],
    setup: Setup,
) -> Result<(), TestCaseError> {
    let snapshotted = run(with, ops, Some(setup)).await;
    let plain = run(without, ops, None).await;
    prop_assert_eq!(&snapshotted, &plain, "decisions differ with snapshots");
    prop_assert_eq!(log_of(with).await, log_of(without).await);
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn on_the_memory_store(ops in prop::collection::vec(op(), 1..60), setup in setup()) {
        runtime().block_on(compare(&MemoryStore::new(), &MemoryStore::new(), &ops, setup))?;
    }
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn fresh_pg() -> (PgEventStore, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!("cf_test_{secs}_snap{:06x}", fastrand::u32(..0xff_ffff));
    let config = PgConfig::from_url(&database_url())
        .unwrap_or_else(|e| panic!("DATABASE_URL: {e}"))
        .schema(&schema)
        .pool_size(4);
    let store = PgEventStore::connect(config).await.unwrap_or_else(|e| {
        panic!(
            "cannot use PostgreSQL at {}: {e}. These tests need a running server (DATABASE_URL).",
            database_url()
        )
    });
    store.migrate().await.unwrap();
    (store, schema)
}

/// Drops a test schema, trying again when the drop loses a deadlock (to autovacuum or the
/// store's listener); a schema left behind is cleaned up by later runs, not a failure.
async fn drop_schema(store: &PgEventStore, schema: &str) {
    for _ in 0..5 {
        let Ok(client) = store.pool().get().await else {
            continue;
        };
        if client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

proptest! {
    // Each case migrates two schemas: fewer cases than on memory, longer histories.
    #![proptest_config(ProptestConfig::with_cases(10))]

    #[test]
    fn on_postgres(ops in prop::collection::vec(op(), 20..80), setup in setup()) {
        runtime().block_on(async {
            let (with, with_schema) = fresh_pg().await;
            let (without, without_schema) = fresh_pg().await;
            let result = compare(&with, &without, &ops, setup).await;
            drop_schema(&with, &with_schema).await;
            drop_schema(&without, &without_schema).await;
            result
        })?;
    }
}
