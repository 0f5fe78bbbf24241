//! What every store can store: the limits of the strictest store (PostgreSQL), checked before
//! an append or a read touches storage, so that a command that passes its tests on the memory
//! store does not fail in production for its input.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::event::{EventData, Metadata, PayloadFormat};
use crate::version::{ExpectedVersion, StreamVersion};

/// The highest stream version any store can hold (PostgreSQL keeps versions as `bigint`).
pub(crate) const MAX_VERSION: u64 = i64::MAX as u64;

/// Why a request cannot be stored, in words for [`StoreError::InvalidRequest`](crate::StoreError).
pub(crate) fn check_version(what: &str, version: StreamVersion) -> Result<(), String> {
    if version.get() > MAX_VERSION {
        return Err(format!(
            "{what} {version} is out of range (at most {MAX_VERSION})"
        ));
    }
    Ok(())
}

pub(crate) fn check_expected(expected: ExpectedVersion) -> Result<(), String> {
    match expected {
        ExpectedVersion::Exact(v) => check_version("expected version", v),
        _ => Ok(()),
    }
}

/// Checks one event: its type holds no NUL, a JSON payload is JSON whose strings hold no
/// U+0000 (which JSONB cannot store), and its metadata's text holds no U+0000 either.
pub(crate) fn check_event(event: &EventData) -> Result<(), String> {
    if event.event_type.contains('\0') {
        return Err(format!(
            "event {}: its type {:?} holds a NUL character",
            event.event_id, event.event_type
        ));
    }
    if event.payload.format == PayloadFormat::Json {
        check_json(&event.payload.bytes).map_err(|e| {
            format!(
                "event {}: payload is not storable JSON: {e}",
                event.event_id
            )
        })?;
    }
    check_metadata(&event.metadata).map_err(|e| format!("event {}: metadata {e}", event.event_id))
}

/// Valid UTF-8, valid JSON, and no string holding U+0000. The common case — a payload with no
/// `\u0000` escape in it at all — costs one UTF-8 check and one parse that builds nothing; only
/// a payload with such an escape is parsed again, decoding its strings, to tell an escaped NUL
/// from an escaped backslash followed by `u0000`.
fn check_json(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    serde_json::from_str::<de::IgnoredAny>(text).map_err(|e| e.to_string())?;
    if text.contains("\\u0000") {
        serde_json::from_slice::<NoNul>(bytes).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn check_metadata(metadata: &Metadata) -> Result<(), String> {
    if metadata.actor.as_deref().is_some_and(|a| a.contains('\0')) {
        return Err("actor holds U+0000".into());
    }
    for (key, value) in &metadata.custom {
        if key.contains('\0') || !value_is_storable(value) {
            return Err(format!("field {key:?} holds U+0000"));
        }
    }
    Ok(())
}

fn value_is_storable(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => !s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().all(value_is_storable),
        serde_json::Value::Object(map) => map
            .iter()
            .all(|(k, v)| !k.contains('\0') && value_is_storable(v)),
        _ => true,
    }
}

/// Any JSON value whose strings (keys included) hold no U+0000; reading one checks the whole
/// document without building it.
struct NoNul;

impl<'de> Deserialize<'de> for NoNul {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoNulVisitor)
    }
}

struct NoNulVisitor;

impl<'de> Visitor<'de> for NoNulVisitor {
    type Value = NoNul;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoNul, E> {
        Ok(NoNul)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoNul, E> {
        Ok(NoNul)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoNul, E> {
        Ok(NoNul)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoNul, E> {
        Ok(NoNul)
    }
    fn visit_unit<E>(self) -> Result<NoNul, E> {
        Ok(NoNul)
    }
    fn visit_none<E>(self) -> Result<NoNul, E> {
        Ok(NoNul)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NoNul, E> {
        if v.contains('\0') {
            return Err(E::custom(
                "a string holds U+0000, which PostgreSQL's JSONB cannot store",
            ));
        }
        Ok(NoNul)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoNul, A::Error> {
        while seq.next_element::<NoNul>()?.is_some() {}
        Ok(NoNul)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoNul, A::Error> {
        while map.next_entry::<NoNul, NoNul>()?.is_some() {}
        Ok(NoNul)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Payload;

    fn json(text: &str) -> EventData {
        EventData::new("E", Payload::json(text.to_owned()))
    }

    #[test]
    fn json_with_a_nul_anywhere_is_refused() {
        assert!(check_event(&json(r#"{"a":[1,"x",{"b":null}],"c":true}"#)).is_ok());
        let refused = |event: &EventData| {
            let why = check_event(event).unwrap_err();
            assert!(why.contains("payload is not storable JSON"), "{why}");
            why
        };
        for nul in [r#"{"a":"\u0000"}"#, r#"{"a\u0000":1}"#, r#"[["\u0000"]]"#] {
            assert!(refused(&json(nul)).contains("U+0000"), "{nul}");
        }
        // An escaped backslash followed by "u0000" is plain text.
        assert!(check_event(&json(r#"{"a":"\\u0000"}"#)).is_ok());
        for malformed in [r#"{"a":1"#, "", "{} x"] {
            refused(&json(malformed));
        }
        let mut not_utf8 = json("{}");
        not_utf8.payload = Payload::json(vec![b'"', 0xff, b'"']);
        refused(&not_utf8);
    }

    #[test]
    fn message_pack_payloads_are_bytes() {
        let packed = EventData::new("E", Payload::message_pack(vec![0xc1, 0x00]));
        assert!(check_event(&packed).is_ok());
    }

    #[test]
    fn nul_in_a_type_or_metadata_is_refused() {
        let mut e = json("{}");
        e.event_type = "a\0b".into();
        assert!(check_event(&e).is_err());
        let mut e = json("{}");
        let mut metadata = Metadata::now();
        metadata.actor = Some("ada\0".into());
        e.metadata = metadata.into();
        assert!(check_event(&e).is_err());
        let mut e = json("{}");
        let mut metadata = Metadata::now();
        metadata
            .custom
            .insert("note".into(), serde_json::json!({"x": ["ok", "no\u{0}"]}));
        e.metadata = metadata.into();
        assert!(check_event(&e).is_err());
    }

    #[test]
    fn versions_beyond_what_stores_hold_are_refused() {
        assert!(check_expected(ExpectedVersion::Exact(StreamVersion::new(MAX_VERSION))).is_ok());
        assert!(check_expected(ExpectedVersion::Exact(StreamVersion::new(u64::MAX))).is_err());
        assert!(check_version("after", StreamVersion::new(MAX_VERSION + 1)).is_err());
    }
}
