//! A PostgreSQL projection and the child process that runs it, for the tests that kill, freeze
//! and restart projection processes. The test binaries run without the libtest harness: run
//! with `--child` they are the child.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crossfold::core::{
    AppendRequest, Backoff, DomainEvent, EventData, EventStore, ExpectedVersion, Jitter, LogFilter,
    Payload, Position, Recorded, StreamId,
};
use crossfold::postgres::{PgCheckpoints, PgConfig, PgEventStore, PgUnit};
use crossfold::projections::{
    ApplyContext, HandlerError, Projection, ProjectionOptions, ProjectionRunner, RunnerOptions,
};
use serde::{Deserialize, Serialize};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deposited {
    pub amount: i64,
}

impl DomainEvent for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

/// Balances per account, with how many events each row applied: an event applied twice shows
/// as a wrong balance and a count above the log's.
pub struct Ledger {
    pub schema: String,
    /// A pause after the first write of each batch, so that kills land mid-batch.
    pub slow: Duration,
}

impl Projection for Ledger {
    type Event = Deposited;
    type Unit = PgUnit;

    fn name(&self) -> &str {
        "ledger"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["account"])
    }

    async fn apply(
        &self,
        unit: &mut PgUnit,
        context: &ApplyContext,
        events: &[Recorded<Deposited>],
    ) -> Result<(), HandlerError> {
        let client = unit.client()?;
        let upsert = client
            .prepare_cached(&format!(
                "INSERT INTO \"{}\".ledger (generation, account, balance, applied) \
                 VALUES ($1, $2, $3, 1) ON CONFLICT (generation, account) DO UPDATE \
                 SET balance = ledger.balance + EXCLUDED.balance, applied = ledger.applied + 1",
                self.schema
            ))
            .await
            .map_err(HandlerError::transient)?;
        let generation = i64::try_from(context.generation).map_err(HandlerError::rejected)?;
        for (i, e) in events.iter().enumerate() {
            client
                .execute(
                    &upsert,
                    &[&generation, &e.stream_id.as_str(), &e.event.amount],
                )
                .await
                .map_err(HandlerError::transient)?;
            if i == 0 && !self.slow.is_zero() {
                tokio::time::sleep(self.slow).await;
            }
        }
        Ok(())
    }

    async fn reset(&self, unit: &mut PgUnit, context: &ApplyContext) -> Result<(), HandlerError> {
        self.delete(unit, context.generation).await
    }

    async fn retire(
        &self,
        unit: &mut PgUnit,
        _context: &ApplyContext,
        old_generation: u64,
    ) -> Result<(), HandlerError> {
        self.delete(unit, old_generation).await
    }
}

impl Ledger {
    async fn delete(&self, unit: &mut PgUnit, generation: u64) -> Result<(), HandlerError> {
        let generation = i64::try_from(generation).map_err(HandlerError::rejected)?;
        unit.client()?
            .execute(
                &format!(
                    "DELETE FROM \"{}\".ledger WHERE generation = $1",
                    self.schema
                ),
                &[&generation],
            )
            .await
            .map_err(HandlerError::transient)?;
        Ok(())
    }
}

pub fn config(schema: &str) -> PgConfig {
    PgConfig::from_url(&database_url())
        .unwrap_or_else(|e| panic!("DATABASE_URL: {e}"))
        .schema(schema)
        .pool_size(4)
}

/// A migrated store in a fresh schema with the ledger table.
pub async fn fresh(prefix: &str) -> (PgEventStore, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!("cf_test_{secs}_{prefix}{:06x}", fastrand::u32(..0xff_ffff));
    let store = PgEventStore::connect(config(&schema)).await.unwrap_or_else(|e| {
        panic!(
            "cannot use PostgreSQL at {}: {e}. These tests need a running server (DATABASE_URL).",
            database_url()
        )
    });
    store.migrate().await.unwrap();
    store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".ledger (generation bigint, account text, \
             balance bigint NOT NULL, applied bigint NOT NULL, PRIMARY KEY (generation, account))"
        ))
        .await
        .unwrap();
    (store, schema)
}

/// The `amount` column of `table`, in the order of its `position` column.
pub async fn amounts_in(store: &PgEventStore, table: &str) -> Vec<i64> {
    let client = store.pool().get().await.unwrap();
    client
        .query(
            &format!("SELECT amount FROM {table} ORDER BY position"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn drop_schema(store: &PgEventStore, schema: &str) {
    let client = store.pool().get().await.unwrap();
    let _ = client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await;
}

pub fn deposit(amount: i64) -> EventData {
    EventData::new(
        "Deposited",
        Payload::json(format!(r#"{{"amount":{amount}}}"#)),
    )
}

pub async fn append_random(store: &PgEventStore, rng: &mut fastrand::Rng, events: usize) {
    let account = StreamId::new(format!("account-{}", rng.u32(0..10))).unwrap();
    let batch = (0..events).map(|_| deposit(rng.i64(1..100))).collect();
    store
        .append(AppendRequest::new().stream(account, ExpectedVersion::Any, batch))
        .await
        .unwrap();
}

/// The position of the last event written, read from the table: other sessions' open
/// transactions may keep it from being visible for a while, but it is there. (Test schemas
/// never change log epoch, so a stored transaction id is a position's commit half.)
pub async fn last_written(store: &PgEventStore) -> Position {
    let client = store.pool().get().await.unwrap();
    let row = client
        .query_opt(
            &format!(
                "SELECT transaction_id::text, sequence FROM \"{}\".events \
                 ORDER BY transaction_id DESC, sequence DESC LIMIT 1",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    row.map_or(Position::START, |r| {
        let commit: String = r.get(0);
        let sequence: i64 = r.get(1);
        Position::new(commit.parse().unwrap(), sequence as u64)
    })
}

/// The fold of the whole log, read back from the store once everything written is visible:
/// balance and count per account, and the last position.
pub async fn fold(store: &PgEventStore) -> (BTreeMap<String, (i64, i64)>, Position) {
    let written = last_written(store).await;
    store
        .wait_for_position(written, Duration::from_secs(60))
        .await
        .unwrap();
    let mut balances: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut after = Position::START;
    let filter = LogFilter::categories(["account"]);
    loop {
        let page = store.read_all(after, 1000, &filter).await.unwrap();
        let Some(last) = page.last() else {
            return (balances, after);
        };
        after = last.position;
        for e in &page {
            let d: Deposited = serde_json::from_slice(&e.payload.bytes).unwrap();
            let entry = balances.entry(e.stream_id.to_string()).or_default();
            entry.0 += d.amount;
            entry.1 += 1;
        }
    }
}

/// The read model of generation 1: balance and applied count per account.
pub async fn model(store: &PgEventStore, schema: &str) -> BTreeMap<String, (i64, i64)> {
    model_of(store, schema, 1).await
}

/// The read model of a generation.
pub async fn model_of(
    store: &PgEventStore,
    schema: &str,
    generation: i64,
) -> BTreeMap<String, (i64, i64)> {
    let client = store.pool().get().await.unwrap();
    client
        .query(
            &format!(
                "SELECT account, balance, applied FROM \"{schema}\".ledger WHERE generation = $1"
            ),
            &[&generation],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// The runner options of the children: short leases, frequent control.
pub fn runner_options(owner: &str, ttl: Duration) -> RunnerOptions {
    RunnerOptions::default()
        .owner(owner)
        .lease_ttl(ttl)
        .control_interval(Duration::from_millis(100))
        .status_interval(Duration::from_millis(200))
        .retry_backoff(
            Backoff::new(Duration::from_millis(20), Duration::from_millis(200))
                .jitter(Jitter::Equal),
        )
}

/// Starts this test binary as a child running the ledger projection.
pub fn spawn_child(schema: &str, owner: &str, ttl: Duration, slow: Duration) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .env("CF_CHILD_SCHEMA", schema)
        .env("CF_CHILD_OWNER", owner)
        .env("CF_CHILD_TTL_MS", ttl.as_millis().to_string())
        .env("CF_CHILD_SLOW_MS", slow.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The child: runs the ledger projection until killed, printing `owned` and `lost` as its
/// lease comes and goes, and `fenced` when a commit of it is refused.
pub fn child_main() {
    let env = |k: &str| std::env::var(k).unwrap();
    let schema = env("CF_CHILD_SCHEMA");
    let owner = env("CF_CHILD_OWNER");
    let ttl = Duration::from_millis(env("CF_CHILD_TTL_MS").parse().unwrap());
    let slow = Duration::from_millis(env("CF_CHILD_SLOW_MS").parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = PgEventStore::connect(config(&schema)).await.unwrap();
        let checkpoints = PgCheckpoints::new(&store).unit_idle_timeout(ttl / 2);
        let mut runner = ProjectionRunner::new(store, checkpoints, runner_options(&owner, ttl));
        runner.spawn(
            Ledger {
                schema: schema.clone(),
                slow,
            },
            ProjectionOptions::default().batch_size(20),
        );
        let mut owned = false;
        loop {
            let now = runner.status_of("ledger").map(|s| s.owned).unwrap_or(false);
            if now != owned {
                owned = now;
                println!("{}", if owned { "owned" } else { "lost" });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// Drops its schema when dropped — also when the test panics.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.0.clone();
        // A thread with a runtime of its own: the test's runtime cannot be blocked on.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        });
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| {
                    let _ = cleanup.join();
                });
            }
            Ok(_) => {}
            Err(_) => {
                let _ = cleanup.join();
            }
        }
    }
}
