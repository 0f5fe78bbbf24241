//! Archived streams and a partitioned log (migration 14).
//!
//! A stream closed for good can be archived ([`PgEventStore::archive_stream`](crate::PgEventStore::archive_stream)): its events
//! move out of the log into the schema's `archived_events`, in one transaction, and the stream
//! takes no more events. They are never lost and stay readable on request
//! ([`PgEventStore::read_archived_stream`](crate::PgEventStore::read_archived_stream)); a command that reads the stream gets what the store
//! is configured to answer ([`PgArchivedReads`]).
//!
//! The events table can be partitioned by position ([`PgEventStore::partition_log`](crate::PgEventStore::partition_log)), so that
//! old positions sit in old, cold partitions that operators can detach
//! ([`PgEventStore::detach_log_partition`](crate::PgEventStore::detach_log_partition)) to dump and drop, or attach again. The store keeps
//! partitions ahead of the log: when it connects, and when an append comes within `ahead - 1`
//! partitions (at least one) of the end. See the migration for how uniqueness is kept across partitions and
//! what each step locks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossfold_core::{StoreError, StreamEvents, StreamId, StreamVersion, Timestamp};
use deadpool_postgres::Object;
use tokio_postgres::Row;

use crate::db::Db;
use crate::error::{classify, classify_pool, find_source};
use crate::sql::quoted;
use crate::types::get;

/// SQLSTATE of an append to an archived stream (migration 14).
pub(crate) const ARCHIVED: &str = "CF012";
/// SQLSTATE of an archiving or partitioning request the database refuses (migration 14).
const REFUSED: &str = "CF013";

/// What a read of an archived stream returns ([`PgConfig::archived_streams`]).
///
/// [`PgConfig::archived_streams`]: crate::PgConfig::archived_streams
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgArchivedReads {
    /// The read fails with [`PgStreamArchived`]: a command does not run on a stream that was
    /// archived, and says which (the default).
    #[default]
    Refuse,
    /// The read returns the archived events, as if they were in the log. The stream still
    /// takes no new events: an append to it fails with [`PgStreamArchived`].
    ReadBack,
}

/// A read of an archived stream the store is configured to refuse, or an append to one.
/// Found in a [`StoreError::Backend`] by [`find`](Self::find). Not transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stream {stream} is archived: its events left the log (read them with \
     PgEventStore::read_archived_stream or `crossfold archive read`) and it takes no new events"
)]
pub struct PgStreamArchived {
    stream: String,
}

impl PgStreamArchived {
    pub(crate) fn new(stream: &str) -> Self {
        Self {
            stream: stream.to_owned(),
        }
    }

    /// The archived stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The archived stream behind `error`, if that is what it is.
    pub fn find(error: &StoreError) -> Option<&PgStreamArchived> {
        find_source(error)
    }
}

/// A read of a stream whose log lacks versions it asked for: they are in a detached partition
/// of the log. Found in a [`StoreError::Backend`] by [`find`](Self::find). A command on a
/// stream whose early events are detached runs when a snapshot taken after them lets it start
/// beyond them; otherwise attach the partition again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stream {stream} lacks versions {from} to {to} in the log: they are in a detached \
     partition (attach it again to read them)"
)]
pub struct PgEventsDetached {
    stream: String,
    from: u64,
    to: u64,
}

impl PgEventsDetached {
    pub(crate) fn new(stream: &str, from: u64, to: u64) -> Self {
        Self {
            stream: stream.to_owned(),
            from,
            to,
        }
    }

    /// The stream read.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The first and the last version missing.
    pub fn missing(&self) -> (u64, u64) {
        (self.from, self.to)
    }

    /// The missing versions behind `error`, if that is what it is.
    pub fn find(error: &StoreError) -> Option<&PgEventsDetached> {
        find_source(error)
    }
}

/// How to partition the log ([`PgEventStore::partition_log`](crate::PgEventStore::partition_log)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgLogPartitioning {
    /// Transaction ids per partition. Each append takes one (a group commit one per group), so
    /// this is about appends per partition: at 1,000 appends a second, 100,000,000 is a
    /// partition a day or so.
    pub size: u64,
    /// How many partitions to keep beyond the next transaction id (1 to 1,000).
    pub ahead: u32,
    /// How far beyond the next transaction id the existing events' partition reaches: the
    /// conversion's last step must begin before appends use that many more (see the
    /// migration). Appends that outrun it are refused, writing nothing, until it is done.
    pub margin: u64,
}

impl PgLogPartitioning {
    /// `size` transaction ids per partition, 4 ahead, a margin of 1,000,000.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            ahead: 4,
            margin: 1_000_000,
        }
    }

    /// How many partitions to keep ahead of the log.
    pub fn ahead(mut self, ahead: u32) -> Self {
        self.ahead = ahead;
        self
    }

    /// The reach of the existing events' partition beyond the next transaction id.
    pub fn margin(mut self, margin: u64) -> Self {
        self.margin = margin;
        self
    }
}

/// How a conversion of the log went ([`PgEventStore::partition_log`](crate::PgEventStore::partition_log)): how many stored events'
/// ids it recorded and how long each step took. Only the switch blocks appends (and reads),
/// from when its lock is granted; while it waits for the lock, appends queue behind it.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Deserialize)]
pub struct PgPartitionReport {
    /// Stored events whose ids were recorded.
    pub event_ids: u64,
    /// Recording them (appends go on).
    pub ids_seconds: f64,
    /// Checking that every stored event lies below the first partition's bound (appends go
    /// on).
    pub check_seconds: f64,
    /// Waiting for the events table's lock (for appends and reads under way to finish).
    pub lock_wait_seconds: f64,
    /// The switch under the lock.
    pub switch_seconds: f64,
}

/// A partition of the log ([`PgEventStore::log_partitions`](crate::PgEventStore::log_partitions)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgLogPartition {
    /// Its table, in the store's schema.
    pub name: String,
    /// Where its range of positions' commit halves starts (inclusive); none for the first
    /// partition (the start of the log) and the default partition, which holds events of
    /// transaction ids no other partition covers.
    pub lower: Option<u64>,
    /// Where its range ends (exclusive); none for the default partition.
    pub upper: Option<u64>,
    /// Whether it is part of the log (not detached).
    pub attached: bool,
    /// Whether its table is still in the schema (a detached partition may have been dropped).
    pub exists: bool,
    /// The server's estimate of its events (from its last vacuum or analyze).
    pub estimated_events: u64,
    /// Its size on disk with its indexes, in bytes.
    pub bytes: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was detached, if it is.
    pub detached_at: Option<Timestamp>,
}

/// What the store knows of its log's partitions, to keep partitions ahead of its appends.
#[derive(Debug, Default)]
pub(crate) struct PartitionWatch {
    /// Where the partitions end, less `ahead - 1` partitions (at least one): an append beyond
    /// this creates more (0: not partitioned, or unknown).
    extend_from: AtomicU64,
    /// A call of `ensure_log_partitions` is under way.
    busy: AtomicBool,
}

impl PartitionWatch {
    /// After an append at commit half `commit`: whether it is time to create partitions ahead.
    pub(crate) fn due(&self, commit: u64) -> bool {
        let from = self.extend_from.load(Ordering::Relaxed);
        from != 0 && commit >= from && !self.busy.swap(true, Ordering::AcqRel)
    }

    /// Where the partitions of a log found partitioned by another process end, less the
    /// margin (see [`extend_from`](Self::extend_from)); a store that knew already keeps its own.
    pub(crate) fn found(&self, extend_from: u64) {
        let _ =
            self.extend_from
                .compare_exchange(0, extend_from, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The statement that tells where the partitions of `q`'s log end, less `ahead - 1`
/// partitions (at least one); NULL when the log is not partitioned (needs migration 14).
pub(crate) fn extend_from_statement(q: &str) -> String {
    format!(
        "SELECT (SELECT max(p.upper_bound)::text::numeric \
                        - greatest(min(c.ahead) - 1, 1) * min(c.size) \
                 FROM {q}.log_partitions p, {q}.log_partitioning c)::int8"
    )
}

/// Creates partitions ahead of the log if it is partitioned, and remembers where the store
/// should do so again. Returns how many it created.
pub(crate) async fn ensure(db: &Db) -> Result<u32, StoreError> {
    let client = db.client().await?;
    let q = quoted(&db.schema);
    let made: i32 = client
        .query_one(&format!("SELECT {q}.ensure_log_partitions()"), &[])
        .await
        .map_err(refusal)
        .and_then(|row| get(&row, 0))?;
    let row = client
        .query_one(&extend_from_statement(&q), &[])
        .await
        .map_err(classify)?;
    let from: Option<i64> = get(&row, 0)?;
    db.partitions.extend_from.store(
        from.and_then(|f| u64::try_from(f).ok()).unwrap_or(0),
        Ordering::Relaxed,
    );
    Ok(u32::try_from(made).unwrap_or(0))
}

/// After an append at commit half `commit`: creates partitions ahead in the background when
/// the append came near the end of them (see [`PartitionWatch`]).
pub(crate) fn after_append(db: &Arc<Db>, commit: u64) {
    if !db.partitions.due(commit) {
        return;
    }
    let db = db.clone();
    tokio::spawn(async move {
        match ensure(&db).await {
            Ok(made) if made > 0 => {
                tracing::info!(schema = %db.schema, made, "crossfold: log partitions created ahead");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crossfold_core::ErrorChain(&e), schema = %db.schema,
                    "crossfold: log partitions not created ahead; appends beyond the last \
                     partition land in the default partition");
            }
        }
        db.partitions.busy.store(false, Ordering::Release);
    });
}

/// A refusal of the archiving and partitioning functions as the invalid request it is, an
/// append to an archived stream as [`PgStreamArchived`]; anything else as the store
/// classifies driver errors.
pub(crate) fn refusal(error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) if db.code().code() == REFUSED => {
            StoreError::InvalidRequest(db.message().to_owned())
        }
        Some(db) if db.code().code() == ARCHIVED => StoreError::Backend(Box::new(
            PgStreamArchived::new(db.detail().unwrap_or_default()),
        )),
        _ => classify(error),
    }
}

async fn client(db: &Db) -> Result<Object, StoreError> {
    db.pool.get().await.map_err(classify_pool)
}

/// Archives `stream` (see [`PgEventStore::archive_stream`](crate::PgEventStore::archive_stream)).
pub(crate) async fn archive_stream(
    db: &Db,
    stream: &StreamId,
    force: bool,
) -> Result<u64, StoreError> {
    let client = client(db).await?;
    let row = client
        .query_one(
            &format!(
                "SELECT {}.{}($1)",
                quoted(&db.schema),
                if force {
                    "force_archive_stream"
                } else {
                    "archive_stream"
                }
            ),
            &[&stream.as_str()],
        )
        .await
        .map_err(refusal)?;
    let moved: i64 = get(&row, 0)?;
    Ok(u64::try_from(moved).unwrap_or(0))
}

/// The archived events of `stream`, or `None` when it is not archived.
pub(crate) async fn read_archived_stream(
    db: &Db,
    stream: &StreamId,
) -> Result<Option<StreamEvents>, StoreError> {
    let client = client(db).await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT archived FROM {}.streams WHERE stream_id = $1",
                quoted(&db.schema)
            ),
            &[&stream.as_str()],
        )
        .await
        .map_err(classify)?;
    drop(client);
    if !row
        .map(|r| get::<bool>(&r, 0))
        .transpose()?
        .unwrap_or(false)
    {
        return Ok(None);
    }
    crate::read::archived_stream(db, stream, StreamVersion::EMPTY, usize::MAX)
        .await
        .map(Some)
}

/// Converts the log (see [`PgEventStore::partition_log`](crate::PgEventStore::partition_log)).
pub(crate) async fn partition_log(
    db: &Db,
    plan: PgLogPartitioning,
) -> Result<PgPartitionReport, StoreError> {
    let (size, margin) = match (i64::try_from(plan.size), i64::try_from(plan.margin)) {
        (Ok(size), Ok(margin)) if size > 0 => (size, margin),
        _ => {
            return Err(StoreError::InvalidRequest(format!(
                "a partition size of {} transaction ids and a margin of {} are out of range",
                plan.size, plan.margin
            )));
        }
    };
    let client = client(db).await?;
    // A procedure that commits between its steps runs only outside a transaction block, which
    // the simple query protocol gives it; the numbers are checked integers.
    let messages = client
        .simple_query(&format!(
            "CALL {}.partition_log({size}, {}, {margin})",
            quoted(&db.schema),
            plan.ahead
        ))
        .await
        .map_err(refusal)?;
    drop(client);
    let report = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .and_then(|text| serde_json::from_str::<PgPartitionReport>(text).ok())
        .unwrap_or_default();
    ensure(db).await?;
    Ok(report)
}

/// Every partition of the log, attached or detached, in the order of their ranges (the
/// default partition last); empty when the log is not partitioned.
pub(crate) async fn list(db: &Db) -> Result<Vec<PgLogPartition>, StoreError> {
    let client = client(db).await?;
    let q = quoted(&db.schema);
    let rows = client
        .query(
            &format!(
                "SELECT p.name, p.lower_bound::text::numeric::int8, \
                        p.upper_bound::text::numeric::int8, p.detached_at IS NULL, \
                        c.oid IS NOT NULL, \
                        coalesce(greatest(c.reltuples, 0), 0)::int8, \
                        coalesce(pg_total_relation_size(c.oid), 0)::int8, \
                        (extract(epoch FROM p.created_at) * 1000000)::int8, \
                        (extract(epoch FROM p.detached_at) * 1000000)::int8 \
                 FROM {q}.log_partitions p \
                 LEFT JOIN pg_catalog.pg_class c \
                        ON c.oid = to_regclass(format('%I.%I', $1::text, p.name)) \
                 ORDER BY p.upper_bound IS NULL, p.upper_bound"
            ),
            &[&db.schema],
        )
        .await
        .map_err(classify)?;
    rows.iter().map(partition_of).collect()
}

fn partition_of(row: &Row) -> Result<PgLogPartition, StoreError> {
    let bound = |at: usize| -> Result<Option<u64>, StoreError> {
        Ok(get::<Option<i64>>(row, at)?.and_then(|b| u64::try_from(b).ok()))
    };
    let count = |at: usize| -> Result<u64, StoreError> {
        Ok(u64::try_from(get::<i64>(row, at)?).unwrap_or(0))
    };
    Ok(PgLogPartition {
        name: get(row, 0)?,
        lower: bound(1)?,
        upper: bound(2)?,
        attached: get(row, 3)?,
        exists: get(row, 4)?,
        estimated_events: count(5)?,
        bytes: count(6)?,
        created_at: Timestamp::from_unix_micros(get(row, 7)?),
        detached_at: get::<Option<i64>>(row, 8)?.map(Timestamp::from_unix_micros),
    })
}

/// Detaches or attaches partition `name`; returns how many events it holds.
pub(crate) async fn detach_or_attach(
    db: &Db,
    name: &str,
    detach: Option<bool>,
) -> Result<u64, StoreError> {
    let client = client(db).await?;
    let q = quoted(&db.schema);
    let row = match detach {
        Some(force) => {
            client
                .query_one(
                    &format!("SELECT {q}.detach_log_partition($1, $2)"),
                    &[&name, &force],
                )
                .await
        }
        None => {
            client
                .query_one(&format!("SELECT {q}.attach_log_partition($1)"), &[&name])
                .await
        }
    }
    .map_err(refusal)?;
    let events: i64 = get(&row, 0)?;
    Ok(u64::try_from(events).unwrap_or(0))
}
