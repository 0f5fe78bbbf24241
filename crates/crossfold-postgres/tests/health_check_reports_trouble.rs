//! The store's health check against a real server: healthy when all is well, degraded by an
//! append held open past the threshold (it delays subscriptions) or by an exhausted pool,
//! unhealthy once the server can no longer be reached. Other writing transactions held open
//! are reported, and degrade nothing: they delay no subscription.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{database_url, fresh_store_with, raw_client};
use crossfold_core::{HealthCheck, HealthReport, HealthStatus};
use crossfold_postgres::{PgConfig, PgEventStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

fn message(report: &HealthReport) -> &str {
    report.message.as_deref().unwrap_or_default()
}

async fn listener_up(store: &PgEventStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.health().await.unwrap().listener_connected {
        assert!(
            Instant::now() < deadline,
            "the LISTEN connection never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_store_is_healthy() {
    // Any writing transaction in the cluster counts, and other tests share it: a high
    // threshold keeps their transactions from deciding this test.
    let store = fresh_store_with(|c| {
        c.pool_size(3)
            .long_transaction_threshold(Duration::from_secs(3600))
    })
    .await;
    listener_up(&store).await;
    let report = store.check_health().await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    assert_eq!(report.message, None);
    assert_eq!(report.details["pool_max_size"], 3);
    assert_eq!(report.details["pool_waiting"], 0);
    assert_eq!(report.details["listener_connected"], true);
    assert_eq!(report.details["schema"], store.schema());
    assert!(report.details["latency_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        report.details["long_transaction_threshold_seconds"]
            .as_f64()
            .unwrap(),
        3600.0
    );
    assert!(
        report
            .details
            .contains_key("oldest_transaction_age_seconds")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_held_open_past_the_threshold_degrades_health() {
    let threshold = Duration::from_millis(200);
    let store = fresh_store_with(|c| c.long_transaction_threshold(threshold)).await;
    assert_eq!(store.long_transaction_threshold(), threshold);

    let held = raw_client().await;
    let pid: i32 = held
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Registered as an append of the store, holding a transaction id: what an append does
    // before it writes its events.
    held.batch_execute(&format!(
        "BEGIN; SELECT \"{}\".register_append(); SELECT pg_current_xact_id()",
        store.schema()
    ))
    .await
    .unwrap();
    tokio::time::sleep(threshold * 3).await;

    let report = store.check_health().await;
    held.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(
        message(&report).contains(&format!("an append (pid {pid}) open for")),
        "{report:?}"
    );
    assert_eq!(report.details["oldest_append_pid"], pid);
    let age = report.details["oldest_append_age_seconds"]
        .as_f64()
        .unwrap();
    assert!(age >= threshold.as_secs_f64() * 2.0, "{age}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_open_that_is_no_append_is_reported_and_degrades_nothing() {
    let threshold = Duration::from_millis(200);
    let store = fresh_store_with(|c| c.long_transaction_threshold(threshold)).await;

    let mut raw = raw_client().await;
    let tx = raw.transaction().await.unwrap();
    tx.query_one("SELECT pg_current_xact_id()", &[])
        .await
        .unwrap();
    tokio::time::sleep(threshold * 3).await;

    let report = store.check_health().await;
    tx.rollback().await.unwrap();
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    let age = report.details["oldest_transaction_age_seconds"]
        .as_f64()
        .unwrap();
    assert!(age >= threshold.as_secs_f64() * 2.0, "{age}");
    assert_eq!(report.details["oldest_append_pid"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_degrades_health() {
    let store = fresh_store_with(|c| {
        c.pool_size(1)
            .wait_timeout(Duration::from_millis(200))
            .long_transaction_threshold(Duration::from_secs(3600))
    })
    .await;
    let held = store.pool().get().await.unwrap();
    let report = store.check_health().await;
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(message(&report).contains("pool exhausted"), "{report:?}");
    assert_eq!(report.details["pool_size"], 1);
    assert_eq!(report.details["pool_available"], 0);
    drop(held);
    assert_ne!(
        store.check_health().await.status,
        HealthStatus::Unhealthy,
        "a freed connection serves the check again"
    );
}

/// A TCP proxy to the test server that can be cut, making the server unreachable to a store
/// that connected through it.
struct Proxy {
    port: u16,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let pg = tokio_postgres::Config::from_str(&database_url()).unwrap();
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let target = format!("{host}:{}", pg.get_ports().first().copied().unwrap_or(5432));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            // Owned by the task, so cutting the proxy also drops every open connection.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, task }
    }

    /// The test server's settings, reached through the proxy.
    fn config(&self) -> PgConfig {
        let pg = tokio_postgres::Config::from_str(&database_url()).unwrap();
        let user = pg.get_user().unwrap_or("postgres");
        let dbname = pg.get_dbname().unwrap_or(user);
        let mut config = PgConfig::from_url(&format!(
            "postgres://{user}@127.0.0.1:{}/{dbname}",
            self.port
        ))
        .unwrap()
        .pool_size(2)
        .wait_timeout(Duration::from_secs(1))
        .create_timeout(Duration::from_secs(1));
        if let Some(password) = pg.get_password() {
            config.driver_config_mut().password(password);
        }
        config
    }

    async fn cut(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_be_reached_is_unhealthy() {
    let proxy = Proxy::start().await;
    // Never migrated: a health check needs no schema, so there is nothing to clean up.
    let store = PgEventStore::connect(proxy.config()).await.unwrap();
    assert_ne!(store.check_health().await.status, HealthStatus::Unhealthy);

    proxy.cut().await;
    // The cut connections close asynchronously; the pool notices on its next checkout.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = store.check_health().await;
        if report.status == HealthStatus::Unhealthy || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report.status, HealthStatus::Unhealthy, "{report:?}");
    assert!(message(&report).contains("did not answer"), "{report:?}");
    assert_eq!(report.details["error_kind"], "unavailable", "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_horizon_held_back_degrades_health_for_any_role() {
    let cluster = crossfold_testkit::cluster::TestCluster::start_new().unwrap();
    let admin = common::raw_client_at(&cluster.url()).await;
    // A role that cannot see other roles' sessions in pg_stat_activity.
    admin
        .batch_execute("CREATE ROLE watcher LOGIN")
        .await
        .unwrap();
    let threshold = Duration::from_millis(200);
    let config = PgConfig::from_url(&cluster.url_for("watcher", "postgres"))
        .unwrap()
        .pool_size(2)
        .listen(false)
        .long_transaction_threshold(threshold);
    let store = PgEventStore::connect(config).await.unwrap();

    let mut holder = common::raw_client_at(&cluster.url()).await;
    let tx = holder.transaction().await.unwrap();
    tx.query_one("SELECT pg_current_xact_id()", &[])
        .await
        .unwrap();
    // Newer transactions come and go meanwhile.
    admin
        .batch_execute("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    let first = store.health().await.unwrap();
    assert_eq!(
        first.oldest_transaction_age, None,
        "another role's session is hidden from this one"
    );
    assert!(first.horizon_lag >= 2, "{first:?}");
    tokio::time::sleep(threshold * 3).await;
    let report = store.check_health().await;
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(
        message(&report).contains("visibility horizon has not moved"),
        "{report:?}"
    );
    assert!(report.details["horizon_age_seconds"].as_f64().unwrap() >= threshold.as_secs_f64());

    tx.rollback().await.unwrap();
    let report = store.check_health().await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    assert_eq!(report.details["horizon_lag_transactions"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_of_another_role_held_open_is_named_and_aged_by_the_checks_that_see_it() {
    let cluster = crossfold_testkit::cluster::TestCluster::start_new().unwrap();
    let admin = common::raw_client_at(&cluster.url()).await;
    // An owner that may not see the application role's sessions in pg_stat_activity.
    admin
        .batch_execute(
            "CREATE ROLE bank_owner LOGIN; CREATE ROLE bank_app LOGIN; \
             GRANT CREATE ON DATABASE postgres TO bank_owner",
        )
        .await
        .unwrap();
    let owner = PgEventStore::connect(
        PgConfig::from_url(&cluster.url_for("bank_owner", "postgres"))
            .unwrap()
            .schema("bank")
            .pool_size(1)
            .listen(false),
    )
    .await
    .unwrap();
    owner.migrate().await.unwrap();
    owner.grant_access("bank_app").await.unwrap();
    let threshold = Duration::from_millis(200);
    let store = PgEventStore::connect(
        PgConfig::from_url(&cluster.url_for("bank_app", "postgres"))
            .unwrap()
            .schema("bank")
            .pool_size(2)
            .listen(false)
            .long_transaction_threshold(threshold),
    )
    .await
    .unwrap();

    let held = common::raw_client_at(&cluster.url_for("bank_app", "postgres")).await;
    let pid: i32 = held
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    held.batch_execute("BEGIN; SELECT bank.register_append(); SELECT pg_current_xact_id()")
        .await
        .unwrap();
    let first = store.health().await.unwrap();
    let append = first.oldest_append.expect("the held append is named");
    assert_eq!(append.pid, Some(pid as u32));
    assert_eq!(
        append.started_at, None,
        "its start is hidden from the owner"
    );
    tokio::time::sleep(threshold * 3).await;
    let report = store.check_health().await;
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(
        message(&report).contains(&format!("an append (pid {pid}) open for")),
        "{report:?}"
    );
    let age = report.details["oldest_append_age_seconds"]
        .as_f64()
        .unwrap();
    assert!(age >= threshold.as_secs_f64() * 2.0, "{age}");

    // The application role may ask what readers pass, not read the lock table through the
    // store's internal function.
    let app = common::raw_client_at(&cluster.url_for("bank_app", "postgres")).await;
    app.query_one("SELECT bank.foreign_writers(pg_current_snapshot())", &[])
        .await
        .unwrap();
    let refused = app
        .query_one("SELECT count(*) FROM bank.log_writers(NULL)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused:?}"
    );

    held.batch_execute("ROLLBACK").await.unwrap();
    let report = store.check_health().await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    assert_eq!(report.details["oldest_append_pid"], serde_json::Value::Null);
}
