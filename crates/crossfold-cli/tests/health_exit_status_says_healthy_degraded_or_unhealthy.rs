//! `crossfold health` as a probe: exit status 0 when the store answers and its schema is
//! complete, 1 when migrations are pending, 2 when the server does not answer or the schema
//! holds no store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

/// Other tests share the server and may hold transactions open: a threshold of an hour keeps
/// them from degrading this test's store.
fn url() -> String {
    let base = database_url();
    let join = if base.contains('?') { '&' } else { '?' };
    format!("{base}{join}long_transaction_threshold=3600s")
}

#[test]
fn health_exit_status_says_healthy_degraded_or_unhealthy() {
    let scratch = Scratch::new();
    let run = |args: &[&str]| {
        scratch
            .command(args)
            .env("DATABASE_URL", url())
            .env("CROSSFOLD_SCHEMA", &scratch.schema)
            .output()
            .unwrap()
    };

    let empty = run(&["--json", "health"]);
    assert_status(&empty, 2);
    let report = json(&empty);
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["components"][1]["component"], "schema");
    assert!(
        report["components"][1]["message"]
            .as_str()
            .unwrap()
            .contains("run `crossfold migrate`"),
        "{report}"
    );

    assert_status(&run(&["migrate", "--to", "1"]), 0);
    let partial = run(&["health"]);
    assert_status(&partial, 1);
    let text = stdout(&partial);
    assert!(text.starts_with("degraded\n"), "{text}");
    assert!(text.contains("pending"), "{text}");

    assert_status(&run(&["migrate"]), 0);
    let healthy = run(&["--json", "health"]);
    assert_status(&healthy, 0);
    let report = json(&healthy);
    assert_eq!(report["status"], "healthy");
    assert_eq!(report["components"][0]["component"], "event_store");
    assert_eq!(
        report["components"][0]["details"]["schema"],
        scratch.schema.as_str()
    );
    assert!(
        report["components"][0]["checked_in_seconds"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    let gone = scratch
        .command(&["health"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/postgres")
        .output()
        .unwrap();
    assert_status(&gone, 2);
    assert!(
        stdout(&gone).contains("did not answer"),
        "{}",
        stdout(&gone)
    );
}
