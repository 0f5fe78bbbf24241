//! Why the append function refused, as the error the caller can act on.
//!
//! * A failed condition is the function's own report: SQLSTATE `CF001` with the conflicts as a
//!   JSON array in its DETAIL, read with serde.
//! * An event id already stored, and a stream row set back below its stream's events, are unique
//!   violations that PostgreSQL raises itself in the middle of the function's INSERT; the
//!   violated constraint (a field of the error) tells them apart. The function cannot catch them
//!   and answer in its own words without a subtransaction on every append (an `EXCEPTION`
//!   block: a savepoint and a second transaction id per call), so what else there is to know
//!   comes from the server's own error or is looked up on the same connection.
//! * A data exception (a payload that is not valid JSON, a NUL in JSON text, ...) is an invalid
//!   request.

use crossfold_core::{AppendRequest, EventId, StoreError, StreamConflict, StreamVersion};
use deadpool_postgres::ClientWrapper;
use serde::Deserialize;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::error::{CONFLICT, classify, corrupt, in_class};
use crate::sql::Sql;
use crate::types::get;

/// The constraints an event id already stored violates: in an unpartitioned log (migration 1)
/// and in a partitioned one (migration 14).
const EVENT_ID_KEYS: [&str; 2] = ["events_event_id_key", "event_ids_pkey"];
/// The constraint a stream version already stored violates, `(stream_id, stream_version)`: in
/// an unpartitioned log (and the first partition of a partitioned one), and in each later
/// partition, `events_<partition>_stream_version_key` (migration 14).
const STREAM_VERSION_KEY: &str = "events_pkey";

/// Whether `constraint` is a partition's unique index of stream versions (migration 14).
fn stream_version_key(constraint: &str) -> bool {
    constraint == STREAM_VERSION_KEY
        || (constraint.starts_with("events_") && constraint.ends_with("_stream_version_key"))
}

/// What the server said when it refused an append: its SQLSTATE, message, DETAIL and the
/// violated constraint. From a failed call of the append function (its error's fields), or
/// from one row of the group function (what it caught for one request).
pub(super) struct Refusal<'e> {
    pub(super) code: &'e SqlState,
    pub(super) message: &'e str,
    pub(super) detail: Option<&'e str>,
    pub(super) constraint: Option<&'e str>,
}

/// The error the caller can act on for `error`, a failed call of the append function for
/// `request` whose events have the ids `ids`. Looks up what the server did not say on `client`,
/// the connection the call failed on.
pub(super) async fn explain(
    error: tokio_postgres::Error,
    request: &AppendRequest,
    ids: &[Uuid],
    client: &ClientWrapper,
    sql: &Sql,
) -> StoreError {
    let explained = match error.as_db_error() {
        Some(db) => {
            let refusal = Refusal {
                code: db.code(),
                message: db.message(),
                detail: db.detail(),
                constraint: db.constraint(),
            };
            explain_refusal(&refusal, request, ids, client, sql).await
        }
        None => None,
    };
    explained.unwrap_or_else(|| classify(error))
}

/// The error the caller can act on for `refusal`, the server's refusal of `request` (whose
/// events have the ids `ids`); `None` when it is not one of the refusals an append can meet
/// (the caller classifies the server's error as any other). Looks up what the server did not
/// say on `client`, the connection of the refused call.
pub(super) async fn explain_refusal(
    refusal: &Refusal<'_>,
    request: &AppendRequest,
    ids: &[Uuid],
    client: &ClientWrapper,
    sql: &Sql,
) -> Option<StoreError> {
    let code = refusal.code;
    if *code == *CONFLICT {
        Some(conflict(refusal.detail, request))
    } else if *code == SqlState::UNIQUE_VIOLATION
        && refusal
            .constraint
            .is_some_and(|c| EVENT_ID_KEYS.contains(&c))
    {
        Some(
            match refusal
                .detail
                .and_then(|detail| duplicate_in(detail, request))
            {
                Some(id) => StoreError::DuplicateEvent(id),
                None => find_duplicate(client, sql, ids).await,
            },
        )
    } else if *code == SqlState::UNIQUE_VIOLATION
        && refusal.constraint.is_some_and(stream_version_key)
    {
        match stream_behind(client, sql, request).await {
            Ok(Some(conflict)) => Some(conflict),
            Ok(None) => None,
            Err(e) => Some(e),
        }
    } else if *code == SqlState::CHECK_VIOLATION
        && (refusal.message.contains("\"events_default\"")
            || refusal.constraint == Some("events_before_partitions"))
    {
        // Routed to the default partition of a partitioned log just before a partition for
        // it was attached (see `error::classify`): nothing written, a retry routes anew.
        Some(StoreError::Contention(refusal.message.to_owned().into()))
    } else if code.code() == crate::archive::ARCHIVED {
        Some(StoreError::Backend(Box::new(crate::PgStreamArchived::new(
            refusal.detail.unwrap_or_default(),
        ))))
    } else if in_class(code, &SqlState::DATA_EXCEPTION) {
        // A payload that is not valid JSON, a NUL in JSON text, ...
        Some(StoreError::InvalidRequest(format!(
            "the database refused an event: {}",
            refusal.message
        )))
    } else {
        None
    }
}

#[derive(Deserialize)]
struct ConflictRow {
    stream: String,
    actual: i64,
    /// Refused for another writer's turn on the stream (migration 10).
    #[serde(default)]
    turn: bool,
}

/// The conflict the append function reported in its error's DETAIL, in request order.
fn conflict(detail: Option<&str>, request: &AppendRequest) -> StoreError {
    let rows: Vec<ConflictRow> = match detail.map(serde_json::from_str) {
        Some(Ok(rows)) => rows,
        _ => return corrupt(format!("unreadable conflict report {detail:?}")),
    };
    let mut conflicts = Vec::with_capacity(rows.len());
    for row in rows {
        let Some((index, s)) = request
            .streams
            .iter()
            .enumerate()
            .find(|(_, s)| s.stream.as_str() == row.stream)
        else {
            return corrupt(format!(
                "conflict reported on stream {:?} outside the request",
                row.stream
            ));
        };
        conflicts.push((index, {
            let conflict = StreamConflict::new(
                s.stream.clone(),
                s.expected,
                StreamVersion::new(u64::try_from(row.actual).unwrap_or(0)),
            );
            if row.turn {
                conflict.turn_held()
            } else {
                conflict
            }
        }));
    }
    conflicts.sort_by_key(|(i, _)| *i);
    StoreError::Conflict(conflicts.into_iter().map(|(_, c)| c).collect())
}

/// The event of the request that the server's unique violation names. Only the server's own
/// DETAIL says which key it met (`Key (event_id)=(…) already exists.`, the words translated
/// with `lc_messages`); rather than cutting the id out of that text, this looks for the
/// request's ids in it, so it can only ever name an event of the request. `None` when the
/// server's DETAIL names no event of the request.
fn duplicate_in(detail: &str, request: &AppendRequest) -> Option<EventId> {
    let mut text = Uuid::encode_buffer();
    request
        .streams
        .iter()
        .flat_map(|s| &s.events)
        .map(|e| e.event_id)
        .find(|id| detail.contains(&*id.as_uuid().hyphenated().encode_lower(&mut text)))
}

/// Which of `ids` is stored, when the server's error did not say.
async fn find_duplicate(client: &ClientWrapper, sql: &Sql, ids: &[Uuid]) -> StoreError {
    // Where event ids are (migration 14), else (before it) in the events table.
    let search = |archives: bool| async move {
        let statement = client.prepare_cached(sql.existing_event(archives)).await?;
        client.query_opt(&statement, &[&ids]).await
    };
    let found = match search(true).await {
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => search(false).await,
        found => found,
    };
    match found {
        Ok(Some(row)) => match get::<Uuid>(&row, 0).map(EventId::from_uuid) {
            Ok(Ok(id)) => StoreError::DuplicateEvent(id),
            _ => corrupt("a duplicate event id could not be read back"),
        },
        Ok(None) => corrupt("an event id was reported as duplicate but is not stored"),
        Err(e) => classify(e),
    }
}

/// A stream version that already exists among its stream's events although the stream's row
/// allowed the append: the row was set back below the stream's real version (by hand, or by a
/// partial restore). A conflict, naming the first stream of the request that receives events
/// and whose events go beyond its row (the first one the INSERT met: events go in in request
/// order) with its real version. `None` when no stream of the request is behind (any more).
async fn stream_behind(
    client: &ClientWrapper,
    sql: &Sql,
    request: &AppendRequest,
) -> Result<Option<StoreError>, StoreError> {
    let written: Vec<(usize, &str)> = request
        .streams
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.events.is_empty())
        .map(|(i, s)| (i, s.stream.as_str()))
        .collect();
    let streams: Vec<&str> = written.iter().map(|&(_, s)| s).collect();
    let row = async {
        let statement = client.prepare_cached(&sql.stream_behind).await?;
        client.query_opt(&statement, &[&streams]).await
    }
    .await
    .map_err(classify)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let ord: i64 = get(&row, 0)?;
    let actual: i64 = get(&row, 1)?;
    let Some(s) = usize::try_from(ord)
        .ok()
        .and_then(|o| o.checked_sub(1))
        .and_then(|i| written.get(i))
        .and_then(|&(index, _)| request.streams.get(index))
    else {
        return Err(corrupt(format!(
            "stream number {ord} is outside the request"
        )));
    };
    Ok(Some(StoreError::Conflict(vec![StreamConflict::new(
        s.stream.clone(),
        s.expected,
        StreamVersion::new(u64::try_from(actual).unwrap_or(0)),
    )])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{EventData, ExpectedVersion, Payload, StreamId};

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    #[test]
    fn a_conflict_report_is_read_in_request_order() {
        let request = AppendRequest::new()
            .check(sid("b"), ExpectedVersion::NoStream)
            .check(sid("a"), ExpectedVersion::Exact(StreamVersion::new(2)));
        let detail = r#"[{"stream": "a", "actual": 3}, {"stream": "b", "actual": 1}]"#;
        match conflict(Some(detail), &request) {
            StoreError::Conflict(c) => {
                assert_eq!(c.len(), 2);
                assert_eq!((c[0].stream.as_str(), c[0].actual.get()), ("b", 1));
                assert_eq!((c[1].stream.as_str(), c[1].actual.get()), ("a", 3));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            conflict(Some("not json"), &request),
            StoreError::Backend(_)
        ));
        let outside = r#"[{"stream": "z", "actual": 3}]"#;
        assert!(matches!(
            conflict(Some(outside), &request),
            StoreError::Backend(_)
        ));
    }

    #[test]
    fn a_duplicate_is_one_of_the_request_s_events() {
        let e = |_| EventData::new("E", Payload::json(&b"{}"[..]));
        let events: Vec<EventData> = (0..3).map(e).collect();
        let named = events[1].event_id;
        let request = AppendRequest::new().stream(sid("s"), ExpectedVersion::Any, events);
        let mut text = Uuid::encode_buffer();
        let id = named
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut text)
            .to_owned();
        let english = format!("Key (event_id)=({id}) already exists.");
        assert_eq!(duplicate_in(&english, &request), Some(named));
        let german = format!("Schlüssel »(event_id)=({id})« existiert bereits.");
        assert_eq!(duplicate_in(&german, &request), Some(named));
        let other = "Key (event_id)=(0190b4d2-0000-7000-8000-000000000000) already exists.";
        assert_eq!(duplicate_in(other, &request), None);
    }
}
