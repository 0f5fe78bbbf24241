//! Every workload, run briefly on a correct store, passes verification: the checks that catch
//! broken stores do not also fail correct ones.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests report failures by panicking"
)]

use std::time::Duration;

use crossfold_bench::{LoadOptions, LoadReport, Workload};
use crossfold_memory::MemoryStore;

/// The same short run the broken-store tests make.
async fn run(store: MemoryStore, workload: Workload) -> LoadReport {
    let mut options = LoadOptions::new(workload);
    options.duration = Duration::from_millis(300);
    options.warmup = Duration::ZERO;
    options.accounts = 100;
    options.concurrency = 4;
    match crossfold_bench::run(store, &options).await {
        Ok(report) => report,
        Err(e) => panic!("{workload}: the run produced no report: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_passes_on_the_memory_store() {
    for workload in Workload::ALL {
        let report = run(MemoryStore::new(), workload).await;
        assert!(
            report.is_valid(),
            "{workload}: {:?} (first error {:?})",
            report.verification.problems,
            report.first_error
        );
        assert!(report.verification.events > 0, "{workload} wrote nothing");
        assert!(report.operations > 0, "{workload} did nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_counter_numbers_one_invoice_per_command() {
    let report = run(MemoryStore::new(), Workload::HotCounter).await;
    assert!(report.is_valid(), "{:?}", report.verification.problems);
    // One counter stream, then one invoice stream and two events per number handed out.
    let invoices = report.verification.streams - 1;
    assert!(invoices > 0);
    assert_eq!(report.verification.events, 2 * invoices);
    assert_eq!(report.rejected + report.failed + report.errors, 0);
}
