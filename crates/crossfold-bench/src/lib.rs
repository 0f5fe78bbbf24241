//! # crossfold-bench
//!
//! Crossfold's load harness. It runs the standard workloads (W1–W8 and W12, see
//! `docs/benchmarks.md`) against any [`EventStore`](crossfold_core::EventStore), measures
//! throughput and latency, and verifies the data afterwards — a fast wrong result is reported
//! as a failure, not a number. The `crossfold-bench` command built from this crate runs them on
//! the in-memory store or on PostgreSQL.
//!
//! The harness is kept apart from `crossfold-monitoring`, so that an application exporting
//! Crossfold's metrics pulls in no workload.
//!
//! ```
//! use crossfold_bench::{LoadOptions, Workload};
//! use std::time::Duration;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut options = LoadOptions::new(Workload::Transfer);
//! options.duration = Duration::from_millis(300);
//! options.warmup = Duration::ZERO;
//! options.accounts = 100;
//! let report = crossfold_bench::run(crossfold_memory::MemoryStore::new(), &options)
//!     .await
//!     .unwrap();
//! assert!(report.verification.passed, "{:?}", report.verification.problems);
//! assert!(report.operations > 0);
//! # });
//! ```

pub mod bank;
pub mod big_log;
pub mod campaign;
pub mod counter;
pub mod memory;
pub mod pairs;
mod report;
mod runner;
mod verify;
mod workload;

pub use report::{Admission, Latency, LoadReport, Verification, render_table};
pub use runner::{SetUp, Share, ShareReport, combine, run, run_share, set_up};
pub use workload::{ConcurrencyLimit, LoadError, LoadOptions, Workload};
