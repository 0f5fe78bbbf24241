//! Turning event rows into [`RecordedEvent`]s without needless allocation: stream ids, event
//! types and metadata repeat from row to row, so each is built once and shared.

use std::sync::Arc;

use bytes::Bytes;
use crossfold_core::{
    CodecError, CodecOperation, EventId, EventType, Metadata, Payload, Position, RecordedEvent,
    StoreError, StreamId, StreamVersion,
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{PgUndecodableEvent, corrupt};
use crate::types::{RawJsonb, Xid8, get};

/// Remembers what the previous rows held, so repeats are shared instead of rebuilt.
#[derive(Default)]
pub(crate) struct Decoder {
    stream: Option<StreamId>,
    types: Vec<EventType>,
    metadata: Option<(Vec<u8>, Arc<Metadata>)>,
}

/// How many distinct event types a decoder remembers; reads rarely mix more.
const TYPE_CACHE: usize = 16;

impl Decoder {
    /// A decoder that already knows the stream being read.
    pub(crate) fn for_stream(stream: StreamId) -> Self {
        Self {
            stream: Some(stream),
            ..Self::default()
        }
    }

    /// Decodes the event whose columns start at `at` (in `sql::EVENT_COLUMNS` order). Returns
    /// `None` when the row carries no event (an outer join that matched nothing). A row that
    /// holds an event this store cannot represent fails with a [`PgUndecodableEvent`] naming
    /// its position.
    pub(crate) fn decode(
        &mut self,
        row: &Row,
        at: usize,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let Some(transaction) = get::<Option<Xid8>>(row, at)? else {
            return Ok(None);
        };
        let sequence: i64 = get(row, at + 1)?;
        let sequence = u64::try_from(sequence)
            .map_err(|_| corrupt(format!("negative sequence {sequence}")))?;
        let position = Position::new(transaction.0, sequence);
        let event_type: &str = get(row, at + 5)?;
        let mut event_id = None;
        let mut stream = None;
        self.decode_at(row, at, position, &mut event_id, &mut stream)
            .map(Some)
            .map_err(|reason| {
                let mut error = CodecError::new(
                    CodecOperation::Decode,
                    event_type,
                    PgUndecodableEvent::new(position, reason),
                );
                error.event_id = event_id;
                error.stream = stream;
                StoreError::Serialization(error)
            })
    }

    /// The rest of [`decode`](Self::decode); fills in what it could read, for the error.
    fn decode_at(
        &mut self,
        row: &Row,
        at: usize,
        position: Position,
        id: &mut Option<EventId>,
        at_stream: &mut Option<(StreamId, StreamVersion)>,
    ) -> Result<RecordedEvent, String> {
        let column = |e: StoreError| {
            std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
        };
        let event_id: Uuid = get(row, at + 2).map_err(column)?;
        let stream: &str = get(row, at + 3).map_err(column)?;
        let version: i64 = get(row, at + 4).map_err(column)?;
        let event_type: &str = get(row, at + 5).map_err(column)?;
        let schema_version: i32 = get(row, at + 6).map_err(column)?;
        let json: Option<RawJsonb<'_>> = get(row, at + 7).map_err(column)?;
        let bytes: Option<&[u8]> = get(row, at + 8).map_err(column)?;
        let metadata: RawJsonb<'_> = get(row, at + 9).map_err(column)?;

        let stream_id = self
            .stream(stream)
            .map_err(|e| format!("stream id {stream:?}: {e}"))?;
        let stream_version =
            StreamVersion::try_from_i64(version).map_err(|e| format!("stream version: {e}"))?;
        *at_stream = Some((stream_id.clone(), stream_version));
        let event_id =
            EventId::from_uuid(event_id).map_err(|e| format!("event id {event_id}: {e}"))?;
        *id = Some(event_id);
        let schema_version = u16::try_from(schema_version)
            .map_err(|_| format!("schema version {schema_version} out of range"))?;
        let payload = match (json, bytes) {
            (Some(json), None) => Payload::json(Bytes::copy_from_slice(json.0)),
            (None, Some(bytes)) => Payload::message_pack(Bytes::copy_from_slice(bytes)),
            _ => return Err("exactly one payload column must be set".to_owned()),
        };
        Ok(RecordedEvent {
            event_id,
            stream_id,
            stream_version,
            position,
            event_type: self.event_type(event_type),
            schema_version,
            payload,
            metadata: self
                .metadata(metadata.0)
                .map_err(|e| format!("metadata: {e}"))?,
        })
    }

    fn stream(&mut self, name: &str) -> Result<StreamId, crossfold_core::ValidationError> {
        if let Some(s) = &self.stream
            && s.as_str() == name
        {
            return Ok(s.clone());
        }
        let s = StreamId::from_stored(name)?;
        self.stream = Some(s.clone());
        Ok(s)
    }

    fn event_type(&mut self, name: &str) -> EventType {
        if let Some(t) = self.types.iter().find(|t| t.as_str() == name) {
            return t.clone();
        }
        let t = EventType::from(name);
        if self.types.len() < TYPE_CACHE {
            self.types.push(t.clone());
        }
        t
    }

    fn metadata(&mut self, raw: &[u8]) -> Result<Arc<Metadata>, serde_json::Error> {
        if let Some((last, metadata)) = &self.metadata
            && last.as_slice() == raw
        {
            return Ok(metadata.clone());
        }
        let metadata: Arc<Metadata> = Arc::new(serde_json::from_slice(raw)?);
        self.metadata = Some((raw.to_vec(), metadata.clone()));
        Ok(metadata)
    }
}
