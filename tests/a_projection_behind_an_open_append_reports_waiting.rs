//! A PostgreSQL projection that has applied everything it can read, while committed events wait
//! behind an append held open, reports `waiting` — with the append's pid and age, and the
//! events it cannot apply yet in its lag — instead of `live` with lag 0; its health names the
//! append once it has waited longer than the runner's `degraded_lag`. After the append commits
//! it applies every event once and is live again. A transaction held open that is not an
//! append of the store changes none of this.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/pg_ledger.rs"]
mod ledger;

use std::time::{Duration, Instant};

use crossfold::core::checkpoint::{ProjectionControl, ProjectionState};
use crossfold::core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, HealthStatus, StreamId,
};
use crossfold::postgres::PgCheckpoints;
use crossfold::projections::{ProjectionOptions, ProjectionRunner, RunnerStatus};
use ledger::*;

async fn raw_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Polls the runner's status until `ok` holds, failing after a minute.
async fn status_until(
    runner: &ProjectionRunner<crossfold::postgres::PgEventStore, PgCheckpoints>,
    what: &str,
    ok: impl Fn(&RunnerStatus) -> bool,
) -> RunnerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = runner.status_of("ledger");
        if let Some(status) = status.as_ref().filter(|s| ok(s)) {
            return status.clone();
        }
        assert!(Instant::now() < deadline, "never {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_behind_an_open_append_reports_waiting_with_its_pid() {
    let (store, schema) = fresh("wait").await;
    let mut options = runner_options("here", Duration::from_secs(5));
    options.degraded_lag = Duration::from_millis(500);
    options.waiting_after = Duration::from_millis(200);
    let mut runner = ProjectionRunner::new(store.clone(), PgCheckpoints::new(&store), options);
    runner.spawn(
        Ledger {
            schema: schema.clone(),
            slow: Duration::ZERO,
        },
        ProjectionOptions::default().batch_size(20),
    );
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..5 {
        append_random(&store, &mut rng, 2).await;
    }
    let (_, last) = fold(&store).await;
    status_until(&runner, "live and caught up", |s| {
        s.position == last && s.status.state == ProjectionState::Live
    })
    .await;

    // A writer foreign to the store, open all along: it holds nothing back.
    let foreign = raw_client().await;
    foreign
        .batch_execute("CREATE TEMPORARY TABLE held (n int); BEGIN; INSERT INTO held VALUES (1)")
        .await
        .unwrap();
    // An append held open, then events committed after it.
    let held = raw_client().await;
    let pid: i32 = held
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    held.batch_execute("BEGIN").await.unwrap();
    held.execute(
        &format!(
            "SELECT * FROM \"{schema}\".append(ARRAY['account-held'], ARRAY[-1]::int8[], \
             ARRAY[1], ARRAY[1], ARRAY[1], ARRAY[$1::uuid], ARRAY['Deposited'], ARRAY[1], \
             ARRAY['{{\"amount\": 1000}}'::jsonb], ARRAY[NULL::bytea], \
             ARRAY['{{\"recorded_at\": 0}}'::jsonb])"
        ),
        &[&EventId::generate().as_uuid()],
    )
    .await
    .unwrap();
    for _ in 0..4 {
        store
            .append(AppendRequest::new().stream(
                StreamId::new("account-after").unwrap(),
                ExpectedVersion::Any,
                vec![deposit(1)],
            ))
            .await
            .unwrap();
    }

    let waiting = status_until(&runner, "waiting", |s| {
        s.status.state == ProjectionState::Waiting
    })
    .await;
    assert_eq!(waiting.position, last, "applied nothing behind the append");
    assert_eq!(waiting.status.lag_events, 4, "{:?}", waiting.status);
    let append = waiting
        .status
        .waiting_for
        .clone()
        .expect("names the append");
    assert_eq!(append.pid, Some(pid as u32));
    assert!(append.open_seconds >= 0.2, "{append:?}");
    assert!(waiting.status.lag_seconds >= 0.2, "{:?}", waiting.status);

    // Waiting longer than degraded_lag: degraded, and the message names the append.
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = runner.health_checks()[0].report();
        if report.status == HealthStatus::Degraded {
            break report;
        }
        assert!(Instant::now() < deadline, "never degraded: {report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let message = report.message.clone().unwrap_or_default();
    assert!(message.contains(&format!("pid {pid}")), "{message}");
    assert_eq!(report.details["state"], "waiting");
    assert_eq!(report.details["waiting_pid"], pid);

    // The runner's report reaches the store, for other processes and the command line.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = runner.checkpoints().get("ledger").await.unwrap().unwrap();
        if record.status.state == ProjectionState::Waiting {
            assert_eq!(
                record.status.waiting_for.and_then(|a| a.pid),
                Some(pid as u32)
            );
            break;
        }
        assert!(Instant::now() < deadline, "never reported: {record:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    held.batch_execute("COMMIT").await.unwrap();
    let (balances, last) = fold(&store).await;
    let live = status_until(&runner, "live again", |s| {
        s.position == last && s.status.state == ProjectionState::Live
    })
    .await;
    assert_eq!(live.status.waiting_for, None);
    assert_eq!(model(&store, &schema).await, balances);
    assert_eq!(balances["account-held"], (1000, 1));
    assert_eq!(balances["account-after"], (4, 4));
    foreign.batch_execute("COMMIT").await.unwrap();
    runner.shutdown().await;
    drop_schema(&store, &schema).await;
}
