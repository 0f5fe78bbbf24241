//! # crossfold-postgres
//!
//! The PostgreSQL [`EventStore`](crossfold_core::EventStore) for Crossfold.
//!
//! * **Atomic multi-stream appends in one round trip.** An append — any number of streams and
//!   events — is one call of a PL/pgSQL function taking arrays, through a prepared statement.
//!   Stream rows are locked in sorted order (no deadlocks); streams that are only checked are
//!   locked `FOR SHARE`, so commands that merely read the same stream do not serialize each
//!   other. A failed condition writes nothing and names every conflicting stream.
//!   The commonest append — events for one stream, nothing else checked — has a leaner
//!   function of its own.
//! * **Group commit** (off by default, [`PgConfig::group_commit`]): appends that arrive while
//!   the store's calls are busy go together in one call and one commit, each still all or
//!   nothing on its own (a subtransaction each); a lone append is sent at once.
//! * **A commit-safe global log.** Each event carries its writing transaction's id (`xid8`) and
//!   a sequence number; the log is ordered by that pair and shows only rows of transactions
//!   below the oldest *append* of this store still running, so a checkpoint never skips an
//!   event that commits late. Appends announce themselves before they get a transaction id, so
//!   readers pass the writing transactions that are not appends — in other databases, on other
//!   tables, idle in transaction — and only a long-open append delays subscriptions;
//!   [`PgHealth`] reports it, projections report `waiting` with its pid. A read of the log
//!   waits briefly (up to [`PgConfig::visibility_wait`]) for appends that were already running
//!   when it started, so it sees everything committed before it (read-your-writes).
//! * **Live subscriptions.** Subscribers are woken through `LISTEN`/`NOTIFY` — sent after the
//!   append commits and coalesced, never inside the append transaction — with polling as the
//!   fallback. The listener reconnects on its own; a lost notification is a delay, not a loss.
//! * **Positions survive restores and failovers.** A copy of the data into a cluster with a
//!   lower transaction counter (dump and restore, logical replication), a point-in-time
//!   restore, a failover or a counter moved back would hand out transaction ids behind
//!   subscribers' checkpoints. The store notices — on every new connection, before each
//!   session's first append, in [`PgEventStore::migrate`] — and starts a new *log epoch* whose
//!   positions lie beyond everything before ([`PgEventStore::check_log_order`] runs the check
//!   by hand). Appends keep `synchronous_commit` on for their own transaction.
//! * **Least privilege.** An owner role migrates; an application role, given its rights by
//!   [`PgEventStore::grant_access`], reads and appends through `SECURITY DEFINER` functions
//!   with a fixed `search_path` and can write no table directly. Events are immutable and
//!   stream rows cannot be removed, for everyone, by triggers that fire `ALWAYS`.
//! * **Migrations** are the numbered SQL files of the repository's `migrations/` directory,
//!   embedded in the crate and applied by [`PgEventStore::migrate`]: each in a transaction of
//!   its own with a lock timeout, or outside one for `CREATE INDEX CONCURRENTLY`; under an
//!   advisory lock; with comment-insensitive checksums; accepting schemas migrated by newer
//!   builds unless they are incompatible. With nothing to apply it only reads, so the
//!   application role may call it ([`PgEventStore::check_schema`] only checks). Each store
//!   lives in its own schema (any name, reserved words included), so one database can hold
//!   several.
//! * **O(batch) reads of the log**, unfiltered or filtered by stream, category
//!   ([`StreamId::category`](crossfold_core::StreamId::category)) or event type: each filter
//!   reads through an index that orders its key's events by position, so catching up on N
//!   events costs O(N) however far behind a subscriber is. The stream, category and type
//!   indexes are optional ([`ReadIndex`]), because every append pays for each index per event:
//!   a store has them where a subscription or projection filters that way
//!   ([`PgEventStore::create_read_index`], `crossfold indexes create`). Without one, a read by
//!   category or type scans the log from its position, checking the filter (O(batch) for a
//!   category or type that is a fair share of the log), and a read by stream reads the whole
//!   stream through the primary key.
//! * **Undecodable events do not stop readers for good.** A stored row the store cannot
//!   decode fails reads with a [`PgUndecodableEvent`] naming its position;
//!   [`PgEventStore::quarantine`] sets it aside and reads skip it from then on.
//! * **Snapshots of command state** ([`SnapshotStore`](crossfold_core::SnapshotStore)): the
//!   executor's folded states, kept in the store's schema under the state's name and the
//!   command's streams, saved through a `SECURITY DEFINER` function that refuses one claiming a
//!   version beyond its stream's. Only a shortcut: every append still checks its versions. The
//!   application role saves and reads them; dropping them (`crossfold snapshots drop`) is the
//!   schema owner's.
//! * **Errors are classified** for retrying: serialization failures and deadlocks are
//!   `Contention`, statement timeouts `Timeout`, lost or refused connections `Unavailable`.
//! * **Observable.** Every call records the common store metrics
//!   ([`crossfold_core::metrics::STORE_METRICS`], label `store="postgres"`), and the pool, the
//!   oldest open append, the oldest open transaction and a standby's replay lag are gauges
//!   ([`POOL_CONNECTIONS`], [`OLDEST_APPEND_AGE_SECONDS`], [`OLDEST_TRANSACTION_AGE_SECONDS`],
//!   [`REPLAY_LAG_SECONDS`]).
//!   Recording is a no-op until the application installs a `metrics` recorder; install it
//!   before the store's first call, then call [`describe_metrics`] for help texts. The store is
//!   a [`HealthCheck`](crossfold_core::HealthCheck): unhealthy when the server does not answer,
//!   degraded when the pool is exhausted or an append has been open (or the log's visibility
//!   horizon has stood still, or a standby's replay has lagged) longer than
//!   [`PgConfig::long_transaction_threshold`].
//! * **Reads from a hot standby.** A store connected to a streaming-replication standby serves
//!   stream reads, log reads and subscriptions (never past an append open on the primary: the
//!   visibility horizon holds there too) and polls instead of listening; its writes fail with
//!   [`PgReadOnly`]. Commands go to a store on the primary; a projection reads through the
//!   standby's store and keeps its checkpoints on the primary's. See `docs/operations.md`.
//!
//! The PostgreSQL settings each guarantee needs, the two-role setup and what to do after a
//! restore are in the repository's `docs/operations.md`.
//!
//! ```no_run
//! use crossfold_core::{AppendRequest, EventData, EventStore, ExpectedVersion, Payload, StreamId};
//! use crossfold_postgres::{PgConfig, PgEventStore};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PgConfig::from_url("postgres://postgres@127.0.0.1:5432/postgres?schema=bank")?;
//! let store = PgEventStore::connect(config).await?;
//! store.migrate().await?;
//!
//! let account = StreamId::new("account-42")?;
//! let deposited = EventData::new("MoneyDeposited", Payload::json(&br#"{"amount":100}"#[..]));
//! let appended = store
//!     .append(AppendRequest::new().stream(account.clone(), ExpectedVersion::NoStream, vec![deposited]))
//!     .await?;
//! assert_eq!(appended.version_of(&account), Some(1.into()));
//!
//! let read = store.read_stream(&account, Default::default(), usize::MAX).await?;
//! assert_eq!(read.events.len(), 1);
//! println!("health: {:?}", store.health().await?);
//! # Ok(())
//! # }
//! ```
//!
//! Connections: a `deadpool-postgres` pool (size and timeouts in [`PgConfig`], also settable
//! from the connection URL) with statements prepared once per connection, plus one dedicated
//! `LISTEN` connection. TLS is the application's choice: pass any tokio-postgres TLS connector
//! to [`PgEventStore::connect_with_tls`].
//!
//! The crate's tests run against a real server named by `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), each in a schema of its own; without a
//! reachable server they fail and say so.
//!
//! JSON payloads are stored as JSONB: they stay queryable, and they read back as the same JSON
//! value but not necessarily the same bytes (JSONB normalizes whitespace and key order).
//! MessagePack payloads are stored as bytes and read back unchanged.

mod append;
mod archive;
mod config;
mod db;
mod deadlines;
mod error;
mod health;
mod inspect;
mod metrics;
mod migrate;
mod notify;
mod projections;
mod read;
mod read_index;
mod snapshots;
mod sql;
mod store;
#[cfg(test)]
mod test_support;
mod turns;
mod types;

pub use archive::{
    PgArchivedReads, PgEventsDetached, PgLogPartition, PgLogPartitioning, PgPartitionReport,
    PgStreamArchived,
};
pub use config::{PgConfig, PgConfigError};
pub use deadlines::PgDeadlineStore;
pub use error::{PgReadOnly, PgUndecodableEvent};
pub use health::{PgHealth, PgListenerHealth, PgPoolHealth, PgPoolStatus};
pub use inspect::PgStreamInfo;
pub use metrics::{
    GROUP_COMMIT_APPENDS, OLDEST_APPEND_AGE_SECONDS, OLDEST_TRANSACTION_AGE_SECONDS,
    POOL_CONNECTIONS, REPLAY_LAG_SECONDS, describe_metrics,
};
pub use migrate::{PgMigration, PgMigrationError, PgMigrationReport, PgMigrationStatus};
pub use projections::{PgCheckpoints, PgUnit};
pub use read_index::{PgReadIndex, PgReadIndexState, ReadIndex, UnknownReadIndex};
pub use store::PgEventStore;

/// The driver and pool this crate is built on, for configuring connections and TLS.
pub use deadpool_postgres;
pub use tokio_postgres;
