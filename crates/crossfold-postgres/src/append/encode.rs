//! Encoding an append into the array arguments of the `append` function, and reading its
//! answer back in the request's order.

use std::sync::Arc;

use crossfold_core::{
    AppendRequest, Appended, ExpectedVersion, Metadata, PayloadFormat, Position, StoreError,
    StreamVersion,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::corrupt;
use crate::types::{JsonbText, Xid8, get};

/// `p_expected` codes besides exact versions.
const ANY: i64 = -1;
const STREAM_EXISTS: i64 = -2;

/// The arrays of one call, borrowing the request's strings and payloads.
pub(super) struct Encoded<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    counts: Vec<i32>,
    event_stream: Vec<i32>,
    event_offset: Vec<i32>,
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    json: Vec<Option<JsonbText<'a>>>,
    bytes: Vec<Option<&'a [u8]>>,
    /// Serialized metadata, held here so `metadata_params` can borrow it.
    metadata: Vec<Vec<u8>>,
    /// For each request stream, its place in the sorted (lock-order) arrays.
    rank: Vec<usize>,
}

impl<'a> Encoded<'a> {
    /// Encodes a validated request: streams sorted by id (the lock order every append uses),
    /// events in request order, metadata sent once when all events share it.
    pub(super) fn new(request: &'a AppendRequest) -> Result<Self, StoreError> {
        let n = request.streams.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by(|&a, &b| {
            request.streams[a]
                .stream
                .as_str()
                .cmp(request.streams[b].stream.as_str())
        });
        let mut rank = vec![0; n];
        for (sorted, &i) in order.iter().enumerate() {
            rank[i] = sorted;
        }

        let mut streams = Vec::with_capacity(n);
        let mut expected = Vec::with_capacity(n);
        let mut counts = Vec::with_capacity(n);
        for &i in &order {
            let s = &request.streams[i];
            streams.push(s.stream.as_str());
            expected.push(encode_expected(s.expected)?);
            counts.push(i32::try_from(s.events.len()).map_err(|_| too_many())?);
        }

        let total = request.event_count();
        i32::try_from(total).map_err(|_| too_many())?;
        let mut event_stream = Vec::with_capacity(total);
        let mut event_offset = Vec::with_capacity(total);
        let mut ids = Vec::with_capacity(total);
        let mut types = Vec::with_capacity(total);
        let mut schema_versions = Vec::with_capacity(total);
        let mut json = Vec::with_capacity(total);
        let mut bytes = Vec::with_capacity(total);
        for (i, s) in request.streams.iter().enumerate() {
            // Fits: the total was checked above, and ranks are below the stream count.
            let idx = rank[i] as i32 + 1;
            for (k, e) in s.events.iter().enumerate() {
                event_stream.push(idx);
                event_offset.push(k as i32 + 1);
                ids.push(e.event_id.as_uuid());
                types.push(e.event_type.as_str());
                schema_versions.push(i32::from(e.schema_version));
                match e.payload.format {
                    PayloadFormat::Json => {
                        json.push(Some(JsonbText(&e.payload.bytes)));
                        bytes.push(None);
                    }
                    PayloadFormat::MessagePack => {
                        json.push(None);
                        bytes.push(Some(&e.payload.bytes[..]));
                    }
                }
            }
        }

        Ok(Self {
            streams,
            expected,
            counts,
            event_stream,
            event_offset,
            ids,
            types,
            schema_versions,
            json,
            bytes,
            metadata: encode_metadata(request)?,
            rank,
        })
    }

    /// The JSONB metadata arguments, borrowing this encoding.
    pub(super) fn metadata_params(&self) -> Vec<JsonbText<'_>> {
        self.metadata.iter().map(|m| JsonbText(m)).collect()
    }

    /// The function's arguments in order; `metadata` comes from [`Self::metadata_params`].
    pub(super) fn params<'p>(
        &'p self,
        metadata: &'p (dyn ToSql + Sync),
    ) -> [&'p (dyn ToSql + Sync); 11] {
        [
            &self.streams,
            &self.expected,
            &self.counts,
            &self.event_stream,
            &self.event_offset,
            &self.ids,
            &self.types,
            &self.schema_versions,
            &self.json,
            &self.bytes,
            metadata,
        ]
    }

    /// The arguments of `append_one` when the request is events for one stream and nothing
    /// else (`None` otherwise): the commonest append, which has a cheaper function.
    pub(super) fn single_params<'p>(
        &'p self,
        metadata: &'p (dyn ToSql + Sync),
    ) -> Option<[&'p (dyn ToSql + Sync); 8]> {
        match (&self.streams[..], &self.expected[..]) {
            ([stream], [expected]) if !self.ids.is_empty() => Some([
                stream,
                expected,
                &self.ids,
                &self.types,
                &self.schema_versions,
                &self.json,
                &self.bytes,
                metadata,
            ]),
            _ => None,
        }
    }

    /// Reads the result row of `append` (`single` false) or `append_one` (`single` true):
    /// each stream's version after the append in request order, and each event's position in
    /// request order.
    pub(super) fn written(&self, row: &Row, single: bool) -> Result<Written, StoreError> {
        let transaction: Option<Xid8> = get(row, 0)?;
        let versions: Vec<i64> = if single {
            vec![get(row, 1)?]
        } else {
            get(row, 1)?
        };
        let sequences: Vec<i64> = get(row, 2)?;
        self.written_from(transaction, &versions, &sequences)
    }

    /// What the append function returned (its transaction id, each stream's version after the
    /// append in lock order, each event's sequence in request order), in request order.
    pub(super) fn written_from(
        &self,
        transaction: Option<Xid8>,
        versions: &[i64],
        sequences: &[i64],
    ) -> Result<Written, StoreError> {
        if versions.len() != self.streams.len() || sequences.len() != self.ids.len() {
            return Err(corrupt(format!(
                "append returned {} versions and {} positions for {} streams and {} events",
                versions.len(),
                sequences.len(),
                self.streams.len(),
                self.ids.len()
            )));
        }
        let versions = self
            .rank
            .iter()
            .map(|&r| {
                StreamVersion::try_from_i64(versions[r])
                    .map_err(|e| corrupt(format!("append returned a bad version: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let positions = match transaction {
            None if sequences.is_empty() => Vec::new(),
            None => return Err(corrupt("append wrote events but returned no transaction")),
            Some(tx) => sequences
                .iter()
                .map(|&s| {
                    u64::try_from(s)
                        .map(|s| Position::new(tx.0, s))
                        .map_err(|_| corrupt(format!("append returned sequence {s}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(Written {
            versions,
            positions,
        })
    }

    /// The event ids of the request, to find which one was already stored.
    pub(super) fn event_ids(&self) -> &[Uuid] {
        &self.ids
    }
}

/// The arrays of one call of the group function: each request's arrays of `append`, one
/// request after the other, and how many streams, events and metadata elements each has.
pub(super) struct GroupEncoded<'e> {
    stream_counts: Vec<i32>,
    event_counts: Vec<i32>,
    metadata_counts: Vec<i32>,
    streams: Vec<&'e str>,
    expected: Vec<i64>,
    counts: Vec<i32>,
    event_stream: Vec<i32>,
    event_offset: Vec<i32>,
    ids: Vec<Uuid>,
    types: Vec<&'e str>,
    schema_versions: Vec<i32>,
    json: Vec<Option<JsonbText<'e>>>,
    bytes: Vec<Option<&'e [u8]>>,
    metadata: Vec<JsonbText<'e>>,
}

impl<'e> GroupEncoded<'e> {
    /// The arrays of `requests`, in their order. Counts fit: each request's were checked when
    /// it was encoded, and a group holds few requests.
    pub(super) fn new<'a: 'e>(requests: &'e [Encoded<'a>]) -> Result<Self, StoreError> {
        let streams: usize = requests.iter().map(|r| r.streams.len()).sum();
        let events: usize = requests.iter().map(|r| r.ids.len()).sum();
        let metadata: usize = requests.iter().map(|r| r.metadata.len()).sum();
        i32::try_from(streams.max(events).max(metadata)).map_err(|_| too_many())?;
        let mut group = Self {
            stream_counts: Vec::with_capacity(requests.len()),
            event_counts: Vec::with_capacity(requests.len()),
            metadata_counts: Vec::with_capacity(requests.len()),
            streams: Vec::with_capacity(streams),
            expected: Vec::with_capacity(streams),
            counts: Vec::with_capacity(streams),
            event_stream: Vec::with_capacity(events),
            event_offset: Vec::with_capacity(events),
            ids: Vec::with_capacity(events),
            types: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            json: Vec::with_capacity(events),
            bytes: Vec::with_capacity(events),
            metadata: Vec::with_capacity(metadata),
        };
        for r in requests {
            // Fit in an i32: the totals do.
            group.stream_counts.push(r.streams.len() as i32);
            group.event_counts.push(r.ids.len() as i32);
            group.metadata_counts.push(r.metadata.len() as i32);
            group.streams.extend_from_slice(&r.streams);
            group.expected.extend_from_slice(&r.expected);
            group.counts.extend_from_slice(&r.counts);
            group.event_stream.extend_from_slice(&r.event_stream);
            group.event_offset.extend_from_slice(&r.event_offset);
            group.ids.extend_from_slice(&r.ids);
            group.types.extend_from_slice(&r.types);
            group.schema_versions.extend_from_slice(&r.schema_versions);
            group.json.extend_from_slice(&r.json);
            group.bytes.extend_from_slice(&r.bytes);
            group
                .metadata
                .extend(r.metadata.iter().map(|m| JsonbText(m)));
        }
        Ok(group)
    }

    /// The group function's arguments in order.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.stream_counts,
            &self.event_counts,
            &self.metadata_counts,
            &self.streams,
            &self.expected,
            &self.counts,
            &self.event_stream,
            &self.event_offset,
            &self.ids,
            &self.types,
            &self.schema_versions,
            &self.json,
            &self.bytes,
            &self.metadata,
        ]
    }
}

/// What the append function reported: each stream's version after the append (request order)
/// and each event's position (request order).
pub(super) struct Written {
    versions: Vec<StreamVersion>,
    positions: Vec<Position>,
}

impl Written {
    /// The request's events as they were stored.
    pub(super) fn record(self, request: AppendRequest) -> Result<Appended, StoreError> {
        let mut events = Vec::with_capacity(self.positions.len());
        let mut positions = self.positions.into_iter();
        for (stream, after) in request.streams.into_iter().zip(self.versions) {
            let count = stream.events.len() as u64;
            let before = after.get().checked_sub(count).ok_or_else(|| {
                corrupt(format!(
                    "append reported version {after} for {} after writing {count} events",
                    stream.stream
                ))
            })?;
            for (version, data) in (before + 1..).zip(stream.events) {
                let position = positions
                    .next()
                    .ok_or_else(|| corrupt("append returned fewer positions than events"))?;
                events.push(data.record(
                    stream.stream.clone(),
                    StreamVersion::new(version),
                    position,
                ));
            }
        }
        Ok(Appended::new(events))
    }
}

fn encode_expected(expected: ExpectedVersion) -> Result<i64, StoreError> {
    match expected {
        ExpectedVersion::Any => Ok(ANY),
        ExpectedVersion::StreamExists => Ok(STREAM_EXISTS),
        ExpectedVersion::NoStream => Ok(0),
        ExpectedVersion::Exact(v) => i64::try_from(v.get()).map_err(|_| {
            StoreError::InvalidRequest(format!("expected version {v} is out of range"))
        }),
    }
}

fn too_many() -> StoreError {
    StoreError::InvalidRequest("too many events in one append".to_owned())
}

/// One metadata element when every event shares it (the common case: one command's events),
/// otherwise one per event. Consecutive events with the same metadata are serialized once.
fn encode_metadata(request: &AppendRequest) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut events = request.streams.iter().flat_map(|s| &s.events);
    let Some(first) = events.next() else {
        return Ok(Vec::new());
    };
    let same = |a: &Arc<Metadata>, b: &Arc<Metadata>| Arc::ptr_eq(a, b) || a == b;
    if events.all(|e| same(&e.metadata, &first.metadata)) {
        return Ok(vec![serialize(&first.metadata)?]);
    }
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(request.event_count());
    let mut previous: Option<&Arc<Metadata>> = None;
    for e in request.streams.iter().flat_map(|s| &s.events) {
        match (previous, out.last()) {
            (Some(p), Some(last)) if same(p, &e.metadata) => {
                let last = last.clone();
                out.push(last);
            }
            _ => out.push(serialize(&e.metadata)?),
        }
        previous = Some(&e.metadata);
    }
    Ok(out)
}

fn serialize(metadata: &Metadata) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(metadata)
        .map_err(|e| StoreError::InvalidRequest(format!("metadata cannot be serialized: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{EventData, Payload, StreamId};

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    #[test]
    fn streams_are_sorted_and_events_keep_request_order() {
        let e = |t: &str| EventData::new(t, Payload::json(&b"{}"[..]));
        let request = AppendRequest::new()
            .stream(sid("b"), ExpectedVersion::Any, vec![e("B1"), e("B2")])
            .check(sid("c"), ExpectedVersion::NoStream)
            .stream(
                sid("a"),
                ExpectedVersion::Exact(StreamVersion::new(4)),
                vec![e("A1")],
            );
        let enc = Encoded::new(&request).unwrap();
        assert_eq!(enc.streams, ["a", "b", "c"]);
        assert_eq!(enc.expected, [4, ANY, 0]);
        assert_eq!(enc.counts, [1, 2, 0]);
        assert_eq!(enc.types, ["B1", "B2", "A1"]);
        assert_eq!(enc.event_stream, [2, 2, 1]);
        assert_eq!(enc.event_offset, [1, 2, 1]);
        assert_eq!(enc.rank, [1, 2, 0]);
        // EventData::new stamps separate metadata per event, all equal within a millisecond
        // or not: either way one element per distinct run.
        assert!(!enc.metadata.is_empty() && enc.metadata.len() <= 3);
    }

    #[test]
    fn shared_metadata_is_sent_once() {
        let meta = Arc::new(Metadata::now());
        let mut events = Vec::new();
        for _ in 0..5 {
            let mut e = EventData::new("E", Payload::message_pack(&b"\x80"[..]));
            e.metadata = meta.clone();
            events.push(e);
        }
        let request = AppendRequest::new().stream(sid("s"), ExpectedVersion::Any, events);
        let enc = Encoded::new(&request).unwrap();
        assert_eq!(enc.metadata.len(), 1);
        assert!(enc.json.iter().all(Option::is_none));
        assert!(enc.bytes.iter().all(Option::is_some));
    }

    #[test]
    fn out_of_range_expected_version_is_refused() {
        assert!(matches!(
            encode_expected(ExpectedVersion::Exact(StreamVersion::new(u64::MAX))),
            Err(StoreError::InvalidRequest(m)) if m.contains("out of range")
        ));
        assert_eq!(encode_expected(ExpectedVersion::StreamExists).unwrap(), -2);
    }
}
