//! A PostgreSQL projection runs in a child process that is SIGKILLed at 20 random points —
//! mostly in the middle of a batch, its transaction half-written — while events are appended;
//! restarted each time, it ends with a read model equal to a fold of the whole log: every
//! event applied exactly once. Runs without the libtest harness: with `--child` this binary is
//! the projection process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/pg_ledger.rs"]
mod ledger;

use std::time::{Duration, Instant};

use ledger::*;

const KILLS: usize = 20;
const TTL: Duration = Duration::from_secs(2);

fn main() {
    if std::env::args().any(|a| a == "--child") {
        child_main();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("a_killed_projection_applies_every_event_once: test");
        return;
    }
    // `cargo test FILTER` passes the filter on: run only if it names this test.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|f| "a_killed_projection_applies_every_event_once".contains(f.as_str()))
    {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(a_killed_projection_applies_every_event_once());
    println!("test a_killed_projection_applies_every_event_once ... ok");
}

async fn a_killed_projection_applies_every_event_once() {
    let (store, schema) = fresh("kill").await;
    let _drop = SchemaGuard(schema.clone());
    let mut rng = fastrand::Rng::new();
    for _ in 0..50 {
        append_random(&store, &mut rng, 10).await;
    }
    let appender = {
        let store = store.clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut rng = fastrand::Rng::new();
            while !*stopped.borrow_and_update() {
                let n = rng.usize(1..8);
                append_random(&store, &mut rng, n).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(1..15))).await;
            }
        });
        (stop, task)
    };
    for kill in 0..KILLS {
        // The same owner name each time, as a restarted process has: it takes its lease back
        // at once.
        let mut child = spawn_child(&schema, "child", TTL, Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(rng.u64(60..300))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = kill;
    }
    appender.0.send(true).unwrap();
    appender.1.await.unwrap();

    // A last child that is not killed catches up with the whole log.
    let (expected, last) = fold(&store).await;
    let mut child = spawn_child(&schema, "child", TTL, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoints = crossfold::postgres::PgCheckpoints::new(&store);
    loop {
        let record = crossfold::core::checkpoint::ProjectionControl::get(&checkpoints, "ledger")
            .await
            .unwrap();
        if record.is_some_and(|r| r.position >= last) {
            break;
        }
        assert!(Instant::now() < deadline, "the projection never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let actual = model(&store, &schema).await;
    let events: i64 = expected.values().map(|(_, n)| n).sum();
    drop_schema(&store, &schema).await;
    assert!(events > 500, "only {events} events were appended");
    assert_eq!(
        actual, expected,
        "read model (balance, applied) differs from the log's fold"
    );
}
