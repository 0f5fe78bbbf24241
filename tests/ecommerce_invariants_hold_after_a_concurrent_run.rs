//! The e-commerce example under a concurrent workload — customers placing, paying, cancelling
//! and paying too late at once, the payment saga and the read models running, then the
//! payment deadlines firing — keeps its invariants (on PostgreSQL with the read models in
//! tables written in the projections' transactions): stock never negative, every reservation
//! released or consumed exactly once, every payment kept by a paid order or refunded, and the
//! read models equal to a fold of the log. On memory, and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../examples/ecommerce/app.rs"]
mod app;
#[path = "../examples/ecommerce/saga.rs"]
mod saga;
#[path = "../examples/ecommerce/shop.rs"]
mod shop;
#[path = "../examples/ecommerce/views.rs"]
mod views;
#[path = "../examples/ecommerce/workload.rs"]
mod workload;

use crossfold::core::deadline::DeadlineStore;
use crossfold::memory::MemoryStore;
use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariants_hold_on_memory() {
    let app = app::App::start(
        MemoryStore::new(),
        MemoryDeadlineStore::new(),
        MemoryCheckpoints::new(),
        views::MemoryViews::default(),
    );
    let outcome = workload::run(&app, 8, 12, 42).await.unwrap();
    println!("{outcome}");
    println!("{}", workload::check(&app).await.unwrap());
    let counts = app
        .deadlines
        .deadline_counts(app.clock.now())
        .await
        .unwrap();
    assert_eq!((counts.pending, counts.overdue), (0, 0));
    app.shutdown().await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariants_hold_on_postgres() {
    use crossfold::postgres::{PgCheckpoints, PgConfig, PgDeadlineStore, PgEventStore};
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!(
        "cf_test_{}_{:08x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        fastrand::u32(..)
    );
    let store = PgEventStore::connect(
        PgConfig::from_url(&url)
            .unwrap()
            .schema(&schema)
            .pool_size(8),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
    store.migrate().await.unwrap();
    let app = app::App::start(
        store.clone(),
        PgDeadlineStore::new(&store),
        PgCheckpoints::new(&store),
        views::PgViews::create(&store).await.unwrap(),
    );
    let outcome = workload::run(&app, 6, 8, 7).await.unwrap();
    println!("{outcome}");
    println!("{}", workload::check(&app).await.unwrap());
    let counts = app
        .deadlines
        .deadline_counts(app.clock.now())
        .await
        .unwrap();
    assert_eq!((counts.pending, counts.overdue), (0, 0));
    app.shutdown().await;
    store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}
