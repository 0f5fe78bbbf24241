//! Event envelopes: what is appended, what is recorded, and the metadata every event carries.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::id::{EventId, StreamId};
use crate::version::{Position, StreamVersion};

/// A point in time with microsecond precision (microseconds since the Unix epoch, UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// From microseconds since the Unix epoch.
    pub const fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// This time plus `by`, saturating at the largest timestamp.
    pub fn saturating_add(self, by: Duration) -> Self {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(by))
    }

    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        }
    }
}

impl From<SystemTime> for Timestamp {
    fn from(value: SystemTime) -> Self {
        match value.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-26T06:49:38.123456Z`.
    ///
    /// Years before 0 are written with a sign (`-0001-…`, ISO 8601's expanded form; RFC 3339
    /// has four-digit years only). A timestamp outside the years -9999 to 9999, which no clock
    /// gives but `from_unix_micros` accepts, is written as its microseconds since the epoch
    /// (`253402300800000000 us since 1970-01-01T00:00:00Z`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
        else {
            return write!(f, "{} us since 1970-01-01T00:00:00Z", self.0);
        };
        let year = t.year();
        if year < 0 {
            write!(f, "-{:04}", year.unsigned_abs())?;
        } else {
            write!(f, "{year:04}")?;
        }
        write!(
            f,
            "-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

/// What travels with every event besides its payload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// When the event was created.
    pub recorded_at: Timestamp,
    /// The request or process this event belongs to; shared by everything it caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message (command or event) that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who caused it (a user or service id), for auditing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Application-defined fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, serde_json::Value>,
}

impl Metadata {
    /// Metadata stamped with the current time and nothing else.
    pub fn now() -> Self {
        Self {
            recorded_at: Timestamp::now(),
            ..Self::default()
        }
    }

    /// The custom field `key`, read as a `T`: `Ok(None)` when there is no such field, an error
    /// when it does not have `T`'s shape.
    ///
    /// ```
    /// use crossfold_core::Metadata;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, PartialEq, Serialize, Deserialize)]
    /// struct Origin { channel: String, ip: String }
    ///
    /// let origin = Origin { channel: "web".into(), ip: "192.0.2.7".into() };
    /// let mut metadata = Metadata::now();
    /// metadata.set_custom("origin", &origin)?;
    /// assert_eq!(metadata.custom_as::<Origin>("origin")?, Some(origin));
    /// assert_eq!(metadata.custom_as::<Origin>("tenant")?, None);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn custom_as<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, serde_json::Error> {
        self.custom
            .get(key)
            .map(|value| T::deserialize(value))
            .transpose()
    }

    /// Sets the custom field `key` to `value`, serialized. Fails (changing nothing) when
    /// `value` does not serialize to JSON.
    pub fn set_custom<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<&mut Self, serde_json::Error> {
        let value = serde_json::to_value(value)?;
        self.custom.insert(key.into(), value);
        Ok(self)
    }
}

/// An event type name, such as `"MoneyDeposited"`. Cheap to clone.
#[derive(Clone)]
pub struct EventType(EventTypeRepr);

#[derive(Clone)]
enum EventTypeRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl EventType {
    /// A name known at compile time (no allocation).
    pub const fn from_static(name: &'static str) -> Self {
        Self(EventTypeRepr::Static(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            EventTypeRepr::Static(s) => s,
            EventTypeRepr::Shared(s) => s,
        }
    }
}

impl From<&str> for EventType {
    fn from(value: &str) -> Self {
        Self(EventTypeRepr::Shared(Arc::from(value)))
    }
}

impl From<String> for EventType {
    fn from(value: String) -> Self {
        Self(EventTypeRepr::Shared(Arc::from(value)))
    }
}

impl Deref for EventType {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for EventType {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for EventType {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for EventType {}
impl std::hash::Hash for EventType {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl PartialEq<str> for EventType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for EventType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a payload is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayloadFormat {
    /// UTF-8 JSON (stored as JSONB by the PostgreSQL store, so it stays queryable).
    Json,
    /// MessagePack (compact binary).
    MessagePack,
}

/// An encoded event body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The encoding.
    pub format: PayloadFormat,
    /// The encoded bytes.
    pub bytes: Bytes,
}

impl Payload {
    /// A JSON payload.
    pub fn json(bytes: impl Into<Bytes>) -> Self {
        Self {
            format: PayloadFormat::Json,
            bytes: bytes.into(),
        }
    }

    /// A MessagePack payload.
    pub fn message_pack(bytes: impl Into<Bytes>) -> Self {
        Self {
            format: PayloadFormat::MessagePack,
            bytes: bytes.into(),
        }
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// An event ready to be appended: encoded, with its id and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct EventData {
    /// The event's unique id.
    pub event_id: EventId,
    /// The event type name.
    pub event_type: EventType,
    /// The schema version of the payload's shape.
    pub schema_version: u16,
    /// The encoded event.
    pub payload: Payload,
    /// Metadata (shared by all events of one command).
    pub metadata: Arc<Metadata>,
}

impl EventData {
    /// An event with a fresh id, schema version 1 and metadata stamped now.
    pub fn new(event_type: impl Into<EventType>, payload: Payload) -> Self {
        Self {
            event_id: EventId::generate(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Arc::new(Metadata::now()),
        }
    }

    /// The recorded form of this event once stored at `stream`/`version`/`position`.
    pub fn record(
        self,
        stream_id: StreamId,
        stream_version: StreamVersion,
        position: Position,
    ) -> RecordedEvent {
        RecordedEvent {
            event_id: self.event_id,
            stream_id,
            stream_version,
            position,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload: self.payload,
            metadata: self.metadata,
        }
    }
}

/// An event as stored: encoded, with its place in its stream and in the global log.
///
/// Cloning is cheap: names, payload and metadata are shared.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// The event's unique id.
    pub event_id: EventId,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its 1-based place in the stream.
    pub stream_version: StreamVersion,
    /// Its place in the global log.
    pub position: Position,
    /// The event type name.
    pub event_type: EventType,
    /// The schema version its payload was written with.
    pub schema_version: u16,
    /// The encoded event.
    pub payload: Payload,
    /// Metadata.
    pub metadata: Arc<Metadata>,
}

impl RecordedEvent {
    /// Approximate memory held by this event, for cache accounting.
    pub fn approximate_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.payload.len()
            + self.stream_id.as_str().len()
            + std::mem::size_of::<Metadata>()
    }
}

/// A decoded event with its envelope: what a command's `apply` and a projection see.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded<E> {
    /// The typed event.
    pub event: E,
    /// The event's unique id.
    pub event_id: EventId,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its 1-based place in the stream.
    pub stream_version: StreamVersion,
    /// Its place in the global log.
    pub position: Position,
    /// Metadata.
    pub metadata: Arc<Metadata>,
}

impl<E> Recorded<E> {
    /// A typed event with the envelope of `raw` (its stored form).
    pub fn new(event: E, raw: &RecordedEvent) -> Self {
        Self {
            event,
            event_id: raw.event_id,
            stream_id: raw.stream_id.clone(),
            stream_version: raw.stream_version,
            position: raw.position,
            metadata: raw.metadata.clone(),
        }
    }
}

impl<E> Deref for Recorded<E> {
    type Target = E;
    fn deref(&self) -> &E {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_formats_as_rfc3339() {
        assert_eq!(
            Timestamp::from_unix_micros(0).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(1_795_000_000_123_456).to_string(),
            "2026-11-18T11:06:40.123456Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(-1).to_string(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(-62_135_596_800_000_001).to_string(),
            "0000-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(-62_167_219_200_000_001).to_string(),
            "-0001-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(253_402_300_799_999_999).to_string(),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn timestamps_beyond_four_digit_years_print_their_microseconds() {
        assert_eq!(
            Timestamp::from_unix_micros(i64::MAX).to_string(),
            "9223372036854775807 us since 1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(i64::MIN).to_string(),
            "-9223372036854775808 us since 1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn timestamp_system_time_round_trip() {
        let t = Timestamp::now();
        assert_eq!(Timestamp::from(t.to_system_time()), t);
        let before = Timestamp::from_unix_micros(-5_000_000);
        assert_eq!(Timestamp::from(before.to_system_time()), before);
    }

    #[test]
    fn metadata_json_omits_empty_fields() {
        let m = Metadata {
            recorded_at: Timestamp::from_unix_micros(7),
            ..Metadata::default()
        };
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"recorded_at":7}"#);
        let back: Metadata = serde_json::from_str(r#"{"recorded_at":7}"#).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn event_types_compare_by_name() {
        assert_eq!(
            EventType::from_static("A"),
            EventType::from("A".to_string())
        );
        assert_eq!(EventType::from_static("A"), "A");
    }
}
