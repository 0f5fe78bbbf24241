//! One task running `w1`'s deposit command in a loop against the in-memory store: a
//! deterministic workload for instruction counts and memory per event, which the multi-task
//! load harness cannot give on a noisy machine.
//!
//! ```sh
//! cargo build --release --example deposit_loop --features monitoring
//! # instructions per command: the difference of two runs cancels the setup
//! valgrind --tool=callgrind target/release/examples/deposit_loop 50000
//! valgrind --tool=callgrind target/release/examples/deposit_loop 100000
//! # the same with a Prometheus recorder installed
//! valgrind --tool=callgrind target/release/examples/deposit_loop 100000 --prometheus
//! ```
//!
//! With `--transfer` it runs `w2`'s three-stream transfer instead. It also prints the rate and
//! the growth of resident memory per event (where `/proc` tells it).

use std::time::Instant;

use crossfold::core::{EventId, StreamId};
use crossfold::executor::Executor;
use crossfold::memory::MemoryStore;
use crossfold::monitoring::install_prometheus;
use crossfold_bench::bank::{Deposit, Open, Transfer, account_stream};
use crossfold_bench::memory;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut commands = 1_000_000usize;
    let mut prometheus = false;
    let mut transfer = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--prometheus" => prometheus = true,
            "--transfer" => transfer = true,
            n => commands = n.parse()?,
        }
    }
    let _recorder = if prometheus {
        Some(install_prometheus()?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let executor = Executor::new(MemoryStore::new());
        let accounts = (0..10_000)
            .map(account_stream)
            .collect::<Result<Vec<_>, _>>()?;
        for account in &accounts {
            executor
                .execute(Open {
                    account: account.clone(),
                    initial: 1_000_000,
                })
                .await?;
        }
        let before = memory::resident();
        let started = Instant::now();
        for i in 0..commands {
            // A fixed stride instead of a random pick: the same run every time.
            let account = accounts[(i * 7919) % accounts.len()].clone();
            if transfer {
                let to = accounts[(i * 7919 + 1) % accounts.len()].clone();
                let id = StreamId::new(format!("transfer-{}", EventId::generate()))?;
                executor
                    .execute(Transfer {
                        from: account,
                        to,
                        transfer: id,
                        amount: 1,
                    })
                    .await?;
            } else {
                executor.execute(Deposit { account, amount: 5 }).await?;
            }
        }
        let events = if transfer { 3 * commands } else { commands };
        let elapsed = started.elapsed();
        println!(
            "{commands} commands in {elapsed:.2?}: {:.0}/s",
            commands as f64 / elapsed.as_secs_f64()
        );
        if let (Some(before), Some(after)) = (before, memory::resident()) {
            println!(
                "resident memory grew {:.0} bytes per event",
                after.saturating_sub(before) as f64 / events.max(1) as f64
            );
        }
        Ok(())
    })
}
