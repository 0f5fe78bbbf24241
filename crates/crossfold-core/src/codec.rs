//! Serialization: domain events, codecs (JSON, MessagePack) and upcasters for schema evolution.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BoxError, CodecError, CodecOperation};
use crate::event::{
    EventData, EventType, Metadata, Payload, PayloadFormat, Recorded, RecordedEvent,
};
use crate::id::EventId;

/// A typed domain event: serializable, with a stable type name.
///
/// The payload stored is exactly what `serde` produces for the value, so the event's own serde
/// attributes decide its shape (`#[serde(tag = "type")]` keeps JSON payloads easy to query).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use crossfold_core::DomainEvent;
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(tag = "type")]
/// enum CartEvent {
///     ItemAdded { sku: String, quantity: u32 },
///     CheckedOut,
/// }
///
/// impl DomainEvent for CartEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             CartEvent::ItemAdded { .. } => "ItemAdded",
///             CartEvent::CheckedOut => "CheckedOut",
///         }
///     }
/// }
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name of this event's type, stored beside the payload.
    fn event_type(&self) -> &'static str;

    /// The version of this event type's current schema. Bump it when the shape changes and
    /// register an [`Upcasters`] step from the old version.
    fn schema_version(&self) -> u16 {
        1
    }
}

/// Turns values into payloads and back.
///
/// Decoding follows the payload's own [`PayloadFormat`], so one store can hold events written
/// with different codecs.
pub trait Codec: Send + Sync + 'static {
    /// The format of the payloads this codec writes.
    fn format(&self) -> PayloadFormat;

    /// Appends the encoding of `value` to `buf`.
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buf: &mut Vec<u8>,
    ) -> Result<(), BoxError>;

    /// Encodes a value into a payload of its own, exactly as large as its encoding.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Payload, BoxError> {
        Ok(Payload {
            format: self.format(),
            bytes: with_scratch(|buf| self.encode_into(value, buf))?,
        })
    }

    /// Decodes a payload.
    fn decode<T: DeserializeOwned>(&self, payload: &Payload) -> Result<T, BoxError> {
        decode_payload(payload)
    }
}

/// Decodes a payload according to its format.
pub fn decode_payload<T: DeserializeOwned>(payload: &Payload) -> Result<T, BoxError> {
    match payload.format {
        PayloadFormat::Json => Ok(serde_json::from_slice(&payload.bytes)?),
        PayloadFormat::MessagePack => Ok(rmp_serde::from_slice(&payload.bytes)?),
    }
}

/// The JSON codec (the default; the PostgreSQL store keeps JSON payloads as JSONB).
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    fn format(&self) -> PayloadFormat {
        PayloadFormat::Json
    }

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buf: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        serde_json::to_writer(buf, value).map_err(Into::into)
    }
}

/// The MessagePack codec: compact binary payloads. Structs are encoded as maps (with field
/// names), so adding optional fields stays compatible.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagePack;

impl Codec for MessagePack {
    fn format(&self) -> PayloadFormat {
        PayloadFormat::MessagePack
    }

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buf: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        let mut serializer = rmp_serde::Serializer::new(buf).with_struct_map();
        value.serialize(&mut serializer).map_err(Into::into)
    }
}

/// Runs `encode` on a reused per-thread buffer and hands the result to `finish`.
///
/// Payloads live as long as the events that hold them, so their size is memory kept: encoding
/// straight into a fresh `Vec` would grow it several times and keep its whole growth capacity
/// (a JSON encoder starts at 128 bytes) plus a header to share it — several times the size of a
/// small event. Encoding into a warm buffer and copying once into an exact-size one costs one
/// allocation and one short copy instead.
fn with_scratch<R>(
    encode: impl FnOnce(&mut Vec<u8>) -> Result<R, BoxError>,
) -> Result<Bytes, BoxError> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// A buffer grown beyond this by one large write is not kept for the next.
    const KEEP: usize = 64 << 10;
    SCRATCH.with(|cell| {
        // Re-entrancy (a `Serialize` impl that encodes another payload) gets its own buffer.
        let Ok(mut buf) = cell.try_borrow_mut() else {
            let mut own = Vec::new();
            encode(&mut own)?;
            return Ok(Bytes::from(own.into_boxed_slice()));
        };
        buf.clear();
        let result = encode(&mut buf).map(|_| Bytes::copy_from_slice(&buf));
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
        result
    })
}

/// Renames followed from a stored name at most (a cycle of renames stops there).
const MAX_RENAMES: usize = 16;

type UpcastFn = dyn Fn(serde_json::Value) -> Result<serde_json::Value, BoxError> + Send + Sync;

/// Steps that upgrade stored payloads of an old schema version to the next version, applied on
/// read, so old events never need rewriting.
///
/// ```
/// use crossfold_core::Upcasters;
/// let mut upcasters = Upcasters::new();
/// // Version 1 of "MoneyDeposited" stored whole units; version 2 stores cents.
/// upcasters.register("MoneyDeposited", 1, |mut v| {
///     let units = v["amount"].as_i64().ok_or("amount missing")?;
///     v["amount"] = (units * 100).into();
///     Ok(v)
/// });
/// ```
///
/// An event type can also be **renamed** ([`rename`](Self::rename): events stored under the old
/// name read as the new one) and **retired** ([`retire`](Self::retire): readers skip its
/// events; [`retire_as`](Self::retire_as): they read as a fixed value, such as a `Retired`
/// variant). A new optional field needs no step: give it `#[serde(default)]`, and old payloads
/// without it decode.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<String, HashMap<u16, Arc<UpcastFn>>>,
    /// Old type names, and the names they read as.
    renamed: HashMap<String, String>,
    /// Retired types (by their current name), and what their events read as.
    retired: HashMap<String, Retired>,
}

/// What the events of a retired type read as.
#[derive(Clone, Debug, PartialEq)]
enum Retired {
    /// Nothing: readers skip them.
    Skipped,
    /// This payload, whatever they were stored with.
    As(serde_json::Value),
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self
            .steps
            .iter()
            .flat_map(|(t, v)| v.keys().map(move |k| (t, k)))
            .collect();
        keys.sort();
        let mut renamed: Vec<_> = self.renamed.iter().collect();
        renamed.sort();
        let mut retired: Vec<_> = self.retired.keys().collect();
        retired.sort();
        f.debug_struct("Upcasters")
            .field("steps", &keys)
            .field("renamed", &renamed)
            .field("retired", &retired)
            .finish()
    }
}

impl Upcasters {
    /// No steps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step from `from_version` to `from_version + 1` for `event_type`.
    /// A later registration for the same pair replaces the earlier one.
    pub fn register<F>(&mut self, event_type: &str, from_version: u16, step: F) -> &mut Self
    where
        F: Fn(serde_json::Value) -> Result<serde_json::Value, BoxError> + Send + Sync + 'static,
    {
        self.steps
            .entry(event_type.to_owned())
            .or_default()
            .insert(from_version, Arc::new(step));
        self
    }

    /// Registers the step from `from_version` to `from_version + 1` for `event_type` as a
    /// conversion between two Rust types: the payload at `from_version` decoded as `Old`, and
    /// what `step` makes of it encoded as the next version's shape.
    ///
    /// ```
    /// use crossfold_core::Upcasters;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Deserialize)]
    /// struct DepositedV1 { units: u64 }
    /// #[derive(Serialize)]
    /// struct DepositedV2 { cents: u64 }
    ///
    /// let mut upcasters = Upcasters::new();
    /// upcasters.register_typed("Deposited", 1, |old: DepositedV1| DepositedV2 {
    ///     cents: old.units * 100,
    /// });
    /// ```
    pub fn register_typed<Old, New, F>(
        &mut self,
        event_type: &str,
        from_version: u16,
        step: F,
    ) -> &mut Self
    where
        Old: DeserializeOwned,
        New: Serialize,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        self.register(event_type, from_version, move |value| {
            let old: Old = serde_json::from_value(value)?;
            Ok(serde_json::to_value(step(old))?)
        })
    }

    /// Events stored as `old_name` read as `new_name`: the steps registered under `old_name`
    /// apply first (from the version they were stored at, as long as there are any), then those
    /// of `new_name`, and `new_name`'s retirement. Renames chain: `A` renamed `B`, then `B`
    /// renamed `C`, reads `A`'s events as `C`. The payload's own tag, where the event type's serde
    /// representation has one (an enum variant's name), is the type's business: keep the old
    /// name as `#[serde(alias = "...")]` on the renamed variant.
    pub fn rename(&mut self, old_name: &str, new_name: &str) -> &mut Self {
        self.renamed
            .insert(old_name.to_owned(), new_name.to_owned());
        self
    }

    /// The events of `event_type` (its current name) are skipped by every reader that decodes
    /// through these upcasters: the executor's folds, projections and process managers.
    /// [`decode`](Self::decode) refuses them; [`is_skipped`](Self::is_skipped) tells them.
    /// Retire only a type nothing emits any more: a command that still wrote it would fold its
    /// own new event into the state it keeps, which a later read would skip.
    pub fn retire(&mut self, event_type: &str) -> &mut Self {
        self.retired.insert(event_type.to_owned(), Retired::Skipped);
        self
    }

    /// The events of `event_type` (its current name), whatever their schema version, read as
    /// `value` — for example the `Retired` variant of the event enum, so that a fold sees that
    /// something happened without knowing what any more. Fails if `value` does not serialize.
    pub fn retire_as<T: Serialize>(
        &mut self,
        event_type: &str,
        value: &T,
    ) -> Result<&mut Self, serde_json::Error> {
        let value = serde_json::to_value(value)?;
        self.retired
            .insert(event_type.to_owned(), Retired::As(value));
        Ok(self)
    }

    /// Whether no step, rename or retirement is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.renamed.is_empty() && self.retired.is_empty()
    }

    /// The name `stored` (a type name as stored) reads as: its newest name, following renames
    /// one after the other (`A` renamed `B`, then `B` renamed `C`: `A` reads as `C`).
    pub fn current_name<'n>(&'n self, stored: &'n str) -> &'n str {
        self.names(stored).last().unwrap_or(stored)
    }

    /// `stored`, then each name it was renamed to, in order; at most [`MAX_RENAMES`] renames
    /// are followed (a cycle of renames ends there).
    fn names<'n>(&'n self, stored: &'n str) -> impl Iterator<Item = &'n str> + 'n {
        let mut next = Some(stored);
        let mut hops = 0;
        std::iter::from_fn(move || {
            let name = next?;
            next = if hops < MAX_RENAMES && !self.renamed.is_empty() {
                hops += 1;
                self.renamed.get(name).map(String::as_str)
            } else {
                None
            };
            Some(name)
        })
    }

    /// Whether readers skip `raw`: its type is retired without a value to read as.
    pub fn is_skipped(&self, raw: &RecordedEvent) -> bool {
        !self.retired.is_empty()
            && self.retired.get(self.current_name(raw.event_type.as_str()))
                == Some(&Retired::Skipped)
    }

    fn step(&self, event_type: &str, version: u16) -> Option<&Arc<UpcastFn>> {
        self.steps.get(event_type)?.get(&version)
    }

    /// Decodes `raw` into a typed event, upcasting it first when steps exist for its type and
    /// schema version.
    pub fn decode<E: DomainEvent, C: Codec>(
        &self,
        codec: &C,
        raw: &RecordedEvent,
    ) -> Result<Recorded<E>, CodecError> {
        let located = |op, e: BoxError| {
            CodecError::new(op, raw.event_type.as_str(), e).at(
                raw.event_id,
                raw.stream_id.clone(),
                raw.stream_version,
            )
        };
        if !self.retired.is_empty() {
            let name = self.current_name(raw.event_type.as_str());
            match self.retired.get(name) {
                Some(Retired::Skipped) => {
                    return Err(located(
                        CodecOperation::Decode,
                        format!("event type {name:?} is retired: readers skip its events").into(),
                    ));
                }
                Some(Retired::As(value)) => {
                    let event = serde_json::from_value(value.clone())
                        .map_err(|e| located(CodecOperation::Upcast, Box::new(e)))?;
                    return Ok(Recorded::new(event, raw));
                }
                None => {}
            }
        }
        // The first name (the stored one, or one it was renamed to) with a step from the
        // stored version: without one, the payload decodes as it is.
        let first = self
            .names(raw.event_type.as_str())
            .position(|n| self.step(n, raw.schema_version).is_some());
        let event = match first {
            None => codec
                .decode::<E>(&raw.payload)
                .map_err(|e| located(CodecOperation::Decode, e))?,
            Some(skip) => {
                let mut value: serde_json::Value =
                    decode_payload(&raw.payload).map_err(|e| located(CodecOperation::Decode, e))?;
                let mut version = raw.schema_version;
                for name in self.names(raw.event_type.as_str()).skip(skip) {
                    while let Some(step) = self.step(name, version) {
                        value = step(value).map_err(|e| located(CodecOperation::Upcast, e))?;
                        version = version.saturating_add(1);
                    }
                }
                serde_json::from_value(value)
                    .map_err(|e| located(CodecOperation::Decode, Box::new(e)))?
            }
        };
        Ok(Recorded::new(event, raw))
    }
}

/// Encodes a typed event into an appendable [`EventData`].
pub fn encode_event<E: DomainEvent, C: Codec>(
    codec: &C,
    event: &E,
    event_id: EventId,
    metadata: Arc<Metadata>,
) -> Result<EventData, CodecError> {
    let mut encoded = None;
    encode_events(codec, [(event_id, event)], &metadata, |data| {
        encoded = Some(data)
    })?;
    encoded.ok_or_else(|| {
        CodecError::new(
            CodecOperation::Encode,
            event.event_type(),
            "the encoder returned no event",
        )
    })
}

/// Encodes the events of one append, in order, handing each to `emit` as an appendable
/// [`EventData`]. Their payloads share one buffer: each is serialized once and copied once,
/// into a buffer exactly as large as all of them together (one allocation per append, however
/// many events it holds).
///
/// Fails with a [`CodecError`] naming the first event that could not be encoded; `emit` is
/// then not called at all.
pub fn encode_events<'e, E: DomainEvent, C: Codec>(
    codec: &C,
    events: impl IntoIterator<Item = (EventId, &'e E)>,
    metadata: &Arc<Metadata>,
    mut emit: impl FnMut(EventData),
) -> Result<(), CodecError> {
    /// Where one encoded event ends in the shared buffer.
    struct End {
        event_id: EventId,
        event_type: &'static str,
        schema_version: u16,
        end: usize,
    }
    // The first event's end is kept apart: a single-event append (the commonest) needs no list.
    let mut first: Option<End> = None;
    let mut rest: Vec<End> = Vec::new();
    let mut failed: Option<CodecError> = None;
    let shared = with_scratch(|buf| {
        for (event_id, event) in events {
            if let Err(e) = codec.encode_into(event, buf) {
                let mut error = CodecError::new(CodecOperation::Encode, event.event_type(), e);
                error.event_id = Some(event_id);
                failed = Some(error);
                return Err("encoding failed".into());
            }
            let end = End {
                event_id,
                event_type: event.event_type(),
                schema_version: event.schema_version(),
                end: buf.len(),
            };
            match first {
                None => first = Some(end),
                Some(_) => rest.push(end),
            }
        }
        Ok(())
    });
    let shared = match (shared, failed) {
        (_, Some(error)) => return Err(error),
        (Ok(shared), None) => shared,
        (Err(e), None) => return Err(CodecError::new(CodecOperation::Encode, "", e)),
    };
    let format = codec.format();
    let single = rest.is_empty();
    let mut start = 0;
    for end in first.into_iter().chain(rest) {
        // One event keeps the buffer whole; slicing it would make it shared first.
        let bytes = if single {
            shared.clone()
        } else {
            shared.slice(start..end.end)
        };
        start = end.end;
        emit(EventData {
            event_id: end.event_id,
            event_type: EventType::from_static(end.event_type),
            schema_version: end.schema_version,
            payload: Payload { format, bytes },
            metadata: metadata.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::StreamId;
    use crate::version::{Position, StreamVersion};
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Ev {
        Deposited { amount: i64, note: Option<String> },
        Closed,
    }

    impl DomainEvent for Ev {
        fn event_type(&self) -> &'static str {
            match self {
                Ev::Deposited { .. } => "Deposited",
                Ev::Closed => "Closed",
            }
        }
        fn schema_version(&self) -> u16 {
            2
        }
    }

    fn record(data: EventData) -> RecordedEvent {
        data.record(
            StreamId::new("s").unwrap(),
            StreamVersion::new(1),
            Position::new(1, 1),
        )
    }

    fn round_trip<C: Codec>(codec: C) {
        let upcasters = Upcasters::new();
        for ev in [
            Ev::Deposited {
                amount: -3,
                note: Some("ünïcode".into()),
            },
            Ev::Closed,
        ] {
            let data =
                encode_event(&codec, &ev, EventId::generate(), Arc::new(Metadata::now())).unwrap();
            assert_eq!(data.schema_version, 2);
            assert_eq!(&*data.event_type, ev.event_type());
            let back: Recorded<Ev> = upcasters.decode(&codec, &record(data)).unwrap();
            assert_eq!(back.event, ev);
        }
    }

    #[test]
    fn json_round_trip() {
        round_trip(Json);
    }

    #[test]
    fn message_pack_round_trip() {
        round_trip(MessagePack);
    }

    #[test]
    fn decoding_follows_the_payload_format() {
        let data = encode_event(
            &MessagePack,
            &Ev::Closed,
            EventId::generate(),
            Arc::default(),
        )
        .unwrap();
        let back: Recorded<Ev> = Upcasters::new().decode(&Json, &record(data)).unwrap();
        assert_eq!(back.event, Ev::Closed);
    }

    #[test]
    fn upcasters_chain_from_old_versions() {
        let mut upcasters = Upcasters::new();
        upcasters.register("Deposited", 0, |mut v| {
            v["amount"] = v["units"].clone();
            Ok(v)
        });
        upcasters.register("Deposited", 1, |mut v| {
            v["note"] = serde_json::Value::Null;
            Ok(v)
        });
        for codec_payload in [
            Json.encode(&serde_json::json!({"type": "Deposited", "units": 5}))
                .unwrap(),
            MessagePack
                .encode(&serde_json::json!({"type": "Deposited", "units": 5}))
                .unwrap(),
        ] {
            let mut raw = record(EventData::new("Deposited", codec_payload));
            raw.schema_version = 0;
            let back: Recorded<Ev> = upcasters.decode(&Json, &raw).unwrap();
            assert_eq!(
                back.event,
                Ev::Deposited {
                    amount: 5,
                    note: None
                }
            );
        }
    }

    #[test]
    fn undecodable_payload_names_the_event() {
        let raw = record(EventData::new(
            "Deposited",
            Payload::json(&b"{\"type\":\"Nope\"}"[..]),
        ));
        let err = Upcasters::new().decode::<Ev, _>(&Json, &raw).unwrap_err();
        assert_eq!(err.operation, CodecOperation::Decode);
        let text = err.to_string();
        assert!(text.contains("Deposited") && text.contains("s@1"), "{text}");
    }

    #[test]
    fn failing_upcaster_is_an_error_not_a_skip() {
        let mut upcasters = Upcasters::new();
        upcasters.register("Deposited", 1, |_| Err("cannot upgrade".into()));
        let mut raw = record(EventData::new(
            "Deposited",
            Json.encode(&Ev::Closed).unwrap(),
        ));
        raw.schema_version = 1;
        let err = upcasters.decode::<Ev, _>(&Json, &raw).unwrap_err();
        assert_eq!(err.operation, CodecOperation::Upcast);
    }

    #[test]
    fn a_typed_step_converts_one_struct_into_the_next() {
        #[derive(Deserialize)]
        struct V1 {
            units: i64,
        }
        #[derive(Serialize)]
        #[serde(tag = "type")]
        enum V2 {
            Deposited { amount: i64, note: Option<String> },
        }
        let mut upcasters = Upcasters::new();
        upcasters.register_typed("Deposited", 1, |old: V1| V2::Deposited {
            amount: old.units * 100,
            note: None,
        });
        for payload in [
            Json.encode(&serde_json::json!({"units": 3})).unwrap(),
            MessagePack
                .encode(&serde_json::json!({"units": 3}))
                .unwrap(),
        ] {
            let mut raw = record(EventData::new("Deposited", payload));
            raw.schema_version = 1;
            let back: Recorded<Ev> = upcasters.decode(&Json, &raw).unwrap();
            assert_eq!(
                back.event,
                Ev::Deposited {
                    amount: 300,
                    note: None
                }
            );
        }
        // A payload the old type does not describe fails as an upcast, naming the event.
        let mut raw = record(EventData::new(
            "Deposited",
            Json.encode(&serde_json::json!({"cents": 3})).unwrap(),
        ));
        raw.schema_version = 1;
        let err = upcasters.decode::<Ev, _>(&Json, &raw).unwrap_err();
        assert_eq!(err.operation, CodecOperation::Upcast);
        assert!(err.to_string().contains("Deposited"), "{err}");
    }

    #[test]
    fn a_renamed_type_takes_the_new_names_steps_and_a_new_field_needs_none() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        enum Renamed {
            // The old tag, kept as an alias on the variant.
            #[serde(alias = "Deposited")]
            MoneyDeposited {
                cents: i64,
                // Added later, optional: old payloads decode without a step.
                #[serde(default)]
                memo: Option<String>,
            },
        }
        impl DomainEvent for Renamed {
            fn event_type(&self) -> &'static str {
                "MoneyDeposited"
            }
            fn schema_version(&self) -> u16 {
                2
            }
        }
        let mut upcasters = Upcasters::new();
        upcasters.rename("Deposited", "MoneyDeposited");
        upcasters.register("MoneyDeposited", 1, |mut v| {
            v["cents"] = (v["amount"].as_i64().ok_or("amount missing")? * 100).into();
            Ok(v)
        });
        assert_eq!(upcasters.current_name("Deposited"), "MoneyDeposited");
        assert_eq!(upcasters.current_name("Closed"), "Closed");
        let mut raw = record(EventData::new(
            "Deposited",
            Json.encode(&serde_json::json!({"type": "Deposited", "amount": 2}))
                .unwrap(),
        ));
        raw.schema_version = 1;
        let back: Recorded<Renamed> = upcasters.decode(&Json, &raw).unwrap();
        assert_eq!(
            back.event,
            Renamed::MoneyDeposited {
                cents: 200,
                memo: None
            }
        );
        // Stored under the new name at the current version: no step, and the new field absent.
        let mut raw = record(EventData::new(
            "MoneyDeposited",
            Json.encode(&serde_json::json!({"type": "MoneyDeposited", "cents": 9}))
                .unwrap(),
        ));
        raw.schema_version = 2;
        let back: Recorded<Renamed> = upcasters.decode(&Json, &raw).unwrap();
        assert_eq!(
            back.event,
            Renamed::MoneyDeposited {
                cents: 9,
                memo: None
            }
        );
    }

    #[test]
    fn renames_chain_and_keep_the_steps_of_every_name() {
        let mut upcasters = Upcasters::new();
        upcasters
            .register("Credit", 1, |mut v| {
                v["amount"] = v["units"].clone();
                Ok(v)
            })
            .rename("Credit", "Credited")
            .rename("Credited", "Deposited")
            .register("Deposited", 2, |mut v| {
                v["type"] = "Deposited".into();
                v["note"] = "upgraded".into();
                Ok(v)
            });
        assert_eq!(upcasters.current_name("Credit"), "Deposited");
        assert_eq!(upcasters.current_name("Credited"), "Deposited");
        let mut raw = record(EventData::new(
            "Credit",
            Json.encode(&serde_json::json!({"units": 4})).unwrap(),
        ));
        raw.schema_version = 1;
        let back: Recorded<Ev> = upcasters.decode(&Json, &raw).unwrap();
        assert_eq!(
            back.event,
            Ev::Deposited {
                amount: 4,
                note: Some("upgraded".into())
            }
        );
        // A cycle of renames ends instead of spinning.
        let mut cycle = Upcasters::new();
        cycle.rename("A", "B").rename("B", "A");
        let _ = cycle.current_name("A");
    }

    #[test]
    fn a_retired_type_is_skipped_or_reads_as_its_value() {
        let old = |event_type: &str| {
            let mut raw = record(EventData::new(
                event_type,
                Json.encode(&serde_json::json!({"type": "Frozen", "until": "never"}))
                    .unwrap(),
            ));
            raw.schema_version = 1;
            raw
        };
        let mut skipping = Upcasters::new();
        skipping.retire("Frozen");
        assert!(skipping.is_skipped(&old("Frozen")));
        assert!(!skipping.is_skipped(&old("Closed")));
        let err = skipping.decode::<Ev, _>(&Json, &old("Frozen")).unwrap_err();
        assert!(err.to_string().contains("Frozen"), "{err}");
        // Retired under its new name: events stored under the old one are skipped too.
        skipping.rename("AccountFrozen", "Frozen");
        assert!(skipping.is_skipped(&old("AccountFrozen")));

        let mut valued = Upcasters::new();
        valued.retire_as("Frozen", &Ev::Closed).unwrap();
        assert!(!valued.is_skipped(&old("Frozen")));
        let back: Recorded<Ev> = valued.decode(&Json, &old("Frozen")).unwrap();
        assert_eq!(back.event, Ev::Closed);
        assert!(!valued.is_empty());
        assert!(format!("{valued:?}").contains("Frozen"));
    }

    #[test]
    fn events_of_one_append_share_one_exact_buffer() {
        let events = [
            Ev::Deposited {
                amount: 5,
                note: None,
            },
            Ev::Closed,
            Ev::Deposited {
                amount: 7,
                note: Some("rent".into()),
            },
        ];
        let metadata = Arc::new(Metadata::now());
        let ids: Vec<EventId> = (0..3).map(|_| EventId::generate()).collect();
        let mut encoded = Vec::new();
        encode_events(&Json, ids.iter().copied().zip(&events), &metadata, |e| {
            encoded.push(e)
        })
        .unwrap();
        assert_eq!(encoded.len(), 3);
        let base = encoded[0].payload.bytes.as_ptr();
        let mut offset = 0;
        for ((data, event), id) in encoded.iter().zip(&events).zip(&ids) {
            assert_eq!(data.event_id, *id);
            assert_eq!(data.event_type, event.event_type());
            assert_eq!(data.payload.bytes.as_ptr(), base.wrapping_add(offset));
            offset += data.payload.len();
            assert_eq!(&decode_payload::<Ev>(&data.payload).unwrap(), event);
        }
    }

    #[test]
    fn an_event_that_cannot_be_encoded_is_named() {
        struct Unencodable;
        impl Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no way"))
            }
        }
        impl<'de> Deserialize<'de> for Unencodable {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                Ok(Unencodable)
            }
        }
        impl DomainEvent for Unencodable {
            fn event_type(&self) -> &'static str {
                "Unencodable"
            }
        }
        let id = EventId::generate();
        let error = encode_events(
            &Json,
            [(id, &Unencodable)],
            &Arc::new(Metadata::now()),
            |_| panic!("nothing is emitted when encoding fails"),
        )
        .unwrap_err();
        assert_eq!(error.operation, CodecOperation::Encode);
        assert_eq!(error.event_type, "Unencodable");
        assert_eq!(error.event_id, Some(id));
        assert!(
            crate::ErrorChain(&error).to_string().contains("no way"),
            "{error}"
        );
    }
}
