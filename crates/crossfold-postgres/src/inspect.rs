//! Looking around a store as an operator does (the `crossfold` command): which streams there
//! are, one event by its id, where the last events of the log begin. None of this is on a hot
//! path: each call is a one-off statement, planned for its actual arguments.

use crossfold_core::{
    EventId, LogFilter, Position, RecordedEvent, StoreError, StreamId, StreamVersion, Timestamp,
};

use crate::db::Db;
use crate::error::{classify, corrupt};
use crate::read::Decoder;
use crate::sql::{EVENT_COLUMNS, quoted};
use crate::types::{FilterParams, get, limit_param, position};

/// One stream, as [`PgEventStore::list_streams`](crate::PgEventStore::list_streams) finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgStreamInfo {
    /// The stream.
    pub stream: StreamId,
    /// Its version: how many events it holds.
    pub version: StreamVersion,
    /// When its first event was written.
    pub created_at: Timestamp,
    /// When its last event was written.
    pub updated_at: Timestamp,
}

/// `prefix` as a `LIKE` pattern matching every text that starts with it. Streams are keyed in
/// byte order ("C" collation), so PostgreSQL reads such a pattern as a range of the key.
fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Microseconds since the Unix epoch of a `timestamptz` column, for [`Timestamp`].
const MICROS: &str = "(extract(epoch FROM {}) * 1000000)::int8";

fn micros(column: &str) -> String {
    MICROS.replace("{}", column)
}

/// Streams by id prefix, in id order, for paging (see `PgEventStore::list_streams`).
pub(crate) async fn list_streams(
    db: &Db,
    prefix: &str,
    after: Option<&StreamId>,
    limit: usize,
    system: bool,
) -> Result<Vec<PgStreamInfo>, StoreError> {
    let client = db.client().await?;
    let sql = format!(
        "SELECT stream_id, version, {}, {} FROM {}.streams \
         WHERE version > 0 AND stream_id LIKE $1 AND stream_id > $2 \
           AND ($3 OR NOT starts_with(stream_id, '$')) \
         ORDER BY stream_id LIMIT $4",
        micros("created_at"),
        micros("updated_at"),
        quoted(&db.schema)
    );
    let after = after.map_or("", StreamId::as_str);
    let limit = limit_param(limit);
    let rows = client
        .query(&sql, &[&prefix_pattern(prefix), &after, &system, &limit])
        .await
        .map_err(classify)?;
    rows.iter()
        .map(|row| {
            let stream: &str = get(row, 0)?;
            let version: i64 = get(row, 1)?;
            Ok(PgStreamInfo {
                stream: StreamId::from_stored(stream)
                    .map_err(|e| corrupt(format!("stored stream id {stream:?}: {e}")))?,
                version: StreamVersion::try_from_i64(version)
                    .map_err(|e| corrupt(format!("stream version: {e}")))?,
                created_at: Timestamp::from_unix_micros(get(row, 2)?),
                updated_at: Timestamp::from_unix_micros(get(row, 3)?),
            })
        })
        .collect()
}

/// How many streams start with a prefix, and their events (see
/// `PgEventStore::count_streams`).
pub(crate) async fn count_streams(
    db: &Db,
    prefix: &str,
    system: bool,
) -> Result<(u64, u64), StoreError> {
    let client = db.client().await?;
    let sql = format!(
        "SELECT count(*), coalesce(sum(version), 0)::int8 FROM {}.streams \
         WHERE version > 0 AND stream_id LIKE $1 \
           AND ($2 OR NOT starts_with(stream_id, '$'))",
        quoted(&db.schema)
    );
    let row = client
        .query_one(&sql, &[&prefix_pattern(prefix), &system])
        .await
        .map_err(classify)?;
    let streams: i64 = get(&row, 0)?;
    let events: i64 = get(&row, 1)?;
    Ok((
        u64::try_from(streams).unwrap_or(0),
        u64::try_from(events).unwrap_or(0),
    ))
}

/// The event with an id, wherever it is (see `PgEventStore::read_event`).
pub(crate) async fn read_event(db: &Db, id: EventId) -> Result<Option<RecordedEvent>, StoreError> {
    let client = db.client().await?;
    // In an unpartitioned log by its unique index, in a partitioned one through `event_ids`
    // and the log index (see `Sql::existing_event`); then among archived streams' events.
    let q = quoted(&db.schema);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM ONLY {q}.events WHERE event_id = $1 \
         UNION ALL \
         SELECT {columns} FROM {q}.event_ids i \
         JOIN {q}.events ev ON ev.transaction_id = i.transaction_id AND ev.sequence = i.sequence \
         WHERE i.event_id = $1 \
         UNION ALL \
         SELECT {EVENT_COLUMNS} FROM {q}.archived_events WHERE event_id = $1 \
         LIMIT 1",
        columns = EVENT_COLUMNS
            .split(", ")
            .map(|c| format!("ev.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row = match client.query_opt(&sql, &[&id.as_uuid()]).await {
        // Before migration 14: every event in the events table, with its unique index.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            let legacy = format!("SELECT {EVENT_COLUMNS} FROM {q}.events WHERE event_id = $1");
            client.query_opt(&legacy, &[&id.as_uuid()]).await
        }
        row => row,
    }
    .map_err(classify)?;
    match row {
        Some(row) => Decoder::default().decode(&row, 0),
        None => Ok(None),
    }
}

/// Where about the last `count` events of a filtered log begin (see
/// `PgEventStore::position_before_last`).
pub(crate) async fn position_before_last(
    db: &Db,
    count: usize,
    filter: &LogFilter,
) -> Result<Position, StoreError> {
    let client = db.client().await?;
    let sql = format!(
        "SELECT transaction_id, sequence FROM {}.events \
         WHERE ($1::text[] IS NULL OR stream_id = ANY($1)) \
           AND ($2::text[] IS NULL OR split_part(stream_id, '-', 1) = ANY($2)) \
           AND ($3::text[] IS NULL OR event_type = ANY($3)) \
           AND ($4 OR NOT starts_with(stream_id, '$')) \
         ORDER BY transaction_id DESC, sequence DESC OFFSET $5 LIMIT 1",
        quoted(&db.schema)
    );
    let FilterParams {
        streams,
        categories,
        types,
        system,
    } = FilterParams::of(filter);
    let offset = i64::try_from(count).unwrap_or(i64::MAX);
    let row = client
        .query_opt(&sql, &[&streams, &categories, &types, &system, &offset])
        .await
        .map_err(classify)?;
    match row {
        Some(row) => position(&row, 0),
        None => Ok(Position::START),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_pattern;

    #[test]
    fn a_prefix_matches_only_itself_and_what_follows() {
        assert_eq!(prefix_pattern(""), "%");
        assert_eq!(prefix_pattern("account-"), "account-%");
        assert_eq!(prefix_pattern("50%_off\\"), "50\\%\\_off\\\\%");
    }
}
