//! `crossfold projections` against projections that a running application (here: a runner on a
//! runtime of the test's own) keeps in PostgreSQL: the command lists them with their position,
//! shows one, pauses it so that it stops applying, resumes it so that it catches up, refuses
//! names it does not know, and `crossfold health` reports each projection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use crossfold_core::{DomainEvent, EventData, LogFilter, Payload, Recorded};
use crossfold_postgres::{PgCheckpoints, PgConfig, PgEventStore, PgUnit};
use crossfold_projections::{
    ApplyContext, HandlerError, Projection, ProjectionOptions, ProjectionRunner, RunnerOptions,
};
use serde_json::Value;

#[derive(serde::Serialize, serde::Deserialize)]
struct Deposited {
    amount: i64,
}

impl DomainEvent for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

/// Counts the events it applied.
struct Counter(Arc<AtomicU64>);

impl Projection for Counter {
    type Event = Deposited;
    type Unit = PgUnit;

    fn name(&self) -> &str {
        "deposits"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::event_types(["Deposited"])
    }

    async fn apply(
        &self,
        _unit: &mut PgUnit,
        _context: &ApplyContext,
        events: &[Recorded<Deposited>],
    ) -> Result<(), HandlerError> {
        self.0.fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

fn deposits(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|_| EventData::new("Deposited", Payload::json(br#"{"amount":1}"#.to_vec())))
        .collect()
}

/// The projection's record as `crossfold --json projections status` prints it.
fn status(scratch: &Scratch) -> Value {
    let output = scratch.crossfold(&["--json", "projections", "status", "deposits"]);
    assert_status(&output, 0);
    json(&output)["projections"][0].clone()
}

/// Waits until `check` holds for the printed status.
#[track_caller]
fn until(scratch: &Scratch, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = status(scratch);
        if check(&record) {
            return record;
        }
        assert!(Instant::now() < deadline, "never {what}: {record:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn projections_are_listed_paused_and_resumed_from_another_process() {
    let scratch = Scratch::new();
    scratch.append("account-1", deposits(3));

    let applied = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runner = runtime.block_on(async {
        let config = PgConfig::from_url(&database_url())
            .unwrap()
            .schema(scratch.schema.clone())
            .pool_size(4);
        let store = PgEventStore::connect(config).await.unwrap();
        let checkpoints = PgCheckpoints::new(&store);
        let options = RunnerOptions::default()
            .control_interval(Duration::from_millis(50))
            .status_interval(Duration::from_millis(50));
        let mut runner = ProjectionRunner::new(store, checkpoints, options);
        runner.spawn(Counter(applied.clone()), ProjectionOptions::default());
        runner
    });

    let record = until(&scratch, "caught up", |r| r["status"]["state"] == "live");
    assert_eq!(applied.load(Ordering::SeqCst), 3);
    assert!(record["lease_owner"].is_string(), "{record:#}");
    let list = scratch.crossfold(&["projections", "list"]);
    assert_status(&list, 0);
    let listed = stdout(&list);
    assert!(
        listed.contains("deposits") && listed.contains("live"),
        "{listed}"
    );

    let paused = scratch.crossfold(&["projections", "pause", "deposits"]);
    assert_status(&paused, 0);
    assert!(stdout(&paused).contains("paused"), "{}", stdout(&paused));
    let record = until(&scratch, "paused", |r| r["status"]["state"] == "paused");
    let position = record["position"].clone();
    scratch.append("account-2", deposits(2));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        applied.load(Ordering::SeqCst),
        3,
        "a paused projection applied events"
    );
    assert_eq!(status(&scratch)["position"], position);
    let health = scratch.crossfold(&["--json", "health"]);
    assert_status(&health, 1);
    let components = json(&health)["components"].clone();
    let projection = components
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "projection:deposits")
        .unwrap_or_else(|| panic!("no projection in {components:#}"));
    assert_eq!(projection["status"], "degraded", "{projection:#}");

    let resumed = scratch.crossfold(&["projections", "resume", "deposits"]);
    assert_status(&resumed, 0);
    until(&scratch, "caught up again", |r| {
        r["status"]["state"] == "live" && r["position"] != position
    });
    assert_eq!(applied.load(Ordering::SeqCst), 5);
    assert_status(&scratch.crossfold(&["health"]), 0);

    for args in [
        &["projections", "status", "balances"][..],
        &["projections", "pause", "balances"],
    ] {
        let output = scratch.crossfold(args);
        assert_status(&output, 3);
        assert!(stderr(&output).contains("balances"), "{}", stderr(&output));
    }
    let listed = json(&scratch.crossfold(&["--json", "projections", "list"]));
    assert_eq!(
        listed["projections"].as_array().unwrap().len(),
        1,
        "{listed:#}"
    );

    runtime.block_on(runner.shutdown());
}
