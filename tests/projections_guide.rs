//! The code of `docs/projections.md`, compiled and run. Each block of the guide appears here
//! verbatim (up to layout), and `the_projections_guide_is_the_code_tested_here` fails if the
//! guide and this file drift apart.

#![allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use crossfold::core::LogFilter;
use crossfold::core::checkpoint::{
    CheckpointError, ControlRequest, DesiredState, ProjectionControl,
};
use crossfold::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StockEvent {
    Received { quantity: u32 },
    Reserved { order: String, quantity: u32 },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            StockEvent::Received { .. } => "Received",
            StockEvent::Reserved { .. } => "Reserved",
        }
    }
}

// Section 1: a projection.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crossfold::memory::{MemoryCheckpoints, MemoryUnit};
use crossfold::projections::{
    ApplyContext, HandlerError, Projection, ProjectionOptions, ProjectionRunner, RunnerOptions,
};

/// Units in stock per product.
#[derive(Clone, Default)]
pub struct Stock(Arc<Mutex<BTreeMap<String, u32>>>);

impl Projection for Stock {
    type Event = StockEvent;
    type Unit = MemoryUnit;

    fn name(&self) -> &str {
        "stock"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["product"])
    }

    async fn apply(
        &self,
        unit: &mut MemoryUnit,
        _context: &ApplyContext,
        events: &[Recorded<StockEvent>],
    ) -> Result<(), HandlerError> {
        let changes: Vec<(String, i64)> = events
            .iter()
            .map(|e| {
                let change = match &e.event {
                    StockEvent::Received { quantity } => i64::from(*quantity),
                    StockEvent::Reserved { quantity, .. } => -i64::from(*quantity),
                };
                (e.stream_id.to_string(), change)
            })
            .collect();
        let stock = self.0.clone();
        // Applied when the checkpoint commits, never if the batch fails half-way.
        unit.on_commit(move || {
            let mut stock = stock.lock().unwrap();
            for (product, change) in changes {
                let units = stock.entry(product).or_default();
                *units = u32::try_from(i64::from(*units) + change).unwrap_or(0);
            }
        });
        Ok(())
    }
}

// Section 2: running projections.
async fn run_stock(store: MemoryStore) -> Stock {
    let stock = Stock::default();
    let mut runner =
        ProjectionRunner::new(store, MemoryCheckpoints::new(), RunnerOptions::default());
    runner.spawn(stock.clone(), ProjectionOptions::default().batch_size(256));
    serve_until_stopped(&runner, &stock).await;
    runner.shutdown().await; // finishes the current batch and hands the lease over
    stock
}

/// Here: until the projection has applied the three events the test wrote.
async fn serve_until_stopped(
    runner: &ProjectionRunner<MemoryStore, MemoryCheckpoints>,
    stock: &Stock,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stock.0.lock().unwrap().get("product-1") != Some(&3) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            runner.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

// Section 3: exactly once with PostgreSQL.
#[cfg(feature = "postgres")]
mod balances {
    use crossfold::core::{DomainEvent, LogFilter, Recorded};
    use crossfold::postgres::PgUnit;
    use crossfold::projections::{ApplyContext, HandlerError, Projection};

    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Deposited {
        pub amount: i64,
    }

    impl DomainEvent for Deposited {
        fn event_type(&self) -> &'static str {
            "Deposited"
        }
    }

    pub struct Balances;

    impl Projection for Balances {
        type Event = Deposited;
        type Unit = PgUnit;

        fn name(&self) -> &str {
            "balances"
        }

        fn filter(&self) -> LogFilter {
            LogFilter::event_types(["Deposited"])
        }

        async fn apply(
            &self,
            unit: &mut PgUnit,
            context: &ApplyContext,
            events: &[Recorded<Deposited>],
        ) -> Result<(), HandlerError> {
            let client = unit.client()?;
            // One table per generation: a rebuild fills the next one while readers read this.
            let upsert = client
                .prepare_cached(&format!(
                    "INSERT INTO balances_{} (account, balance) VALUES ($1, $2) \
                     ON CONFLICT (account) DO UPDATE SET balance = balances_{}.balance + $2",
                    context.generation, context.generation
                ))
                .await
                .map_err(HandlerError::transient)?;
            for e in events {
                client
                    .execute(&upsert, &[&e.stream_id.as_str(), &e.event.amount])
                    .await
                    .map_err(HandlerError::transient)?;
            }
            Ok(())
        }
    }
}

// Section 4: control from another process.
async fn pause_then_resume(checkpoints: &MemoryCheckpoints) -> Result<(), CheckpointError> {
    checkpoints.request("stock", ControlRequest::Pause).await?;
    let record = checkpoints
        .get("stock")
        .await?
        .expect("the projection is known");
    assert_eq!(record.desired, DesiredState::Paused);
    checkpoints.request("stock", ControlRequest::Resume).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_runs() {
    let store = MemoryStore::new();
    let product = StreamId::new("product-1").unwrap();
    let received = crossfold::core::EventData::new(
        "Received",
        crossfold::core::Payload::json(r#"{"type":"Received","quantity":5}"#),
    );
    let reserved = crossfold::core::EventData::new(
        "Reserved",
        crossfold::core::Payload::json(r#"{"type":"Reserved","order":"o-1","quantity":2}"#),
    );
    store
        .append(crossfold::core::AppendRequest::new().stream(
            product,
            ExpectedVersion::NoStream,
            vec![received, reserved],
        ))
        .await
        .unwrap();
    let stock = run_stock(store).await;
    assert_eq!(stock.0.lock().unwrap()["product-1"], 3);

    let checkpoints = MemoryCheckpoints::new();
    pause_then_resume(&checkpoints).await.unwrap();
    assert_eq!(
        checkpoints.get("stock").await.unwrap().unwrap().desired,
        DesiredState::Running
    );
}

/// Code without layout: rustfmt rewraps long lines and adds trailing commas.
fn without_layout(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect()
}

#[test]
fn the_projections_guide_is_the_code_tested_here() {
    let guide = include_str!("../docs/projections.md");
    let here = without_layout(include_str!("projections_guide.rs"));
    let blocks: Vec<&str> = guide
        .split("```rust\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert_eq!(
        blocks.len(),
        4,
        "the guide's rust blocks changed: update tests/projections_guide.rs"
    );
    for block in blocks {
        assert!(
            here.contains(&without_layout(block)),
            "this block of docs/projections.md is not in tests/projections_guide.rs:\n{block}"
        );
    }
}
