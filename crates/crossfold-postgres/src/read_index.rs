//! The optional read indexes of the log: by stream, by category and by event type. Each makes a
//! read of the log filtered that way O(batch) wherever it starts, and costs every append one
//! more B-tree insertion per event, so a store has them only where a subscription or projection
//! filters that way ([`PgEventStore::create_read_index`](crate::PgEventStore::create_read_index)).
//!
//! The read statements follow what exists: the store looks the indexes up when it connects,
//! after it migrates, creates or drops one, and again before a read that could use one when its
//! last look is older than [`RECHECK`] (so an index another process created is used within
//! that time). Without its index, a read filtered by category or type goes through the log
//! index and checks the filter on each event: O(events between the position and the batch's
//! last event) — cheap for a category or type that is a fair share of the log, up to the rest
//! of the log for a rare one. A read filtered by stream reads each stream through the primary
//! key and sorts it by position: O(events of the stream) per read, whatever the index; the
//! statement is the same with and without it.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{Backoff, StoreError};
use deadpool_postgres::{ClientWrapper, Object};
use tokio_postgres::Client;

use crate::db::Db;
use crate::error::classify;
use crate::migrate::{release_migration_lock, take_migration_lock};
use crate::sql::quoted;

/// How old the store's knowledge of its read indexes may get before a read that could use one
/// looks again.
pub(crate) const RECHECK: Duration = Duration::from_secs(30);

/// An optional index of the events table for filtered reads of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ReadIndex {
    /// `events_stream_log_idx`, on `(stream_id, transaction_id, sequence)`: reads filtered by
    /// stream (`LogFilter::streams`).
    Stream,
    /// `events_category_log_idx`, on `(split_part(stream_id, '-', 1), transaction_id,
    /// sequence)`: reads filtered by [category](crossfold_core::StreamId::category)
    /// (`LogFilter::categories`).
    Category,
    /// `events_type_log_idx`, on `(event_type, transaction_id, sequence)`: reads filtered by
    /// event type (`LogFilter::event_types`).
    EventType,
}

impl ReadIndex {
    /// Every optional read index.
    pub const ALL: [ReadIndex; 3] = [ReadIndex::Stream, ReadIndex::Category, ReadIndex::EventType];

    /// The index's name in the store's schema.
    pub fn index_name(self) -> &'static str {
        match self {
            ReadIndex::Stream => "events_stream_log_idx",
            ReadIndex::Category => "events_category_log_idx",
            ReadIndex::EventType => "events_type_log_idx",
        }
    }

    /// The short name operators type (`stream`, `category`, `type`); [`FromStr`] reads it
    /// back.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadIndex::Stream => "stream",
            ReadIndex::Category => "category",
            ReadIndex::EventType => "type",
        }
    }

    /// The indexed columns. The category's expression must be the one the read statements
    /// filter on (`sql::CATEGORY`), or the planner cannot match them. Every key ends in the log
    /// position, so no two entries are equal and B-tree deduplication, which looks for equal
    /// entries whenever a page fills, is turned off (`deduplicate_items = off`): it would only
    /// cost appends time.
    fn columns(self) -> &'static str {
        match self {
            ReadIndex::Stream => "(stream_id, transaction_id, sequence)",
            ReadIndex::Category => "(split_part(stream_id, '-', 1), transaction_id, sequence)",
            ReadIndex::EventType => "(event_type, transaction_id, sequence)",
        }
    }

    fn bit(self) -> u8 {
        match self {
            ReadIndex::Category => 1,
            ReadIndex::EventType => 2,
            ReadIndex::Stream => 4,
        }
    }
}

impl fmt::Display for ReadIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a read index's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no read index is called {0:?} (there are `stream`, `category` and `type`)")]
pub struct UnknownReadIndex(pub String);

impl FromStr for ReadIndex {
    type Err = UnknownReadIndex;

    /// `stream`, `category`, `type` (also `event-type`, `event_type`), or an index's full name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stream" | "events_stream_log_idx" => Ok(ReadIndex::Stream),
            "category" | "events_category_log_idx" => Ok(ReadIndex::Category),
            "type" | "event-type" | "event_type" | "events_type_log_idx" => {
                Ok(ReadIndex::EventType)
            }
            _ => Err(UnknownReadIndex(s.to_owned())),
        }
    }
}

/// Where an optional read index stands in the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgReadIndexState {
    /// Built and used by reads.
    Ready,
    /// Present but not usable: being built right now, or left behind by a build that failed
    /// or was interrupted (creating it again replaces it).
    Invalid,
    /// Not there: reads filtered its way scan the log.
    Absent,
}

impl PgReadIndexState {
    /// `ready`, `invalid` or `absent`.
    pub fn as_str(self) -> &'static str {
        match self {
            PgReadIndexState::Ready => "ready",
            PgReadIndexState::Invalid => "invalid",
            PgReadIndexState::Absent => "absent",
        }
    }
}

/// One optional read index, as [`PgEventStore::read_indexes`](crate::PgEventStore::read_indexes)
/// finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgReadIndex {
    /// Which index.
    pub index: ReadIndex,
    /// Whether it is there and usable.
    pub state: PgReadIndexState,
    /// Its size on disk (`None` when absent).
    pub size_bytes: Option<u64>,
    /// How many index scans used it since the server's statistics were last reset (`None`
    /// when absent): 0 on a primary that has run for a while means no read there filters
    /// this way (reads on a standby count on the standby).
    pub scans: Option<u64>,
}

/// A set of optional read indexes, for choosing a read statement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadIndexSet(u8);

impl ReadIndexSet {
    /// How many sets the read statements tell apart: those of the category and type indexes
    /// (a stream's read is the same statement with and without the stream index).
    pub(crate) const STATEMENT_SETS: usize = 4;

    /// The set of category and type indexes numbered `bits` (below
    /// [`STATEMENT_SETS`](Self::STATEMENT_SETS)).
    pub(crate) fn from_statement_bits(bits: usize) -> Self {
        Self((bits % Self::STATEMENT_SETS) as u8)
    }

    /// The number of its category and type indexes, below
    /// [`STATEMENT_SETS`](Self::STATEMENT_SETS).
    pub(crate) fn statement_bits(self) -> usize {
        usize::from(self.0) % Self::STATEMENT_SETS
    }

    /// The set of `indexes`.
    #[cfg(test)]
    pub(crate) fn of(indexes: &[ReadIndex]) -> Self {
        indexes.iter().fold(Self::default(), |set, &i| set.with(i))
    }

    pub(crate) fn contains(self, index: ReadIndex) -> bool {
        self.0 & index.bit() != 0
    }

    fn with(self, index: ReadIndex) -> Self {
        Self(self.0 | index.bit())
    }
}

/// Which optional indexes the store found at its last look, and when it looked; shared by
/// the store's clones.
#[derive(Debug, Default)]
pub(crate) struct KnownReadIndexes {
    set: AtomicU8,
    /// Whether the schema has archived streams (migration 14), found at the same looks: the
    /// reads of streams ask about them only then.
    archives: AtomicBool,
    checked: Mutex<Option<Instant>>,
}

impl KnownReadIndexes {
    /// The indexes found at the last look (none before the first).
    pub(crate) fn get(&self) -> ReadIndexSet {
        ReadIndexSet(self.set.load(Ordering::Relaxed))
    }

    /// Whether the schema had archived streams at the last look.
    pub(crate) fn archives(&self) -> bool {
        self.archives.load(Ordering::Relaxed)
    }

    /// Whether it is time to look again: never looked, or longer ago than [`RECHECK`].
    pub(crate) fn stale(&self) -> bool {
        let checked = self.checked.lock().map_or(None, |c| *c);
        checked.is_none_or(|at| at.elapsed() >= RECHECK)
    }

    fn set(&self, (set, archives): (ReadIndexSet, bool)) {
        self.set.store(set.0, Ordering::Relaxed);
        self.archives.store(archives, Ordering::Relaxed);
        if let Ok(mut checked) = self.checked.lock() {
            *checked = Some(Instant::now());
        }
    }
}

/// The valid optional read indexes of `schema` (none when it has no events table yet), and
/// whether it has archived streams.
async fn look_up(db: &Db, client: &Client) -> Result<(ReadIndexSet, bool), StoreError> {
    let schema = db.schema.as_str();
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1) AND i.indisvalid AND i.indisready",
            &[&format!("{}.events", quoted(schema))],
        )
        .await
        .map_err(classify)?;
    let mut set = ReadIndexSet::default();
    for row in rows {
        let name: String = row.try_get(0).map_err(classify)?;
        if let Ok(index) = name.parse::<ReadIndex>() {
            set = set.with(index);
        }
    }
    let archives = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute a \
                            WHERE a.attrelid = to_regclass($1) AND a.attname = 'archived' \
                              AND NOT a.attisdropped)",
            &[&format!("{}.streams", quoted(schema))],
        )
        .await
        .map_err(classify)?
        .try_get(0)
        .map_err(classify)?;
    if archives {
        // A log another process partitioned after this store connected: from now on this
        // store's appends keep partitions ahead too. On the connection the caller holds.
        let from: Option<i64> = client
            .query_one(&crate::archive::extend_from_statement(&quoted(schema)), &[])
            .await
            .map_err(classify)?
            .try_get(0)
            .map_err(classify)?;
        if let Some(from) = from.and_then(|f| u64::try_from(f).ok()) {
            db.partitions.found(from);
        }
    }
    Ok((set, archives))
}

/// Looks the store's optional read indexes up again and remembers what it found.
pub(crate) async fn refresh(db: &Db) -> Result<ReadIndexSet, StoreError> {
    let client = db.client().await?;
    let found = look_up(db, &client).await?;
    db.read_indexes.set(found);
    Ok(found.0)
}

/// The optional read indexes for choosing a read statement: as last found, looked up again
/// first when that is older than [`RECHECK`]. A failed look keeps the last answer (and is
/// tried again at the next read): the read itself then reports the trouble if there is one.
pub(crate) async fn current(db: &Db, client: &Client) -> ReadIndexSet {
    if db.read_indexes.stale() {
        match look_up(db, client).await {
            Ok(set) => db.read_indexes.set(set),
            Err(e) => {
                tracing::debug!(error = %crossfold_core::ErrorChain(&e), "crossfold: read indexes not looked up");
            }
        }
    }
    db.read_indexes.get()
}

/// Every optional read index with its state, size and use.
pub(crate) async fn list(db: &Db) -> Result<Vec<PgReadIndex>, StoreError> {
    let client = db.client().await?;
    let names: Vec<&str> = ReadIndex::ALL.iter().map(|i| i.index_name()).collect();
    let rows = client
        .query(
            "SELECT c.relname::text, i.indisvalid AND i.indisready, \
                    pg_catalog.pg_relation_size(c.oid), s.idx_scan \
             FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
             LEFT JOIN pg_catalog.pg_stat_all_indexes s ON s.indexrelid = c.oid \
             WHERE i.indrelid = to_regclass($1) AND c.relname = ANY($2)",
            &[&format!("{}.events", quoted(&db.schema)), &names],
        )
        .await
        .map_err(classify)?;
    let mut found = Vec::new();
    let mut set = ReadIndexSet::default();
    for index in ReadIndex::ALL {
        let row = rows.iter().find(|r| {
            r.try_get::<_, String>(0)
                .is_ok_and(|n| n == index.index_name())
        });
        let info = match row {
            Some(row) => {
                let valid: bool = row.try_get(1).map_err(classify)?;
                let size: i64 = row.try_get(2).map_err(classify)?;
                let scans: Option<i64> = row.try_get(3).map_err(classify)?;
                if valid {
                    set = set.with(index);
                }
                PgReadIndex {
                    index,
                    state: if valid {
                        PgReadIndexState::Ready
                    } else {
                        PgReadIndexState::Invalid
                    },
                    size_bytes: Some(u64::try_from(size).unwrap_or(0)),
                    scans: Some(scans.map_or(0, |s| u64::try_from(s).unwrap_or(0))),
                }
            }
            None => PgReadIndex {
                index,
                state: PgReadIndexState::Absent,
                size_bytes: None,
                scans: None,
            },
        };
        found.push(info);
    }
    db.read_indexes.set((set, db.read_indexes.archives()));
    Ok(found)
}

/// How often a builder that finds the lock taken tries again.
const LOCK_POLL: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));

/// A connection of its own (closed afterwards, so an abandoned call releases the lock), with
/// no statement or lock timeout (a build over a large log rightly takes minutes), holding the
/// migration lock.
async fn locked(db: &Db) -> Result<ClientWrapper, StoreError> {
    let client = Object::take(db.client().await?);
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await
        .map_err(classify)?;
    // The migration lock (creating and dropping read indexes take turns with migrations and
    // with each other), polled, not waited for: a statement waiting for the lock is a
    // transaction, and a concurrent build elsewhere waits for every transaction to end.
    take_migration_lock(&client, &db.schema, LOCK_POLL)
        .await
        .map_err(classify)?;
    Ok(client)
}

/// Whether `index` is there, and valid.
async fn state(
    client: &Client,
    schema: &str,
    index: ReadIndex,
) -> Result<PgReadIndexState, StoreError> {
    let row = client
        .query_opt(
            "SELECT i.indisvalid AND i.indisready FROM pg_catalog.pg_index i \
             WHERE i.indexrelid = to_regclass($1)",
            &[&format!("{}.{}", quoted(schema), index.index_name())],
        )
        .await
        .map_err(classify)?;
    Ok(match row {
        None => PgReadIndexState::Absent,
        Some(row) if row.try_get::<_, bool>(0).map_err(classify)? => PgReadIndexState::Ready,
        Some(_) => PgReadIndexState::Invalid,
    })
}

/// Builds `index` without blocking appends (`CREATE INDEX CONCURRENTLY`), replacing what a
/// failed or interrupted build left behind. `Ok(false)` when it was there already.
pub(crate) async fn create(db: &Db, index: ReadIndex) -> Result<bool, StoreError> {
    let client = locked(db).await?;
    let result = create_locked(&client, &db.schema, index).await;
    unlock(client, &db.schema).await;
    let created = result?;
    refresh(db).await?;
    Ok(created)
}

async fn create_locked(
    client: &Client,
    schema: &str,
    index: ReadIndex,
) -> Result<bool, StoreError> {
    let q = quoted(schema);
    match state(client, schema, index).await? {
        PgReadIndexState::Ready => return Ok(false),
        // Under the lock no other build of ours runs: this is a leftover.
        PgReadIndexState::Invalid => drop_index(client, &q, index).await?,
        PgReadIndexState::Absent => {}
    }
    let built = if partitions(client, schema).await?.is_some() {
        create_partitioned(client, schema, index).await
    } else {
        client
            .batch_execute(&format!(
                "CREATE INDEX CONCURRENTLY {} ON {q}.events {} WITH (deduplicate_items = off)",
                index.index_name(),
                index.columns()
            ))
            .await
            .map_err(classify)
    };
    if let Err(e) = built {
        // A failed concurrent build leaves an invalid index that every append would still
        // maintain: take it away (best effort; creating it again would too).
        let _ = drop_index(client, &q, index).await;
        return Err(e);
    }
    Ok(true)
}

/// The attached partitions of the store's events table, when it is partitioned (migration 14).
async fn partitions(client: &Client, schema: &str) -> Result<Option<Vec<String>>, StoreError> {
    let row = client
        .query_one(
            "SELECT c.relkind = 'p', \
                    ARRAY(SELECT i.inhrelid::regclass::text FROM pg_catalog.pg_inherits i \
                          WHERE i.inhparent = c.oid ORDER BY 1) \
             FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)",
            &[&format!("{}.events", quoted(schema))],
        )
        .await
        .map_err(classify)?;
    let partitioned: bool = row.try_get(0).map_err(classify)?;
    partitioned
        .then(|| row.try_get::<_, Vec<String>>(1))
        .transpose()
        .map_err(classify)
}

/// Builds `index` on a partitioned events table: PostgreSQL builds no index of a partitioned
/// table concurrently, so the table gets one of its own that covers nothing yet (`ON ONLY`,
/// invalid), each partition one built concurrently, attached to it; once every partition's is
/// attached it is valid, and partitions created later get theirs when they are attached.
/// A partition's index left invalid by an interrupted build is built again.
async fn create_partitioned(
    client: &Client,
    schema: &str,
    index: ReadIndex,
) -> Result<(), StoreError> {
    let q = quoted(schema);
    let name = index.index_name();
    let columns = index.columns();
    client
        .batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON ONLY {q}.events {columns} \
             WITH (deduplicate_items = off)"
        ))
        .await
        .map_err(classify)?;
    for partition in partitions(client, schema).await?.unwrap_or_default() {
        // `schema.events_000001` (as regclass prints it) -> `events_000001_stream_log_idx`.
        let table = partition.rsplit('.').next().unwrap_or(&partition);
        let child = format!("{table}_{}", name.trim_start_matches("events_"));
        let valid = client
            .query_opt(
                "SELECT i.indisvalid FROM pg_catalog.pg_index i WHERE i.indexrelid = to_regclass($1)",
                &[&format!("{q}.{child}")],
            )
            .await
            .map_err(classify)?
            .map(|r| r.try_get::<_, bool>(0))
            .transpose()
            .map_err(classify)?;
        if valid == Some(false) {
            client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY {q}.{child}"))
                .await
                .map_err(classify)?;
        }
        client
            .batch_execute(&format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {child} ON {partition} {columns} \
                 WITH (deduplicate_items = off)"
            ))
            .await
            .map_err(classify)?;
        let attached = client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits \
                                WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2))",
                &[&format!("{q}.{child}"), &format!("{q}.{name}")],
            )
            .await
            .map_err(classify)?
            .try_get::<_, bool>(0)
            .map_err(classify)?;
        if !attached {
            client
                .batch_execute(&format!(
                    "ALTER INDEX {q}.{name} ATTACH PARTITION {q}.{child}"
                ))
                .await
                .map_err(classify)?;
        }
    }
    Ok(())
}

/// Drops `index` without blocking reads or appends (`DROP INDEX CONCURRENTLY`). `Ok(false)`
/// when it was not there.
pub(crate) async fn remove(db: &Db, index: ReadIndex) -> Result<bool, StoreError> {
    let client = locked(db).await?;
    let result = remove_locked(&client, &db.schema, index).await;
    unlock(client, &db.schema).await;
    let removed = result?;
    refresh(db).await?;
    Ok(removed)
}

async fn remove_locked(
    client: &Client,
    schema: &str,
    index: ReadIndex,
) -> Result<bool, StoreError> {
    if state(client, schema, index).await? == PgReadIndexState::Absent {
        return Ok(false);
    }
    drop_index(client, &quoted(schema), index).await?;
    Ok(true)
}

/// Releases the lock [`locked`] took and closes its connection (which would release it too).
async fn unlock(client: ClientWrapper, schema: &str) {
    release_migration_lock(&client, schema).await;
}

/// Drops `index`: concurrently where the table is not partitioned; on a partitioned table,
/// where PostgreSQL drops no index concurrently, with the events table's lock for a moment.
async fn drop_index(client: &Client, q: &str, index: ReadIndex) -> Result<(), StoreError> {
    let partitioned: bool = client
        .query_one(
            "SELECT coalesce((SELECT relkind = 'p' FROM pg_catalog.pg_class \
                              WHERE oid = to_regclass($1)), false)",
            &[&format!("{q}.events")],
        )
        .await
        .map_err(classify)?
        .try_get(0)
        .map_err(classify)?;
    client
        .batch_execute(&format!(
            "DROP INDEX {} IF EXISTS {q}.{}",
            if partitioned { "" } else { "CONCURRENTLY" },
            index.index_name()
        ))
        .await
        .map_err(classify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for index in ReadIndex::ALL {
            assert_eq!(index.as_str().parse::<ReadIndex>(), Ok(index));
            assert_eq!(index.index_name().parse::<ReadIndex>(), Ok(index));
        }
        assert!("streams".parse::<ReadIndex>().is_err());
        assert!("".parse::<ReadIndex>().is_err());
    }

    #[test]
    fn sets_hold_what_was_put_in() {
        let none = ReadIndexSet::default();
        assert!(ReadIndex::ALL.iter().all(|&i| !none.contains(i)));
        let category = none.with(ReadIndex::Category);
        assert!(category.contains(ReadIndex::Category));
        assert!(!category.contains(ReadIndex::EventType));
        assert_eq!(
            category.with(ReadIndex::EventType).with(ReadIndex::Stream),
            ReadIndexSet::of(&ReadIndex::ALL)
        );
        assert_eq!(ReadIndexSet::of(&[]), none);
        for bits in 0..ReadIndexSet::STATEMENT_SETS {
            assert_eq!(
                ReadIndexSet::from_statement_bits(bits).statement_bits(),
                bits
            );
        }
        // The stream index changes no statement.
        assert_eq!(
            ReadIndexSet::of(&ReadIndex::ALL).statement_bits(),
            ReadIndexSet::of(&[ReadIndex::Category, ReadIndex::EventType]).statement_bits()
        );
    }
}
