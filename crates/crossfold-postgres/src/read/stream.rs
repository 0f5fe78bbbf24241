//! Reading streams: one stream (the commonest read, with a leaner statement when it is read
//! whole) or several in one statement, each with its version.

use crossfold_core::{StoreError, StreamEvents, StreamRead, StreamVersion};

use super::decode::Decoder;
use super::quarantine::skip_quarantined;
use crate::db::Db;
use crate::error::{classify, corrupt};
use crate::types::{get, limit_param};

/// The streams `reads` names, each as far as its read asks, in the order of `reads`.
pub(crate) async fn read_streams(
    db: &Db,
    reads: &[StreamRead],
) -> Result<Vec<StreamEvents>, StoreError> {
    match reads {
        [] => Ok(Vec::new()),
        [one] => Ok(vec![read_one(db, one).await?]),
        _ => read_many(db, reads).await,
    }
}

async fn read_one(db: &Db, read: &StreamRead) -> Result<StreamEvents, StoreError> {
    let whole = read.after.is_empty() && read.limit == usize::MAX;
    let client = db.client().await?;
    let sql = &db.sql;
    let statement = client
        .prepare_cached(if whole {
            &sql.read_stream
        } else {
            &sql.read_one
        })
        .await
        .map_err(classify)?;
    let (after, limit) = (version_param(read.after)?, limit_param(read.limit));
    let stream = read.stream.as_str();
    let rows = if whole {
        client.query(&statement, &[&stream]).await
    } else {
        client.query(&statement, &[&stream, &after, &limit]).await
    }
    .map_err(classify)?;
    drop(client);
    let mut decoder = Decoder::for_stream(read.stream.clone());
    let mut version = StreamVersion::EMPTY;
    let mut events = Vec::with_capacity(rows.len());
    let at = if whole { 0 } else { 1 };
    for row in &rows {
        if !whole {
            version = stream_version(row, 0)?;
        }
        match decoder.decode(row, at) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => {}
            Err(e) => skip_quarantined(db, e).await?,
        }
    }
    if whole {
        version = events
            .last()
            .map_or(StreamVersion::EMPTY, |e| e.stream_version);
    }
    Ok(StreamEvents {
        stream: read.stream.clone(),
        version,
        events,
    })
}

async fn read_many(db: &Db, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
    let streams: Vec<&str> = reads.iter().map(|r| r.stream.as_str()).collect();
    let afters = reads
        .iter()
        .map(|r| version_param(r.after))
        .collect::<Result<Vec<_>, _>>()?;
    let limits: Vec<i64> = reads.iter().map(|r| limit_param(r.limit)).collect();
    let client = db.client().await?;
    let statement = client
        .prepare_cached(&db.sql.read_many)
        .await
        .map_err(classify)?;
    let rows = client
        .query(&statement, &[&streams, &afters, &limits])
        .await
        .map_err(classify)?;
    drop(client);
    let mut out: Vec<StreamEvents> = reads
        .iter()
        .map(|r| StreamEvents {
            stream: r.stream.clone(),
            version: StreamVersion::EMPTY,
            events: Vec::new(),
        })
        .collect();
    let mut decoder = Decoder::default();
    for row in &rows {
        let ord: i64 = get(row, 0)?;
        let slot = usize::try_from(ord)
            .ok()
            .and_then(|o| o.checked_sub(1))
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| corrupt(format!("read returned stream number {ord}")))?;
        slot.version = stream_version(row, 1)?;
        match decoder.decode(row, 2) {
            Ok(Some(event)) => slot.events.push(event),
            Ok(None) => {}
            Err(e) => skip_quarantined(db, e).await?,
        }
    }
    Ok(out)
}

/// A stream version column.
fn stream_version(row: &tokio_postgres::Row, at: usize) -> Result<StreamVersion, StoreError> {
    let v: i64 = get(row, at)?;
    StreamVersion::try_from_i64(v).map_err(|e| corrupt(format!("stream version: {e}")))
}

fn version_param(v: StreamVersion) -> Result<i64, StoreError> {
    i64::try_from(v.get())
        .map_err(|_| StoreError::InvalidRequest(format!("stream version {v} is out of range")))
}
