//! Reading streams: one stream (the commonest read, with a leaner statement when it is read
//! whole) or several in one statement, each with its version.
//!
//! Each read also looks at the stream's row, and so knows two things the events alone cannot
//! tell (migration 14): that the stream is archived — its events left the log — and that
//! versions are missing from what the log returned (they are in a detached partition). Either
//! way the read does not return a shortened history that a command would fold as if it were
//! whole: an archived stream is read back from the archive or refused, as the store is
//! configured ([`PgArchivedReads`]), and missing versions fail the read with
//! [`PgEventsDetached`].

use crossfold_core::{StoreError, StreamEvents, StreamId, StreamRead, StreamVersion};
use tokio_postgres::Row;

use super::decode::Decoder;
use super::quarantine::skip_quarantined;
use crate::archive::{PgArchivedReads, PgEventsDetached, PgStreamArchived};
use crate::db::Db;
use crate::error::{classify, corrupt};
use crate::read_index;
use crate::types::{get, limit_param};

/// Where an event's stream version sits among `sql::EVENT_COLUMNS`.
const VERSION_COLUMN: usize = 4;

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
    let sql = db.sql.stream_reads(archives(db, &client).await);
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
    let mut out = StreamEvents {
        stream: read.stream.clone(),
        version: StreamVersion::EMPTY,
        events: Vec::with_capacity(rows.len()),
    };
    let mut check = Contiguous::new(read);
    let mut decoder = Decoder::for_stream(read.stream.clone());
    for row in &rows {
        out.version = stream_version(row, 0)?;
        if get::<bool>(row, 1)? {
            return read_archived(db, read).await;
        }
        check.saw(row, 2)?;
        match decoder.decode(row, 2) {
            Ok(Some(event)) => out.events.push(event),
            Ok(None) => {}
            Err(e) => skip_quarantined(db, e).await?,
        }
    }
    check.finish(out.version)?;
    Ok(out)
}

async fn read_many(db: &Db, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
    let streams: Vec<&str> = reads.iter().map(|r| r.stream.as_str()).collect();
    let afters = reads
        .iter()
        .map(|r| version_param(r.after))
        .collect::<Result<Vec<_>, _>>()?;
    let limits: Vec<i64> = reads.iter().map(|r| limit_param(r.limit)).collect();
    let client = db.client().await?;
    let sql = db.sql.stream_reads(archives(db, &client).await);
    let statement = client
        .prepare_cached(&sql.read_many)
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
    let mut checks: Vec<Contiguous> = reads.iter().map(Contiguous::new).collect();
    let mut archived = vec![false; reads.len()];
    let mut decoder = Decoder::default();
    for row in &rows {
        let ord: i64 = get(row, 0)?;
        let i = usize::try_from(ord)
            .ok()
            .and_then(|o| o.checked_sub(1))
            .filter(|&i| i < out.len())
            .ok_or_else(|| corrupt(format!("read returned stream number {ord}")))?;
        out[i].version = stream_version(row, 1)?;
        if get::<bool>(row, 2)? {
            archived[i] = true;
            continue;
        }
        checks[i].saw(row, 3)?;
        match decoder.decode(row, 3) {
            Ok(Some(event)) => out[i].events.push(event),
            Ok(None) => {}
            Err(e) => skip_quarantined(db, e).await?,
        }
    }
    for (i, check) in checks.iter().enumerate() {
        if archived[i] {
            out[i] = read_archived(db, &reads[i]).await?;
        } else {
            check.finish(out[i].version)?;
        }
    }
    Ok(out)
}

/// Whether the schema has archived streams (migration 14), as last looked up with its read
/// indexes (looked up again when that is long ago).
async fn archives(db: &Db, client: &tokio_postgres::Client) -> bool {
    read_index::current(db, client).await;
    db.read_indexes.archives()
}

/// An archived stream, as the store is configured to answer for one: refused, or read from
/// the archive as far as `read` asks.
async fn read_archived(db: &Db, read: &StreamRead) -> Result<StreamEvents, StoreError> {
    match db.archived_reads {
        PgArchivedReads::Refuse => Err(StoreError::Backend(Box::new(PgStreamArchived::new(
            read.stream.as_str(),
        )))),
        PgArchivedReads::ReadBack => {
            archived_stream(db, &read.stream, read.after, read.limit).await
        }
    }
}

/// The events of archived stream `stream` after version `after`, at most `limit`, with the
/// stream's version; an empty history when the stream is not archived.
pub(crate) async fn archived_stream(
    db: &Db,
    stream: &StreamId,
    after: StreamVersion,
    limit: usize,
) -> Result<StreamEvents, StoreError> {
    let client = db.client().await?;
    let statement = client
        .prepare_cached(&db.sql.read_archived)
        .await
        .map_err(classify)?;
    let rows = client
        .query(
            &statement,
            &[
                &stream.as_str(),
                &version_param(after)?,
                &limit_param(limit),
            ],
        )
        .await
        .map_err(classify)?;
    drop(client);
    let mut out = StreamEvents {
        stream: stream.clone(),
        version: StreamVersion::EMPTY,
        events: Vec::with_capacity(rows.len()),
    };
    let mut decoder = Decoder::for_stream(stream.clone());
    for row in &rows {
        out.version = stream_version(row, 0)?;
        if let Some(event) = decoder.decode(row, 1)? {
            out.events.push(event);
        }
    }
    Ok(out)
}

/// Checks that a read of a stream returned every version it asked for: the first one after
/// its `after`, then one after another, up to its limit or the stream's version.
struct Contiguous {
    stream: StreamId,
    next: u64,
    left: usize,
}

impl Contiguous {
    fn new(read: &StreamRead) -> Self {
        Self {
            stream: read.stream.clone(),
            next: read.after.get().saturating_add(1),
            left: read.limit,
        }
    }

    /// The event columns of `row` start at `at` (none on a row of a stream without events).
    fn saw(&mut self, row: &Row, at: usize) -> Result<(), StoreError> {
        let Some(version) = get::<Option<i64>>(row, at + VERSION_COLUMN)? else {
            return Ok(());
        };
        let version = u64::try_from(version)
            .map_err(|_| corrupt(format!("negative stream version {version}")))?;
        if version != self.next {
            return Err(self.missing(version.saturating_sub(1)));
        }
        self.next += 1;
        self.left = self.left.saturating_sub(1);
        Ok(())
    }

    /// After the last row: the versions up to the stream's `version` that the limit left room
    /// for were all there.
    fn finish(&self, version: StreamVersion) -> Result<(), StoreError> {
        if self.left > 0 && version.get() >= self.next {
            return Err(self.missing(version.get()));
        }
        Ok(())
    }

    fn missing(&self, to: u64) -> StoreError {
        StoreError::Backend(Box::new(PgEventsDetached::new(
            self.stream.as_str(),
            self.next,
            to,
        )))
    }
}

/// A stream version column.
fn stream_version(row: &Row, at: usize) -> Result<StreamVersion, StoreError> {
    let v: i64 = get(row, at)?;
    StreamVersion::try_from_i64(v).map_err(|e| corrupt(format!("stream version: {e}")))
}

fn version_param(v: StreamVersion) -> Result<i64, StoreError> {
    i64::try_from(v.get())
        .map_err(|_| StoreError::InvalidRequest(format!("stream version {v} is out of range")))
}
