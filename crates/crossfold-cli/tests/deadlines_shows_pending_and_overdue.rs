//! `crossfold deadlines` shows how many deadlines are pending and overdue, and the next ones
//! due, for people and as JSON; fired and cancelled deadlines are not pending.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use crossfold_core::Timestamp;
use crossfold_core::deadline::{Deadline, DeadlineId, DeadlineStore};
use crossfold_postgres::PgDeadlineStore;

#[test]
fn deadlines_shows_pending_and_overdue() {
    let scratch = Scratch::new();
    scratch.with_store(async |store| {
        store.migrate().await.unwrap();
        let deadlines = PgDeadlineStore::new(&store);
        let now = Timestamp::now();
        let hour = Duration::from_secs(3600);
        let past = Timestamp::from_unix_micros(now.unix_micros() - 3_600_000_000);
        for (id, due) in [
            ("payment-timeout/late", past),
            ("payment-timeout/soon", now.saturating_add(hour)),
            ("payment-timeout/cancelled", now.saturating_add(hour)),
        ] {
            let deadline = Deadline::new(DeadlineId::new(id).unwrap(), "payment-timeout", due);
            deadlines.schedule(deadline).await.unwrap();
        }
        let cancelled = DeadlineId::new("payment-timeout/cancelled").unwrap();
        assert!(deadlines.cancel(&cancelled).await.unwrap());
    });

    let text = scratch.crossfold(&["deadlines"]);
    assert_status(&text, 0);
    let text = stdout(&text);
    assert!(
        text.starts_with("2 pending, 1 overdue"),
        "unexpected output:\n{text}"
    );
    let late = text.find("payment-timeout/late").unwrap();
    let soon = text.find("payment-timeout/soon").unwrap();
    assert!(late < soon, "earliest due first:\n{text}");
    assert!(!text.contains("cancelled"), "{text}");

    let report = json(&scratch.crossfold(&["--json", "deadlines", "--limit", "1"]));
    assert_eq!(report["pending"], 2);
    assert_eq!(report["overdue"], 1);
    let next = report["next"].as_array().unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["id"], "payment-timeout/late");
    assert_eq!(next[0]["overdue"], true);
}
