//! `crossfold migrate`: a dry run says what would be applied and changes nothing, `status`
//! shows applied and pending migrations, `--to` deploys in steps, and migrating twice is a
//! no-op.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn migrate_applies_what_is_missing_and_a_dry_run_changes_nothing() {
    let scratch = Scratch::new();

    let status = scratch.crossfold(&["--json", "migrate", "status"]);
    assert_status(&status, 0);
    let status = json(&status);
    assert_eq!(status["schema"], scratch.schema.as_str());
    assert_eq!(status["schema_exists"], false);
    assert_eq!(status["version"], 0);
    let pending = status["pending"].as_array().unwrap();
    assert!(pending.len() >= 3, "{status}");
    // The version after migrating: the newest migration's number.
    let all = pending.last().unwrap()["version"].as_u64().unwrap();
    assert_eq!(status["pending"][0]["name"], "event_store");

    let dry = scratch.crossfold(&["migrate", "--dry-run"]);
    assert_status(&dry, 0);
    let text = stdout(&dry);
    assert!(text.contains("would create schema"), "{text}");
    assert!(
        text.contains("would apply 1 event_store in a transaction"),
        "{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
    let still = json(&scratch.crossfold(&["--json", "migrate", "status"]));
    assert_eq!(
        still["schema_exists"], false,
        "a dry run created the schema"
    );

    let step = scratch.crossfold(&["--json", "migrate", "--to", "1"]);
    assert_status(&step, 0);
    assert_eq!(json(&step)["applied"], serde_json::json!([1]));

    let status = scratch.crossfold(&["migrate", "status"]);
    assert_status(&status, 0);
    let text = stdout(&status);
    assert!(text.contains("version 1,"), "{text}");
    assert!(text.contains("pending: run `crossfold migrate`"), "{text}");
    let applied = text.lines().find(|l| l.starts_with("1 ")).unwrap();
    assert!(
        applied.contains("applied") && applied.contains("20"),
        "{applied}"
    );

    let rest = scratch.crossfold(&["migrate"]);
    assert_status(&rest, 0);
    let text = stdout(&rest);
    assert!(text.contains("applied 2 log_epochs_and_roles"), "{text}");
    assert!(text.contains(&format!("now at version {all}")), "{text}");

    let again = scratch.crossfold(&["--json", "migrate"]);
    assert_status(&again, 0);
    let again = json(&again);
    assert_eq!(again["applied"], serde_json::json!([]));
    assert_eq!(again["version"], all);
    let status = json(&scratch.crossfold(&["--json", "migrate", "status"]));
    assert_eq!(status["up_to_date"], true);
    assert_eq!(status["pending"], serde_json::json!([]));
}

#[test]
fn a_database_that_is_not_there_is_said_so_with_its_own_exit_status() {
    let scratch = Scratch::new();
    let output = scratch
        .command(&["migrate"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/postgres")
        .output()
        .unwrap();
    assert_status(&output, 69);
    let text = stderr(&output);
    assert!(
        text.contains("cannot reach PostgreSQL at 127.0.0.1:1/postgres"),
        "{text}"
    );
    assert!(text.contains("hint: check --database-url"), "{text}");
    assert!(!text.contains("password"), "{text}");
}
