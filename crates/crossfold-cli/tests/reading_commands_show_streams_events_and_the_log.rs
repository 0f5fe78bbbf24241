//! `crossfold streams`, `stream`, `event` and `tail` on a real store: what they list, how
//! they page, payloads decoded as JSON (MessagePack too), and the exit status of what is not
//! there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use crossfold_core::{
    AppendRequest, EventData, EventStore, ExpectedVersion, Metadata, Payload, StreamId,
};
use crossfold_postgres::{PgConfig, PgEventStore};
use serde_json::json;

fn event(event_type: &str, payload: serde_json::Value) -> EventData {
    let mut event = EventData::new(event_type, Payload::json(payload.to_string().into_bytes()));
    let mut metadata = Metadata::now();
    metadata.actor = Some("teller-7".to_owned());
    event.metadata = std::sync::Arc::new(metadata);
    event
}

fn populated() -> Scratch {
    let scratch = Scratch::new();
    scratch.append(
        "account-1",
        vec![
            event("Opened", json!({"initial": 100})),
            event("Deposited", json!({"amount": 5})),
            event("Deposited", json!({"amount": 7})),
        ],
    );
    scratch.append("account-2", vec![event("Opened", json!({"initial": 0}))]);
    let packed = rmp_serde::to_vec_named(&json!({"total": 12})).unwrap();
    scratch.append(
        "order-9",
        vec![EventData::new("Placed", Payload::message_pack(packed))],
    );
    scratch
}

#[test]
fn streams_are_listed_with_counts_by_prefix_and_in_pages() {
    let scratch = populated();
    let all = scratch.crossfold(&["streams"]);
    assert_status(&all, 0);
    let text = stdout(&all);
    let first = text.lines().nth(1).unwrap();
    assert!(
        first.starts_with("account-1  ") && first.contains(" 3 "),
        "{text}"
    );
    assert!(
        text.contains("3 stream(s), 5 event(s) in all; 3 shown"),
        "{text}"
    );

    let accounts = json(&scratch.crossfold(&["--json", "streams", "account-"]));
    assert_eq!(accounts["total_streams"], 2);
    assert_eq!(accounts["total_events"], 4);
    assert_eq!(accounts["streams"][1]["stream"], "account-2");
    assert_eq!(accounts["streams"][1]["events"], 1);

    let page = json(&scratch.crossfold(&["--json", "streams", "--limit", "1"]));
    assert_eq!(page["next_after"], "account-1");
    let next = json(&scratch.crossfold(&["--json", "streams", "--after", "account-1"]));
    assert_eq!(next["streams"][0]["stream"], "account-2");
    assert_eq!(next["next_after"], serde_json::Value::Null);
}

#[test]
fn a_stream_shows_its_events_with_metadata_and_decoded_payloads() {
    let scratch = populated();
    let read = scratch.crossfold(&[
        "--json",
        "stream",
        "account-1",
        "--from",
        "2",
        "--limit",
        "1",
    ]);
    assert_status(&read, 0);
    let read = json(&read);
    assert_eq!(read["version"], 3);
    let events = read["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["version"], 2);
    assert_eq!(events[0]["type"], "Deposited");
    assert_eq!(events[0]["payload"], json!({"amount": 5}));
    assert_eq!(events[0]["metadata"]["actor"], "teller-7");
    assert!(events[0]["recorded_at"].as_str().unwrap().ends_with('Z'));

    let text = stdout(&scratch.crossfold(&["stream", "account-1", "--limit", "2"]));
    assert!(text.contains("account-1 #1  Opened  "), "{text}");
    assert!(text.contains(r#"payload  {"initial":100}"#), "{text}");
    assert!(text.contains("events 1-2 of 3"), "{text}");
    assert!(
        text.contains(r#"more: crossfold stream "account-1" --from 3"#),
        "{text}"
    );

    let packed = json(&scratch.crossfold(&["--json", "stream", "order-9"]));
    assert_eq!(packed["events"][0]["payload"], json!({"total": 12}));

    let missing = scratch.crossfold(&["stream", "account-404"]);
    assert_status(&missing, 3);
    assert!(
        stderr(&missing).contains("has no events"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn an_event_is_shown_by_its_id() {
    let scratch = populated();
    let written = scratch.append("order-10", vec![event("Placed", json!({"total": 3}))]);
    let id = written.events[0].event_id.to_string();
    let shown = scratch.crossfold(&["--json", "event", &id]);
    assert_status(&shown, 0);
    let shown = json(&shown);
    assert_eq!(shown["event_id"], id.as_str());
    assert_eq!(shown["stream"], "order-10");
    assert_eq!(shown["position"], written.events[0].position.to_string());

    let unknown = scratch.crossfold(&["event", &uuid::Uuid::now_v7().to_string()]);
    assert_status(&unknown, 3);
    let malformed = scratch.crossfold(&["event", "not-a-uuid"]);
    assert_status(&malformed, 64);
}

#[test]
fn tail_shows_the_end_of_the_log_filtered_by_category_prefix_and_type() {
    let scratch = populated();
    let last = scratch.crossfold(&["tail", "-n", "2"]);
    assert_status(&last, 0);
    let lines: Vec<String> = stdout(&last).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("account-2 #1  Opened"), "{lines:?}");
    assert!(lines[1].contains("order-9 #1  Placed"), "{lines:?}");

    let lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let output = scratch.crossfold(args);
        assert_status(&output, 0);
        stdout(&output)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let everything = lines(&["--json", "tail", "--from", "start"]);
    assert_eq!(everything.len(), 5);
    let from = everything[2]["position"].as_str().unwrap().to_owned();
    assert_eq!(lines(&["--json", "tail", "--from", &from]).len(), 2);
    assert!(lines(&["--json", "tail", "--from", "head"]).is_empty());

    let deposits = lines(&["--json", "tail", "--from", "start", "--type", "Deposited"]);
    assert_eq!(deposits.len(), 2);
    let accounts = lines(&["--json", "tail", "--from", "start", "--category", "account"]);
    assert_eq!(accounts.len(), 4);
    let second = lines(&["--json", "tail", "--from", "start", "--prefix", "account-2"]);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["stream"], "account-2");
    let by_word = lines(&["--json", "tail", "--from", "start", "--prefix", "ord"]);
    assert_eq!(by_word.len(), 1);

    let bad = scratch.crossfold(&["tail", "--from", "yesterday"]);
    assert_status(&bad, 64);
}

#[test]
fn tail_follow_prints_events_appended_after_it_started() {
    let scratch = populated();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::from(scratch.command(&[
            "--json",
            "tail",
            "--from",
            "head",
            "--follow",
            "--category",
            "order",
        ]))
        .env("DATABASE_URL", database_url())
        .env("CROSSFOLD_SCHEMA", &scratch.schema)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Appended until one shows up: the follower may not have read the head yet when the
        // first append commits (it then shows that one too, or a later one).
        let mut seen = None;
        // One store for all appends, kept open: its notifier wakes the follower at once.
        let store = PgEventStore::connect(
            PgConfig::from_url(&database_url())
                .unwrap()
                .schema(scratch.schema.clone())
                .pool_size(2),
        )
        .await
        .unwrap();
        for n in 0..50 {
            let stream = StreamId::new(format!("order-live{n}")).unwrap();
            store
                .append(AppendRequest::new().stream(
                    stream,
                    ExpectedVersion::NoStream,
                    vec![event("Placed", json!({"total": n}))],
                ))
                .await
                .unwrap();
            if let Ok(Ok(Some(line))) =
                tokio::time::timeout(std::time::Duration::from_millis(500), lines.next_line()).await
            {
                seen = Some(line);
                break;
            }
        }
        let line = seen.expect("tail --follow printed no appended event");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(
            event["stream"].as_str().unwrap().starts_with("order-live"),
            "{event}"
        );
        // SIGTERM is how a supervisor stops it: a clean end, exit status 0.
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
            .await
            .expect("tail --follow did not end on SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0));
    });
}
