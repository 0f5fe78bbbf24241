//! `crossfold check-events`: a log whose payloads all parse exits 0 and says how many events
//! it read; a MessagePack payload that does not parse is listed with its position, stream,
//! version, type and schema version, and the exit status is 1; `--json` says the same as a
//! document; `--from` reads only what follows a position; `--max-failures` caps the list, not
//! the count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use crossfold_core::{EventData, Payload};
use serde_json::json;

fn good(n: u64) -> EventData {
    EventData::new(
        "Deposited",
        Payload::json(json!({ "amount": n }).to_string().into_bytes()),
    )
}

fn packed(n: u64) -> EventData {
    EventData::new(
        "Placed",
        Payload::message_pack(rmp_serde::to_vec_named(&json!({ "total": n })).unwrap()),
    )
}

/// 0xc1 is the one byte MessagePack never uses: no decoder accepts it.
fn broken() -> EventData {
    let mut event = EventData::new("Placed", Payload::message_pack(vec![0x92, 0xc1]));
    event.schema_version = 3;
    event
}

#[test]
fn a_clean_log_passes_and_a_broken_payload_is_reported() {
    let scratch = Scratch::new();
    scratch.append("account-1", vec![good(1), good(2)]);
    scratch.append("order-1", vec![packed(3)]);

    let clean = scratch.crossfold(&["check-events", "--no-progress"]);
    assert_status(&clean, 0);
    assert!(
        stdout(&clean).starts_with("3 event(s) read after 0/0 up to "),
        "{}",
        stdout(&clean)
    );
    assert!(stdout(&clean).contains(": 0 failed to decode"));

    let appended = scratch.append("order-2", vec![packed(4), broken()]);
    let position = appended.events[1].position.to_string();
    let reported = scratch.crossfold(&["check-events", "--no-progress"]);
    assert_status(&reported, 1);
    let text = stdout(&reported);
    assert!(text.contains("5 event(s) read"), "{text}");
    assert!(text.contains("1 failed to decode"), "{text}");
    assert!(
        text.contains(&format!("{position} order-2@2 Placed (schema version 3")),
        "{text}"
    );

    let document = json(&scratch.crossfold(&["--json", "check-events"]));
    assert_eq!(document["read"], 5);
    assert_eq!(document["failed"], 1);
    let failure = &document["failures"][0];
    assert_eq!(failure["position"], position.as_str());
    assert_eq!(failure["stream"], "order-2");
    assert_eq!(failure["version"], 2);
    assert_eq!(failure["event_type"], "Placed");
    assert_eq!(failure["schema_version"], 3);
    assert!(
        failure["error"].as_str().unwrap().contains("MessagePack"),
        "{failure}"
    );

    // From the position of the broken event: nothing after it, nothing read.
    let after = json(&scratch.crossfold(&["--json", "check-events", "--from", &position]));
    assert_eq!(after["read"], 0);
    assert_eq!(after["failed"], 0);

    // More failures than the list holds: all counted, two listed, in small batches.
    scratch.append("order-3", vec![broken(), broken(), broken()]);
    let capped = scratch.crossfold(&[
        "--json",
        "check-events",
        "--max-failures",
        "2",
        "--batch",
        "2",
    ]);
    assert_status(&capped, 1);
    let capped = json(&capped);
    assert_eq!(capped["read"], 8);
    assert_eq!(capped["failed"], 4);
    assert_eq!(capped["failures"].as_array().unwrap().len(), 2);

    let bad = scratch.crossfold(&["check-events", "--from", "yesterday"]);
    assert_status(&bad, 64);
}
