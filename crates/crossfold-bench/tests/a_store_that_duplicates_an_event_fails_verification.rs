//! A store that writes one event twice (a second row with an id of its own) while reporting one
//! makes the run FAILED, with a problem that says events were written twice.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests report failures by panicking"
)]

mod common;

use common::{BrokenStore, Flaw, assert_failed_naming, run};
use crossfold_bench::Workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_deposit_is_reported() {
    let store = BrokenStore::new(Flaw::DuplicatesAnEvent, "Deposited");
    let report = run(store.clone(), Workload::Deposit).await;
    assert!(store.struck(), "no deposit was appended");
    assert_failed_naming(&report, "events written twice");
    assert_failed_naming(&report, "1 more");
    assert_failed_naming(&report, "money not conserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_counter_number_is_reported() {
    let store = BrokenStore::new(Flaw::DuplicatesAnEvent, "NumberTaken");
    let report = run(store.clone(), Workload::HotCounter).await;
    assert!(store.struck(), "the counter handed out no number");
    assert_failed_naming(&report, "events written twice");
    assert_failed_naming(&report, "numbers not gapless");
}
