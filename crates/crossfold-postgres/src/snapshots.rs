//! Snapshots of command state in the store's schema (migration 0011): the
//! [`SnapshotStore`] of [`PgEventStore`].
//!
//! Saves go through the `save_snapshot` function, the only way the application role writes
//! the table: it checks what it is given, also that no version lies beyond its stream's, and
//! refuses with SQLSTATE `CF011`, reported as [`StoreError::InvalidRequest`]. Loads, the
//! summary and drops are plain statements. The executor loads and saves on its command path,
//! so those two statements are prepared once per pooled connection; the operator's summary
//! and drop are one-off statements.

use crossfold_core::{
    EventId, Snapshot, SnapshotStore, SnapshotSummary, StoreError, StreamId, StreamVersion,
    Timestamp,
};
use deadpool_postgres::Object;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{classify, classify_pool, corrupt};
use crate::sql::quoted;
use crate::store::PgEventStore;
use crate::types::get;

/// SQLSTATE raised by `save_snapshot` for a snapshot it refuses (see migration 0011).
const REFUSED: &str = "CF011";

/// Microseconds since the Unix epoch of a `timestamptz` expression, for [`Timestamp`].
fn micros(expression: &str) -> String {
    format!("(extract(epoch FROM {expression}) * 1000000)::int8")
}

/// The snapshots of `state` under the keys sent as two arrays: every key's stream ids one key
/// after the other (`$2`), and for each the index of its key (`$3`). A key is rebuilt in the
/// order its ids were sent, then found through the primary key.
fn load_statement(schema: &str) -> String {
    format!(
        "SELECT k.key, sn.streams, sn.state_version, sn.discovered, sn.versions, sn.floor, \
                sn.payload, {taken_at} \
         FROM (SELECT u.key, array_agg(u.stream ORDER BY u.ord) AS streams \
               FROM unnest($2::text[], $3::int8[]) WITH ORDINALITY AS u(stream, key, ord) \
               GROUP BY u.key) k \
         JOIN {q}.snapshots sn ON sn.state = $1 AND sn.streams = k.streams",
        taken_at = micros("sn.taken_at"),
        q = quoted(schema)
    )
}

fn save_statement(schema: &str) -> String {
    format!(
        "SELECT {}.save_snapshot($1, $2, $3, $4, $5, $6, $7)",
        quoted(schema)
    )
}

/// A pooled connection of `store`; its prepared statements stay for the next caller.
async fn client(store: &PgEventStore) -> Result<Object, StoreError> {
    store.pool().get().await.map_err(classify_pool)
}

/// A refusal of `save_snapshot` as the invalid request it is; anything else as the store
/// classifies driver errors.
fn refusal(error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) if db.code().code() == REFUSED => {
            StoreError::InvalidRequest(db.message().to_owned())
        }
        _ => classify(error),
    }
}

/// A stored snapshot row (columns from `streams` on, as [`load_statement`] selects them), or
/// why it is not one this crate could have written.
fn snapshot_of(state: &str, row: &Row, at: usize) -> Result<Snapshot, StoreError> {
    let ids = |column: usize| -> Result<Vec<StreamId>, StoreError> {
        let stored: Vec<String> = get(row, column)?;
        stored
            .iter()
            .map(|id| {
                // `from_stored`: a key may name a system stream (`$...`), which the store holds
                // like any other.
                StreamId::from_stored(id).map_err(|e| {
                    corrupt(format!(
                        "a snapshot of {state:?} names the stream id {id:?}: {e}"
                    ))
                })
            })
            .collect()
    };
    let streams = ids(at)?;
    let state_version: i32 = get(row, at + 1)?;
    let state_version = u32::try_from(state_version).map_err(|_| {
        corrupt(format!(
            "a snapshot of {state:?} has the state version {state_version}"
        ))
    })?;
    let discovered = ids(at + 2)?;
    let versions: Vec<i64> = get(row, at + 3)?;
    let versions = versions
        .into_iter()
        .map(|v| {
            StreamVersion::try_from_i64(v)
                .map_err(|e| corrupt(format!("a snapshot of {state:?} has a version {v}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if versions.len() != streams.len() + discovered.len() {
        return Err(corrupt(format!(
            "a snapshot of {state:?} has {} versions for {} streams",
            versions.len(),
            streams.len() + discovered.len()
        )));
    }
    let floor = get::<Option<Uuid>>(row, at + 4)?
        .map(|uuid| {
            EventId::from_uuid(uuid).map_err(|e| {
                corrupt(format!(
                    "a snapshot of {state:?} has a floor that is not an event id: {e}"
                ))
            })
        })
        .transpose()?;
    Ok(Snapshot {
        state: state.to_owned(),
        state_version,
        streams,
        discovered,
        versions,
        floor,
        payload: get(row, at + 5)?,
        taken_at: Timestamp::from_unix_micros(get(row, at + 6)?),
    })
}

/// Snapshots in the store's `snapshots` table. Saving needs EXECUTE on `save_snapshot`
/// ([`PgEventStore::grant_access`] grants it); dropping needs DELETE on the table, which only
/// the schema's owner has.
impl SnapshotStore for PgEventStore {
    /// One round trip for all keys, whatever their number.
    async fn load_snapshots(
        &self,
        state: &str,
        keys: &[Vec<StreamId>],
    ) -> Result<Vec<Option<Snapshot>>, StoreError> {
        let mut found: Vec<Option<Snapshot>> = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(found);
        }
        let ids: Vec<&str> = keys.iter().flatten().map(StreamId::as_str).collect();
        let key_of: Vec<i64> = keys
            .iter()
            .enumerate()
            .flat_map(|(i, key)| {
                std::iter::repeat_n(i64::try_from(i).unwrap_or(i64::MAX), key.len())
            })
            .collect();
        let client = client(self).await?;
        let statement = client
            .prepare_cached(&load_statement(self.schema()))
            .await
            .map_err(classify)?;
        let rows = client
            .query(&statement, &[&state, &ids, &key_of])
            .await
            .map_err(classify)?;
        for row in rows {
            let key: i64 = get(&row, 0)?;
            let slot = usize::try_from(key)
                .ok()
                .and_then(|key| found.get_mut(key))
                .ok_or_else(|| corrupt(format!("a snapshot found for key {key}, not asked for")))?;
            *slot = Some(snapshot_of(state, &row, 1)?);
        }
        Ok(found)
    }

    /// Checked here first ([`Snapshot::validate`]), so a request the function would refuse
    /// costs no round trip; the function checks again, and checks the streams' versions.
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        snapshot.validate()?;
        let state_version = i32::try_from(snapshot.state_version).map_err(|_| {
            StoreError::InvalidRequest(format!(
                "a snapshot's state version is at most {} in this store, not {}",
                i32::MAX,
                snapshot.state_version
            ))
        })?;
        let streams: Vec<&str> = snapshot.streams.iter().map(StreamId::as_str).collect();
        let discovered: Vec<&str> = snapshot.discovered.iter().map(StreamId::as_str).collect();
        let versions = snapshot
            .versions
            .iter()
            .map(|v| {
                i64::try_from(v.get()).map_err(|_| {
                    StoreError::InvalidRequest(format!(
                        "a snapshot claims the version {v}, beyond any stream's"
                    ))
                })
            })
            .collect::<Result<Vec<i64>, _>>()?;
        let floor = snapshot.floor.map(|id| id.as_uuid());
        let client = client(self).await?;
        let statement = client
            .prepare_cached(&save_statement(self.schema()))
            .await
            .map_err(classify)?;
        client
            .query_one(
                &statement,
                &[
                    &snapshot.state,
                    &state_version,
                    &streams,
                    &discovered,
                    &versions,
                    &floor,
                    &snapshot.payload,
                ],
            )
            .await
            .map_err(refusal)?;
        Ok(())
    }

    /// One row per state name, in name order. Reads every snapshot's row, not its payload
    /// (sizes come from the stored lengths).
    async fn snapshot_summary(&self) -> Result<Vec<SnapshotSummary>, StoreError> {
        let client = client(self).await?;
        let sql = format!(
            "SELECT state, count(*), coalesce(sum(octet_length(payload)), 0)::int8, \
                    array_agg(DISTINCT state_version ORDER BY state_version), {newest} \
             FROM {q}.snapshots GROUP BY state ORDER BY state",
            newest = micros("max(taken_at)"),
            q = quoted(self.schema())
        );
        let rows = client.query(&sql, &[]).await.map_err(classify)?;
        rows.iter()
            .map(|row| {
                let state: String = get(row, 0)?;
                let count: i64 = get(row, 1)?;
                let bytes: i64 = get(row, 2)?;
                let versions: Vec<i32> = get(row, 3)?;
                let state_versions = versions
                    .into_iter()
                    .map(|v| {
                        u32::try_from(v).map_err(|_| {
                            corrupt(format!("a snapshot of {state:?} has the state version {v}"))
                        })
                    })
                    .collect::<Result<Vec<u32>, _>>()?;
                let newest: Option<i64> = get(row, 4)?;
                Ok(SnapshotSummary {
                    count: u64::try_from(count).unwrap_or(0),
                    bytes: u64::try_from(bytes).unwrap_or(0),
                    state_versions,
                    newest: newest.map(Timestamp::from_unix_micros),
                    state,
                })
            })
            .collect()
    }

    /// Needs DELETE on the table: run as the schema's owner (the application role may not).
    async fn drop_snapshots(&self, state: &str) -> Result<u64, StoreError> {
        let client = client(self).await?;
        let sql = format!(
            "DELETE FROM {}.snapshots WHERE state = $1",
            quoted(self.schema())
        );
        client.execute(&sql, &[&state]).await.map_err(classify)
    }
}
