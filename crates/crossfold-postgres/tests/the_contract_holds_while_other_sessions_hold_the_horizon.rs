//! Every behaviour of the `EventStore` contract holds on a busy server: while this file's tests
//! run, other sessions keep transactions open — one after another, each held for a third of a
//! second — so that the log's visibility horizon is always behind the newest appends. One
//! session writes a temporary table of its own (a writer foreign to every store, which readers
//! pass once they have found it out); another, one per store, registers as an appender of the
//! test's store (`register_append`, as an append does first) and writes a temporary table, so
//! that it holds that store's horizon without adding events. Readers of the log must wait for
//! it (`wait_for_position`), not assume that an append they made is visible the moment it
//! returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

/// Starts, once per test process, a thread that holds writing transactions open until the
/// process ends. It waits until the first transaction is open before returning.
fn hold_the_horizon() {
    static HOLDER: OnceLock<()> = OnceLock::new();
    HOLDER.get_or_init(|| {
        let (opened, first) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut client = common::raw_client().await;
                // A temporary table: it goes with the session, whenever the process ends.
                client
                    .batch_execute("CREATE TEMPORARY TABLE horizon_holder (n int)")
                    .await
                    .unwrap();
                let mut opened = Some(opened);
                loop {
                    let tx = client.transaction().await.unwrap();
                    tx.execute("INSERT INTO horizon_holder VALUES (1)", &[])
                        .await
                        .unwrap();
                    if let Some(opened) = opened.take() {
                        let _ = opened.send(());
                    }
                    tokio::time::sleep(Duration::from_millis(330)).await;
                    tx.commit().await.unwrap();
                }
            });
        });
        first
            .recv_timeout(Duration::from_secs(30))
            .expect("the horizon holder could not open a transaction");
    });
}

/// Spawns a task that holds registered transactions of the store in `schema` open, one after
/// another, until the store's schema is gone or the test's runtime ends. Waits until the first
/// one is open.
async fn hold_the_stores_horizon(schema: &str) {
    let (opened, first) = tokio::sync::oneshot::channel();
    let hold =
        format!("SELECT \"{schema}\".register_append(); INSERT INTO horizon_holder VALUES (1)");
    tokio::spawn(async move {
        let mut client = common::raw_client().await;
        if client
            .batch_execute("CREATE TEMPORARY TABLE horizon_holder (n int)")
            .await
            .is_err()
        {
            return;
        }
        let mut opened = Some(opened);
        loop {
            let Ok(tx) = client.transaction().await else {
                return;
            };
            // Fails once the test dropped the schema: then the holding ends.
            if tx.batch_execute(&hold).await.is_err() {
                return;
            }
            if let Some(opened) = opened.take() {
                let _ = opened.send(());
            }
            tokio::time::sleep(Duration::from_millis(330)).await;
            if tx.commit().await.is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the store's horizon holder could not open a transaction")
        .expect("the store's horizon holder stopped");
}

async fn fresh_store_on_a_busy_server() -> common::TestStore {
    hold_the_horizon();
    let store = common::fresh_store().await;
    hold_the_stores_horizon(store.schema()).await;
    store
}

crossfold_testkit::store_contract_tests!(fresh_store_on_a_busy_server);
