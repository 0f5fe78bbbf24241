//! `crossfold snapshots` lists the snapshots of command state per state (none in a new store),
//! for people and as JSON; `snapshots drop STATE` drops one state's, says how many, and leaves
//! the others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use crossfold_core::{
    EventData, Payload, Snapshot, SnapshotStore, StreamId, StreamVersion, Timestamp,
};

fn snapshot(state: &str, state_version: u32, stream: &str) -> Snapshot {
    Snapshot {
        state: state.to_owned(),
        state_version,
        streams: vec![StreamId::new(stream).unwrap()],
        discovered: Vec::new(),
        versions: vec![StreamVersion::new(1)],
        floor: None,
        payload: b"{\"cents\": 100}".to_vec(),
        taken_at: Timestamp::default(),
    }
}

#[test]
fn snapshots_are_listed_and_dropped() {
    let scratch = Scratch::new();
    for stream in ["account-1", "account-2"] {
        scratch.append(
            stream,
            vec![EventData::new("Opened", Payload::json(&b"{}"[..]))],
        );
    }

    let none = scratch.crossfold(&["snapshots"]);
    assert_status(&none, 0);
    assert_eq!(stdout(&none), "no snapshots\n");
    let none = json(&scratch.crossfold(&["--json", "snapshots", "list"]));
    assert_eq!(none["snapshots"], serde_json::json!([]));

    scratch.with_store(async |store| {
        for saved in [
            snapshot("bank.balance", 1, "account-1"),
            snapshot("bank.balance", 2, "account-2"),
            snapshot("bank.audit", 1, "account-1"),
        ] {
            store.save_snapshot(&saved).await.unwrap();
        }
    });

    let text = scratch.crossfold(&["snapshots"]);
    assert_status(&text, 0);
    let text = stdout(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("STATE"), "{text}");
    assert!(lines[1].starts_with("bank.audit "), "{text}");
    assert!(lines[2].starts_with("bank.balance "), "{text}");
    assert!(
        lines[2].contains(" 2 ") && lines[2].contains("28 B"),
        "{text}"
    );
    assert!(lines[2].contains("1, 2"), "{text}");

    let list = json(&scratch.crossfold(&["--json", "snapshots"]));
    let balance = &list["snapshots"][1];
    assert_eq!(balance["state"], "bank.balance");
    assert_eq!(balance["count"], 2);
    assert_eq!(balance["bytes"], 28);
    assert_eq!(balance["state_versions"], serde_json::json!([1, 2]));
    assert!(balance["newest"].is_string(), "{list}");

    let dropped = scratch.crossfold(&["snapshots", "drop", "bank.balance"]);
    assert_status(&dropped, 0);
    assert!(
        stdout(&dropped).starts_with("dropped 2 snapshots of bank.balance"),
        "{}",
        stdout(&dropped)
    );
    let again = json(&scratch.crossfold(&["--json", "snapshots", "drop", "bank.balance"]));
    assert_eq!(
        again,
        serde_json::json!({"state": "bank.balance", "dropped": 0})
    );
    let list = json(&scratch.crossfold(&["--json", "snapshots"]));
    let states: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["bank.audit"]);

    let missing = scratch.crossfold(&["snapshots", "drop"]);
    assert_status(&missing, 64);
}
