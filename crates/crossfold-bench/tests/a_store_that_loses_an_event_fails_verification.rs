//! A store that reports an append as written but leaves one of its events out makes the run
//! FAILED, with a problem that says events were lost.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests report failures by panicking"
)]

mod common;

use common::{BrokenStore, Flaw, assert_failed_naming, run};
use crossfold_bench::Workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_deposit_is_reported() {
    let store = BrokenStore::new(Flaw::LosesAnEvent, "Deposited");
    let report = run(store.clone(), Workload::Deposit).await;
    assert!(store.struck(), "no deposit was appended");
    assert_failed_naming(&report, "events lost");
    assert_failed_naming(&report, "1 missing");
    assert_failed_naming(&report, "money not conserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invoice_number_is_reported() {
    let store = BrokenStore::new(Flaw::LosesAnEvent, "InvoiceNumbered");
    let report = run(store.clone(), Workload::HotCounter).await;
    assert!(store.struck(), "no invoice was numbered");
    assert_failed_naming(&report, "events lost");
    assert_failed_naming(&report, "was taken on the counter but no invoice holds it");
}
