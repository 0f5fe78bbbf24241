//! A PostgreSQL projection run in this process: after the database goes away and comes back
//! it resumes by itself and ends equal to a fold of the log; paused and resumed through
//! another connection to the store (as the command line of another process would), it applies
//! nothing while paused; rebuilt while events arrive, readers keep the old generation until the
//! new one has caught up, and the new one equals the fold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/pg_ledger.rs"]
mod ledger;

use std::time::{Duration, Instant};

use crossfold::core::EventStore;
use crossfold::core::checkpoint::{ControlRequest, ProjectionControl, ProjectionState};
use crossfold::postgres::{PgCheckpoints, PgConfig, PgEventStore};
use crossfold::projections::{ProjectionOptions, ProjectionRunner};
use crossfold_testkit::cluster::{StopMode, TestCluster};
use ledger::*;

async fn caught_up(checkpoints: &PgCheckpoints, store: &PgEventStore, within: Duration) {
    let (_, last) = fold(store).await;
    let deadline = Instant::now() + within;
    // No record yet: the runner has not taken its lease.
    while checkpoints
        .get("ledger")
        .await
        .unwrap()
        .is_none_or(|r| r.position < last)
    {
        assert!(Instant::now() < deadline, "the projection never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_runner(
    store: &PgEventStore,
    schema: &str,
    slow: Duration,
) -> ProjectionRunner<PgEventStore, PgCheckpoints> {
    let checkpoints = PgCheckpoints::new(store).unit_idle_timeout(Duration::from_secs(1));
    let mut runner = ProjectionRunner::new(
        store.clone(),
        checkpoints,
        runner_options("here", Duration::from_secs(2)),
    );
    runner.spawn(
        Ledger {
            schema: schema.to_owned(),
            slow,
        },
        ProjectionOptions::default().batch_size(20),
    );
    runner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_resumes_by_itself_after_a_database_outage() {
    let mut cluster = TestCluster::start_new().unwrap();
    let schema = "outage";
    let config = PgConfig::from_url(&cluster.url())
        .unwrap()
        .schema(schema)
        .pool_size(4)
        .create_timeout(Duration::from_millis(500))
        .wait_timeout(Duration::from_millis(500));
    let store = PgEventStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE outage.ledger (generation bigint, account text, balance bigint NOT NULL, \
             applied bigint NOT NULL, PRIMARY KEY (generation, account))",
        )
        .await
        .unwrap();
    let mut rng = fastrand::Rng::new();
    for _ in 0..20 {
        append_random(&store, &mut rng, 5).await;
    }
    let runner = spawn_runner(&store, schema, Duration::ZERO);
    let checkpoints = PgCheckpoints::new(&store);
    caught_up(&checkpoints, &store, Duration::from_secs(20)).await;

    cluster.stop(StopMode::Fast).unwrap();
    // While the database is away, the projection retries and says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = runner.status_of("ledger").unwrap().status;
        if status.last_error.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no error reported during the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.start().unwrap();

    // Without a restart of the runner, new events reach the read model.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store
            .append(crossfold::core::AppendRequest::new().stream(
                crossfold::core::StreamId::new("account-1").unwrap(),
                crossfold::core::ExpectedVersion::Any,
                vec![deposit(7)],
            ))
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "the store never came back: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    caught_up(&checkpoints, &store, Duration::from_secs(30)).await;
    let (expected, _) = fold(&store).await;
    assert_eq!(model(&store, schema).await, expected);
    let status = runner.status_of("ledger").unwrap();
    assert!(status.owned, "{status:?}");
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_a_rebuild_while_events_arrive_from_another_connection() {
    let (store, schema) = fresh("ctl").await;
    let _drop = SchemaGuard(schema.clone());
    let mut rng = fastrand::Rng::new();
    for _ in 0..30 {
        append_random(&store, &mut rng, 10).await;
    }
    let runner = spawn_runner(&store, &schema, Duration::from_millis(10));
    // The operator's side: its own connections, opened from the URL and schema only.
    let control = PgCheckpoints::connect(config(&schema)).await.unwrap();
    caught_up(&control, &store, Duration::from_secs(30)).await;

    control
        .request("ledger", ControlRequest::Pause)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while control.get("ledger").await.unwrap().unwrap().status.state != ProjectionState::Paused {
        assert!(Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = control.get("ledger").await.unwrap().unwrap().position;
    append_random(&store, &mut rng, 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        control.get("ledger").await.unwrap().unwrap().position,
        before
    );
    control
        .request("ledger", ControlRequest::Resume)
        .await
        .unwrap();
    caught_up(&control, &store, Duration::from_secs(20)).await;
    assert_eq!(model(&store, &schema).await, fold(&store).await.0);

    // A rebuild while events arrive: generation 1 serves until generation 2 caught up.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::new();
            while !*stopped.borrow_and_update() {
                append_random(&store, &mut rng, 3).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    control
        .request("ledger", ControlRequest::Rebuild)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_building = false;
    loop {
        let record = control.get("ledger").await.unwrap().unwrap();
        if record.generation == 2 && record.serving_generation == 1 {
            seen_building = true;
            // The switch retires generation 1 in the transaction that makes 2 serve: while
            // the record still names 1 after the model was read, the model read saw it whole.
            let served = model_of(&store, &schema, 1).await;
            let after = control.get("ledger").await.unwrap().unwrap();
            if after.serving_generation == 1 {
                assert!(!served.is_empty(), "generation 1 is served but gone");
            }
        }
        if record.serving_generation == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuild never switched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen_building,
        "the switch came before the new generation was built"
    );
    stop.send(true).unwrap();
    writer.await.unwrap();
    caught_up(&control, &store, Duration::from_secs(20)).await;
    assert_eq!(model_of(&store, &schema, 2).await, fold(&store).await.0);
    assert!(
        model_of(&store, &schema, 1).await.is_empty(),
        "generation 1 was retired"
    );
    runner.shutdown().await;
    drop_schema(&store, &schema).await;
}
