//! Reading the global log: batches after a position, filtered by stream, category or event type
//! (each filter shape its own statement, see `sql::read_all`), and its head.

use std::time::Duration;

use crossfold_core::{LogFilter, Position, RecordedEvent, StoreError};
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use super::decode::Decoder;
use super::quarantine::skip_quarantined;
use super::wait::VisibilityWait;
use crate::db::Db;
use crate::error::classify;
use crate::read_index::{self, ReadIndexSet};
use crate::sql::shape;
use crate::types::{FilterParams, Xid8, get, limit_param, position, position_params};

/// The parameter types of every `read_all` statement: position, limit, streams, categories,
/// event types, and the open transactions the horizon passes.
const READ_ALL_TYPES: [Type; 7] = [
    Type::XID8,
    Type::INT8,
    Type::INT8,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::XID8_ARRAY,
];

/// Up to `limit` events after `after` that pass `filter`, in log order. Waits up to
/// `visibility_wait` for events committed before the read started to become visible.
pub(crate) async fn read_all(
    db: &Db,
    visibility_wait: Duration,
    after: Position,
    limit: usize,
    filter: &LogFilter,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let args = ReadAllArgs::new(after, limit, filter);
    let mut visibility = VisibilityWait::new(visibility_wait);
    loop {
        let foreign = db.horizon.foreign();
        let params = args.params(&*foreign);
        let client = db.client().await?;
        let text = db
            .sql
            .read_all(args.shape, indexes(db, &client, args.shape).await);
        // Typed, so the shapes that leave some filter parameters unused prepare too.
        let statement = client
            .prepare_typed_cached(text, &READ_ALL_TYPES)
            .await
            .map_err(classify)?;
        let rows = client.query(&statement, &params).await.map_err(classify)?;
        drop(client);
        let mut decoder = Decoder::default();
        let mut events = Vec::with_capacity(rows.len());
        let mut read = 0;
        for row in &rows {
            match decoder.decode(row, 2) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => continue,
                Err(e) => skip_quarantined(db, e).await?,
            }
            read += 1;
        }
        if read < limit
            && let Some(row) = rows.first()
            && visibility.must_wait(row)?
            && visibility.pause(db).await
        {
            continue;
        }
        // The lateral join keeps the inner ORDER BY; sorting an ordered batch is a
        // single pass, and keeps the order a guarantee rather than a plan detail.
        if !events.is_sorted_by_key(|e| e.position) {
            events.sort_by_key(|e| e.position);
        }
        return Ok(events);
    }
}

/// The plan of the statement [`read_all`] runs for these arguments, executed with `EXPLAIN
/// (ANALYZE, BUFFERS, FORMAT JSON)`, as a generic plan when `generic`, else as a custom plan.
pub(crate) async fn explain_read_all(
    db: &Db,
    after: Position,
    limit: usize,
    filter: &LogFilter,
    generic: bool,
) -> Result<String, StoreError> {
    let args = ReadAllArgs::new(after, limit, filter);
    let client = db.client().await?;
    let text = format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        db.sql
            .read_all(args.shape, indexes(db, &client, args.shape).await)
    );
    let mode = if generic {
        "force_generic_plan"
    } else {
        "force_custom_plan"
    };
    client
        .batch_execute(&format!("SET plan_cache_mode = {mode}"))
        .await
        .map_err(classify)?;
    let statement = client.prepare_typed(&text, &READ_ALL_TYPES).await;
    let foreign = db.horizon.foreign();
    let result = match statement {
        Ok(statement) => client.query(&statement, &args.params(&*foreign)).await,
        Err(e) => Err(e),
    };
    client
        .batch_execute("RESET plan_cache_mode")
        .await
        .map_err(classify)?;
    let rows = result.map_err(classify)?;
    let mut plan = String::new();
    for row in &rows {
        let line: serde_json::Value = get(row, 0)?;
        plan.push_str(&line.to_string());
    }
    Ok(plan)
}

/// The optional read indexes a read of filter shape `shape` can use: none for the shapes
/// that need none (no look-up), else as the store last found them (see `read_index`).
async fn indexes(db: &Db, client: &Client, shape: usize) -> ReadIndexSet {
    if shape & shape::STREAMS != 0 || shape & (shape::CATEGORIES | shape::TYPES) == 0 {
        return ReadIndexSet::default();
    }
    read_index::current(db, client).await
}

/// The position of the newest visible event ([`Position::START`] for an empty log), after
/// waiting up to `visibility_wait` for events committed before the call to become visible.
pub(crate) async fn head_position(
    db: &Db,
    visibility_wait: Duration,
) -> Result<Position, StoreError> {
    let mut visibility = VisibilityWait::new(visibility_wait);
    loop {
        let foreign = db.horizon.foreign();
        let client = db.client().await?;
        let statement = client
            .prepare_cached(&db.sql.head)
            .await
            .map_err(classify)?;
        let row = client
            .query_one(&statement, &[&*foreign])
            .await
            .map_err(classify)?;
        drop(client);
        if visibility.must_wait(&row)? && visibility.pause(db).await {
            continue;
        }
        return match get::<Option<Xid8>>(&row, 2)? {
            Some(_) => position(&row, 2),
            None => Ok(Position::START),
        };
    }
}

/// The parameters of a `read_all` statement, and which statement (the filter's shape).
struct ReadAllArgs<'a> {
    shape: usize,
    commit: Xid8,
    sequence: i64,
    limit: i64,
    streams: Option<Vec<&'a str>>,
    categories: Option<Vec<&'a str>>,
    types: Option<Vec<&'a str>>,
}

impl<'a> ReadAllArgs<'a> {
    fn new(after: Position, limit: usize, filter: &'a LogFilter) -> Self {
        let (commit, sequence) = position_params(after);
        let keys = FilterParams::of(filter);
        let (streams, categories, types) = (
            sorted(keys.streams),
            sorted(keys.categories),
            sorted(keys.types),
        );
        Self {
            shape: usize::from(streams.is_some()) * shape::STREAMS
                + usize::from(categories.is_some()) * shape::CATEGORIES
                + usize::from(types.is_some()) * shape::TYPES
                + usize::from(streams.is_none() && !filter.system_streams) * shape::NO_SYSTEM,
            commit,
            sequence,
            limit: limit_param(limit),
            streams,
            categories,
            types,
        }
    }

    /// The statement's parameters; `foreign` the open transactions the horizon passes
    /// (`xid8[]`).
    fn params<'p>(&'p self, foreign: &'p (dyn ToSql + Sync)) -> [&'p (dyn ToSql + Sync); 7] {
        [
            &self.commit,
            &self.sequence,
            &self.limit,
            &self.streams,
            &self.categories,
            &self.types,
            foreign,
        ]
    }
}

/// Each key of a filter once: the read goes key by key.
fn sorted(items: Option<Vec<&str>>) -> Option<Vec<&str>> {
    items.map(|mut v| {
        v.sort_unstable();
        v.dedup();
        v
    })
}
