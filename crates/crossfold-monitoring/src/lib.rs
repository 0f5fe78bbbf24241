//! # crossfold-monitoring
//!
//! Operating Crossfold: a Prometheus exporter for the metrics every crate records, health
//! checks across components, and the load harness that runs the standard workloads (W1–W8)
//! against any store and verifies the data afterwards.
//!
//! ```
//! use crossfold_monitoring::load::{LoadOptions, Workload};
//! use std::time::Duration;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut options = LoadOptions::new(Workload::Transfer);
//! options.duration = Duration::from_millis(300);
//! options.warmup = Duration::ZERO;
//! options.accounts = 100;
//! let report = crossfold_monitoring::load::run(crossfold_memory::MemoryStore::new(), &options)
//!     .await
//!     .unwrap();
//! assert!(report.verification.passed, "{:?}", report.verification.problems);
//! assert!(report.operations > 0);
//! # });
//! ```

mod health;
pub mod load;
mod prometheus;

pub use health::{HealthRegistry, SystemHealth};
pub use prometheus::{ATTEMPT_BUCKETS, LATENCY_BUCKETS, install_prometheus};
