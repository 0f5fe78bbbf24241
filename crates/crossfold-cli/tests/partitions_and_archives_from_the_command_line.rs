//! `crossfold partitions` converts a log, lists its partitions, creates them ahead, detaches
//! one and attaches it again; `crossfold archive` archives a stream and reads it back, and a
//! read of the archived stream says where its events went.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use crossfold_core::{EventData, Payload};

#[test]
fn partitions_and_archives_from_the_command_line() {
    let scratch = Scratch::new();
    let opened = || vec![EventData::new("Opened", Payload::json(&b"{}"[..]))];
    scratch.append("account-1", opened());
    scratch.append("account-2", opened());

    let none = scratch.crossfold(&["partitions"]);
    assert_status(&none, 0);
    assert!(
        stdout(&none).contains("not partitioned"),
        "{}",
        stdout(&none)
    );

    let bad = scratch.crossfold(&["partitions", "convert", "--size", "0"]);
    assert_status(&bad, 1);
    let converted =
        scratch.crossfold(&["partitions", "convert", "--size", "1000", "--margin", "10"]);
    assert_status(&converted, 0);
    let text = stdout(&converted);
    assert!(
        text.contains("events_000000") && text.contains("events_default"),
        "{text}"
    );

    let list = json(&scratch.crossfold(&["--json", "partitions"]));
    let partitions = list["partitions"].as_array().unwrap();
    assert!(partitions.len() >= 6, "{list}");
    assert_eq!(partitions[0]["name"], "events_000000");
    assert_eq!(partitions[0]["from"], serde_json::Value::Null);
    assert_eq!(partitions.last().unwrap()["name"], "events_default");
    let created = json(&scratch.crossfold(&["--json", "partitions", "create"]));
    assert_eq!(created["created"], 0, "already ahead");

    // The first partition holds both accounts; the log passes it once the conversion's margin
    // is used up.
    for i in 0..12 {
        scratch.append(&format!("later-{i}"), opened());
    }
    with_store(&scratch.schema, async |store| {
        let client = store.pool().get().await.unwrap();
        client
            .batch_execute(
                "DO $$ BEGIN FOR i IN 1..20 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$",
            )
            .await
            .unwrap();
        store.ensure_log_partitions().await.unwrap();
    });
    let detached = json(&scratch.crossfold(&["--json", "partitions", "detach", "events_000000"]));
    let events = detached["events"].as_u64().unwrap();
    assert!(events >= 2, "{detached}");
    let gone = scratch.crossfold(&["stream", "account-1"]);
    assert_status(&gone, 1);
    assert!(
        stderr(&gone).contains("detached partition"),
        "{}",
        stderr(&gone)
    );
    let again = scratch.crossfold(&["partitions", "detach", "events_000000"]);
    assert_status(&again, 1);
    assert!(
        stderr(&again).contains("detached already"),
        "{}",
        stderr(&again)
    );
    let attached = scratch.crossfold(&["partitions", "attach", "events_000000"]);
    assert_status(&attached, 0);
    assert!(
        stdout(&attached).contains(&format!("{events} event(s) back")),
        "{}",
        stdout(&attached)
    );
    assert_status(&scratch.crossfold(&["stream", "account-1"]), 0);

    // Archive a stream, read it back; a read of it says where its events are.
    let archived = scratch.crossfold(&["archive", "stream", "account-1"]);
    assert_status(&archived, 0);
    assert!(
        stdout(&archived).contains("1 event(s) moved"),
        "{}",
        stdout(&archived)
    );
    let read = json(&scratch.crossfold(&["--json", "archive", "read", "account-1"]));
    assert_eq!(read["events"].as_array().unwrap().len(), 1);
    assert_eq!(read["events"][0]["type"], "Opened");
    let refused = scratch.crossfold(&["stream", "account-1"]);
    assert_status(&refused, 1);
    assert!(
        stderr(&refused).contains("is archived"),
        "{}",
        stderr(&refused)
    );
    let not = scratch.crossfold(&["archive", "read", "account-2"]);
    assert_status(&not, 3);
    let twice = scratch.crossfold(&["archive", "stream", "account-1"]);
    assert_status(&twice, 1);
    assert!(
        stderr(&twice).contains("archived already"),
        "{}",
        stderr(&twice)
    );
}
