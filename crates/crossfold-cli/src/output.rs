//! How results look: aligned tables and event blocks for people, JSON for scripts.

use std::io::Write;

use comfy_table::{Table, presets};
use crossfold_core::{ErrorChain, PayloadFormat, RecordedEvent};
use serde_json::{Value, json};

/// Prints rows under a header, without borders: columns two spaces apart, each as wide as its
/// widest cell (in display width), no spaces at the ends of lines.
pub(crate) fn table(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(header.to_vec())
        .add_rows(rows.iter().cloned());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    writeln!(out, "{}", table.trim_fmt())
}

/// Bytes for people: B, kB, MB, GB (powers of 1,024, as PostgreSQL's `pg_size_pretty`).
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An event's payload as JSON: JSON payloads as they are, MessagePack payloads decoded. A
/// payload that does not decode is shown as a string saying so, never dropped.
pub(crate) fn payload(event: &RecordedEvent) -> Value {
    let bytes = &event.payload.bytes;
    let decoded = match event.payload.format {
        PayloadFormat::Json => {
            serde_json::from_slice::<Value>(bytes).map_err(|e| ErrorChain(&e).to_string())
        }
        PayloadFormat::MessagePack => {
            rmp_serde::from_slice::<Value>(bytes).map_err(|e| ErrorChain(&e).to_string())
        }
    };
    decoded.unwrap_or_else(|reason| {
        Value::String(format!(
            "<{} bytes of {:?} that do not decode: {reason}>",
            bytes.len(),
            event.payload.format
        ))
    })
}

/// An event's metadata as JSON (the time as RFC 3339).
pub(crate) fn metadata(event: &RecordedEvent) -> Value {
    let m = &event.metadata;
    let mut value = json!({ "recorded_at": m.recorded_at.to_string() });
    if let Some(id) = m.correlation_id {
        value["correlation_id"] = json!(id.to_string());
    }
    if let Some(id) = m.causation_id {
        value["causation_id"] = json!(id.to_string());
    }
    if let Some(actor) = &m.actor {
        value["actor"] = json!(actor);
    }
    if !m.custom.is_empty() {
        value["custom"] = json!(m.custom);
    }
    value
}

/// An event as one JSON object.
pub(crate) fn event_json(event: &RecordedEvent) -> Value {
    json!({
        "position": event.position.to_string(),
        "event_id": event.event_id.to_string(),
        "stream": event.stream_id.as_str(),
        "version": event.stream_version.get(),
        "type": event.event_type.as_str(),
        "schema_version": event.schema_version,
        "recorded_at": event.metadata.recorded_at.to_string(),
        "metadata": metadata(event),
        "payload": payload(event),
    })
}

/// An event as a block of lines for people: where it is, what it is, its metadata and
/// payload.
pub(crate) fn event_block(out: &mut impl Write, event: &RecordedEvent) -> std::io::Result<()> {
    writeln!(
        out,
        "{} #{}  {}  {}",
        event.stream_id.as_str(),
        event.stream_version,
        event.event_type.as_str(),
        event.metadata.recorded_at
    )?;
    writeln!(
        out,
        "  id {}  position {}  schema version {}",
        event.event_id, event.position, event.schema_version
    )?;
    writeln!(out, "  metadata {}", metadata(event))?;
    writeln!(out, "  payload  {}", payload(event))
}

/// An event as one line for people, as `tail` prints them.
pub(crate) fn event_line(out: &mut impl Write, event: &RecordedEvent) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  {} #{}  {}  {}  {}",
        event.position,
        event.stream_id.as_str(),
        event.stream_version,
        event.event_type.as_str(),
        event.metadata.recorded_at,
        payload(event)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["STREAM", "EVENTS"],
            &[
                vec!["account-1".into(), "2".into()],
                vec!["a".into(), "10".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "STREAM     EVENTS\naccount-1  2\na          10\n"
        );
    }
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(8192), "8.0 kB");
        assert_eq!(size(5 * 1024 * 1024 + 512 * 1024), "5.5 MB");
    }

    #[test]
    fn wide_characters_take_their_display_width() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["STREAM", "EVENTS"],
            &[
                vec!["日本-1".into(), "2".into()],
                vec!["a".into(), "10".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "STREAM  EVENTS\n日本-1  2\na       10\n"
        );
    }
}
