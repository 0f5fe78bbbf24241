//! Three OS processes run the same PostgreSQL projection; exactly one holds its lease. The
//! owner is frozen (SIGSTOP) mid-run: another takes over within the lease's time to live;
//! thawed, the stale owner cannot commit (its token is fenced) and steps down. Then the new
//! owner is killed and the third takes over. The read model ends equal to a fold of the log:
//! nothing was applied twice. Runs without the libtest harness: with `--child` this binary is
//! a projection process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/pg_ledger.rs"]
mod ledger;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crossfold::core::checkpoint::{
    CheckpointCommit, CheckpointError, Lease, ProjectionControl, UnitOfWork,
};
use crossfold::postgres::{PgCheckpoints, PgEventStore};
use ledger::*;

const TTL: Duration = Duration::from_secs(2);

fn main() {
    if std::env::args().any(|a| a == "--child") {
        child_main();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("leases_fail_over_without_double_apply: test");
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
            .any(|f| "leases_fail_over_without_double_apply".contains(f.as_str()))
    {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(leases_fail_over_without_double_apply());
    println!("test leases_fail_over_without_double_apply ... ok");
}

fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

async fn owner(checkpoints: &PgCheckpoints) -> Option<(String, u64)> {
    let record = checkpoints.get("ledger").await.unwrap()?;
    record.lease_owner.map(|o| (o, record.lease_token))
}

/// Waits for an owner other than `not`, returning it and how long it took.
async fn next_owner(checkpoints: &PgCheckpoints, not: Option<&str>) -> (String, u64, Duration) {
    let started = Instant::now();
    loop {
        if let Some((o, token)) = owner(checkpoints).await
            && Some(o.as_str()) != not
        {
            return (o, token, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no process took the lease over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn leases_fail_over_without_double_apply() {
    let (store, schema) = fresh("lease").await;
    let _drop = SchemaGuard(schema.clone());
    let checkpoints = PgCheckpoints::new(&store);
    let mut rng = fastrand::Rng::new();
    for _ in 0..40 {
        append_random(&store, &mut rng, 10).await;
    }
    let (stop, appender) = appender(store.clone());

    let (lines_tx, lines) = mpsc::channel::<(String, String)>();
    let mut children: BTreeMap<String, Child> = BTreeMap::new();
    for name in ["a", "b", "c"] {
        let mut child = spawn_child(&schema, name, TTL, Duration::from_millis(20));
        let out = BufReader::new(child.stdout.take().unwrap());
        let tx = lines_tx.clone();
        let reader_name = name.to_owned();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send((reader_name.clone(), line));
            }
        });
        children.insert(name.to_owned(), child);
    }

    // Exactly one of them runs it.
    let (first, first_token, _) = next_owner(&checkpoints, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(owner(&checkpoints).await.unwrap().0, first);

    // Freeze the owner: another takes over once the lease's time to live has passed (bounded
    // by twice the TTL here, for a loaded machine).
    signal(&children[&first], "-STOP");
    let (second, second_token, took) = next_owner(&checkpoints, Some(&first)).await;
    assert!(
        took < TTL * 2,
        "failover took {took:?} with a lease of {TTL:?}"
    );
    assert!(second_token > first_token);
    // A commit with the frozen owner's token is refused.
    let stale = Lease::new("ledger", first.clone(), first_token);
    let unit = checkpoints.begin(&stale).await.unwrap();
    let refused = checkpoints
        .commit(
            &stale,
            unit,
            CheckpointCommit::new(crossfold::core::Position::START, 1, 1),
        )
        .await;
    assert!(
        matches!(refused, Err(CheckpointError::Fenced { .. })),
        "{refused:?}"
    );
    // Thawed, the stale owner finds it lost the lease and steps down.
    signal(&children[&first], "-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stepped_down = false;
    while Instant::now() < deadline && !stepped_down {
        if let Ok((name, line)) = lines.recv_timeout(Duration::from_millis(100)) {
            stepped_down = name == first && line == "lost";
        }
    }
    assert!(stepped_down, "the thawed owner {first} did not step down");
    assert_eq!(owner(&checkpoints).await.unwrap().0, second);

    // Kill the new owner: the remaining standby (or the thawed one) takes over.
    let mut killed = children.remove(&second).unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let (third, _, took) = next_owner(&checkpoints, Some(&second)).await;
    assert!(
        took < TTL * 2,
        "failover took {took:?} with a lease of {TTL:?}"
    );
    assert_ne!(third, second);

    stop.send(true).unwrap();
    appender.await.unwrap();
    let (expected, last) = fold(&store).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoints.get("ledger").await.unwrap().unwrap().position < last {
        assert!(Instant::now() < deadline, "the projection never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, mut child) in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let actual = model(&store, &schema).await;
    drop_schema(&store, &schema).await;
    assert_eq!(
        actual, expected,
        "read model (balance, applied) differs from the log's fold"
    );
}

fn appender(
    store: PgEventStore,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut rng = fastrand::Rng::new();
        while !*stopped.borrow_and_update() {
            let n = rng.usize(1..5);
            append_random(&store, &mut rng, n).await;
            tokio::time::sleep(Duration::from_millis(rng.u64(2..20))).await;
        }
    });
    (stop, task)
}
