//! Idempotency: an execution whose context carries a key also appends, in the same atomic
//! append, a record of what it wrote to the new system stream `$idempotency-<key>`. A second
//! execution with that key conflicts on the record's stream and returns the outcome it
//! records instead of writing again — across processes too, since the store decides.

use std::sync::Arc;

use crossfold_core::{
    AppendStream, Codec, CodecError, CodecOperation, EventData, EventId, EventStore, EventType,
    ExpectedVersion, Json, Metadata, RecordedEvent, StoreError, StreamId, StreamRead,
    StreamVersion,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::executed::Executed;

const IDEMPOTENCY_PREFIX: &str = "idempotency-";
const IDEMPOTENCY_EVENT: &str = "$CommandCompleted";

#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    command: String,
    writes: Vec<WrittenRange>,
}

#[derive(Serialize, Deserialize)]
struct WrittenRange {
    stream: StreamId,
    first: StreamVersion,
    count: u64,
}

/// The marker stream of an idempotency key; a key that makes no valid stream name is the
/// caller's input refused.
pub(crate) fn marker_stream(key: Option<&str>) -> Result<Option<StreamId>, Error> {
    match key {
        Some(key) => Ok(Some(
            StreamId::system(format!("{IDEMPOTENCY_PREFIX}{key}"))
                .map_err(|e| Error::Command(e.into()))?,
        )),
        None => Ok(None),
    }
}

/// The idempotency marker of an append: a new stream whose one event records what the command
/// wrote, so that running it again with the same key finds it and returns the same outcome.
pub(crate) fn marker_append(
    command: &str,
    marker: &StreamId,
    streams: &[AppendStream],
    versions: &[StreamVersion],
    metadata: &Arc<Metadata>,
) -> Result<AppendStream, CodecError> {
    let record = IdempotencyRecord {
        command: command.to_owned(),
        writes: streams
            .iter()
            .zip(versions)
            .filter(|(s, _)| !s.events.is_empty())
            .map(|(s, version)| WrittenRange {
                stream: s.stream.clone(),
                first: version.next(),
                count: s.events.len() as u64,
            })
            .collect(),
    };
    let payload = Json
        .encode(&record)
        .map_err(|e| CodecError::new(CodecOperation::Encode, IDEMPOTENCY_EVENT, e))?;
    Ok(AppendStream {
        stream: marker.clone(),
        expected: ExpectedVersion::NoStream,
        events: vec![EventData {
            event_id: EventId::generate(),
            event_type: EventType::from_static(IDEMPOTENCY_EVENT),
            schema_version: 1,
            payload,
            metadata: metadata.clone(),
        }],
    })
}

/// Returns the outcome recorded by an earlier execution with the same idempotency key.
pub(crate) async fn replay<S: EventStore>(
    store: &S,
    marker: &StreamId,
    attempts: u32,
) -> Result<Executed, Error> {
    let stream = store
        .read_stream(marker, StreamVersion::EMPTY, 1)
        .await
        .map_err(|e| Error::store(e, attempts))?;
    let Some(first) = stream.events.first() else {
        return Err(Error::store(
            StoreError::Backend(
                format!("idempotency record {marker} conflicted but reads empty").into(),
            ),
            attempts,
        ));
    };
    let record: IdempotencyRecord =
        crossfold_core::decode_payload(&first.payload).map_err(|e| {
            Error::Codec(
                CodecError::new(CodecOperation::Decode, IDEMPOTENCY_EVENT, e).at(
                    first.event_id,
                    marker.clone(),
                    first.stream_version,
                ),
            )
        })?;
    let reads: Vec<StreamRead> = record
        .writes
        .iter()
        .map(|w| StreamRead {
            stream: w.stream.clone(),
            after: StreamVersion::new(w.first.get().saturating_sub(1)),
            limit: usize::try_from(w.count).unwrap_or(usize::MAX),
        })
        .collect();
    let mut events: Vec<RecordedEvent> = store
        .read_streams(&reads)
        .await
        .map_err(|e| Error::store(e, attempts))?
        .into_iter()
        .flat_map(|s| s.events)
        .collect();
    events.sort_by_key(|e| e.event_id);
    Ok(Executed {
        events,
        attempts,
        conflicts: 0,
        replayed: true,
    })
}
