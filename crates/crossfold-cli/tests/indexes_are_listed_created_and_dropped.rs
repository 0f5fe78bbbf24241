//! `crossfold indexes` lists the optional read indexes (absent in a new store), `create` builds
//! one (once: a second `create` says it was there), `drop` drops it, for people and as JSON;
//! an index name it does not know is a usage error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use crossfold_core::EventData;
use crossfold_core::Payload;

fn state_of(list: &serde_json::Value, index: &str) -> String {
    list["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["index"] == index)
        .unwrap_or_else(|| panic!("{index} not listed: {list}"))["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn indexes_are_listed_created_and_dropped() {
    let scratch = Scratch::new();
    scratch.append(
        "account-1",
        vec![EventData::new("Opened", Payload::json(&b"{}"[..]))],
    );

    let text = scratch.crossfold(&["indexes"]);
    assert_status(&text, 0);
    let text = stdout(&text);
    assert!(text.contains("events_category_log_idx"), "{text}");
    assert!(text.contains("events_type_log_idx"), "{text}");
    assert!(text.contains("events_stream_log_idx"), "{text}");
    assert_eq!(text.matches("absent").count(), 3, "{text}");

    let created = scratch.crossfold(&["indexes", "create", "category"]);
    assert_status(&created, 0);
    assert!(
        stdout(&created).contains("events_category_log_idx is ready"),
        "{}",
        stdout(&created)
    );
    let again = json(&scratch.crossfold(&["--json", "indexes", "create", "category"]));
    assert_eq!(again["created"], false);
    let list = json(&scratch.crossfold(&["--json", "indexes", "list"]));
    assert_eq!(state_of(&list, "category"), "ready");
    assert_eq!(state_of(&list, "type"), "absent");

    let dropped = scratch.crossfold(&["indexes", "drop", "category"]);
    assert_status(&dropped, 0);
    assert!(stdout(&dropped).contains("dropped"), "{}", stdout(&dropped));
    let again = json(&scratch.crossfold(&["--json", "indexes", "drop", "category"]));
    assert_eq!(again["dropped"], false);
    let list = json(&scratch.crossfold(&["--json", "indexes"]));
    assert_eq!(state_of(&list, "category"), "absent");

    let unknown = scratch.crossfold(&["indexes", "create", "streams"]);
    assert_status(&unknown, 64);
}
