//! The code of `docs/process-managers.md`, compiled and run. Each block of the guide appears
//! here verbatim (up to layout), and `the_guide_is_the_code_tested_here` fails if the guide and
//! this file drift apart.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use crossfold::prelude::*;
use serde::{Deserialize, Serialize};

// Section 1: events and commands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    Placed,
    Paid,
    Expired,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Placed => "Placed",
            OrderEvent::Paid => "Paid",
            OrderEvent::Expired => "Expired",
        }
    }
}

/// An order's last event: `Placed` while it waits for its payment.
#[derive(Clone, Debug, Default)]
pub struct LastEvent(pub Option<OrderEvent>);

impl Fold<OrderEvent> for LastEvent {
    fn apply(&mut self, event: &Recorded<OrderEvent>) {
        self.0 = Some(event.event.clone());
    }
}

/// Expires an order that is still unpaid; does nothing otherwise.
pub struct Expire {
    pub order: StreamId,
}

impl Command for Expire {
    type Event = OrderEvent;
    type State = LastEvent;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.order.clone()
    }

    fn handle<'x>(
        &self,
        last: &LastEvent,
        order: StreamRef<'x>,
        out: &mut Emit<'x, OrderEvent>,
    ) -> Result<(), CommandError> {
        if last.0 == Some(OrderEvent::Placed) {
            out.append(order, OrderEvent::Expired);
        }
        Ok(())
    }
}

// Section 2: the process manager.
use std::time::Duration;

use crossfold::core::deadline::DeadlineStore;
use crossfold::core::{Codec, EventId, EventStore, LogFilter};
use crossfold::projections::{HandlerError, Process, ProcessManager};

/// Cancels orders left unpaid for 15 minutes.
pub struct PaymentTimeouts;

impl ProcessManager for PaymentTimeouts {
    type Event = OrderEvent;
    type State = Option<EventId>; // the event that placed the order

    fn name(&self) -> &str {
        "payment-timeouts"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["order"])
    }

    fn state_streams(&self, event: &Recorded<OrderEvent>) -> Vec<StreamId> {
        vec![event.stream_id.clone()]
    }

    fn apply(placed_by: &mut Option<EventId>, event: &Recorded<OrderEvent>) {
        if event.event == OrderEvent::Placed {
            *placed_by = Some(event.event_id);
        }
    }

    async fn react<S: EventStore, C: Codec, D: DeadlineStore>(
        &self,
        placed_by: &Option<EventId>,
        event: &Recorded<OrderEvent>,
        process: &mut Process<'_, S, C, D>,
    ) -> Result<(), HandlerError> {
        match event.event {
            OrderEvent::Placed => {
                let order = event.stream_id.as_str();
                let payload = serde_json::json!({ "order": order });
                let fifteen_minutes = Duration::from_secs(15 * 60);
                process
                    .schedule("payment-timeout", fifteen_minutes, payload)
                    .await?;
            }
            OrderEvent::Paid => {
                if let Some(placed) = placed_by {
                    let id = process.deadline_id("payment-timeout", *placed)?;
                    process.cancel(&id).await?;
                }
            }
            OrderEvent::Expired => {}
        }
        Ok(())
    }
}

// Section 3: firing deadlines.
use crossfold::executor::{DeadlineHandler, Firing};
use crossfold::executor::{Error, Executed};

/// Fires payment deadlines with `Expire`.
pub struct ExpireOrders;

impl<S: EventStore, C: Codec> DeadlineHandler<S, C> for ExpireOrders {
    async fn fire(&self, firing: Firing<'_, S, C>) -> Result<Executed, Error> {
        let order = firing.deadline().payload["order"].as_str().unwrap_or("");
        let order = StreamId::new(order).map_err(|e| Error::Command(e.into()))?;
        firing.execute(Expire { order }).await
    }
}

/// Writes `event` to `order` (placing and paying, for the example).
struct Record {
    order: StreamId,
    event: OrderEvent,
}

impl Command for Record {
    type Event = OrderEvent;
    type State = ();
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.order.clone()
    }
    fn handle<'x>(
        &self,
        _: &(),
        order: StreamRef<'x>,
        out: &mut Emit<'x, OrderEvent>,
    ) -> Result<(), CommandError> {
        out.append(order, self.event.clone());
        Ok(())
    }
}

async fn order_events(store: &MemoryStore, order: &StreamId) -> Vec<String> {
    store
        .read_stream(order, StreamVersion::EMPTY, usize::MAX)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_type.as_str().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_expire_after_fifteen_minutes() {
    // Section 4: running it.
    use crossfold::core::ManualClock;
    use crossfold::executor::DeadlineWorker;
    use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore};
    use crossfold::projections::{
        ProcessManagerProjection, ProjectionOptions, ProjectionRunner, RunnerOptions,
    };

    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    let deadlines = MemoryDeadlineStore::new();
    let checkpoints = MemoryCheckpoints::new();

    let mut runner =
        ProjectionRunner::new(store.clone(), checkpoints.clone(), RunnerOptions::default());
    runner.spawn(
        ProcessManagerProjection::new(
            PaymentTimeouts,
            executor.clone(),
            deadlines.clone(),
            checkpoints,
        ),
        ProjectionOptions::default(),
    );

    let clock = ManualClock::starting_now(); // crossfold::core::SystemClock in production
    let worker = DeadlineWorker::new(
        executor.clone(),
        deadlines.clone(),
        clock.clone(),
        ExpireOrders,
    );
    // In production: tokio::spawn(async move { worker.run(shutdown_signal).await });

    let (unpaid, paid) = (
        StreamId::new("order-1").unwrap(),
        StreamId::new("order-2").unwrap(),
    );
    for order in [&unpaid, &paid] {
        let placed = Record {
            order: order.clone(),
            event: OrderEvent::Placed,
        };
        executor.execute(placed).await.unwrap();
    }
    executor
        .execute(Record {
            order: paid.clone(),
            event: OrderEvent::Paid,
        })
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while runner
        .status_of("payment-timeouts")
        .is_none_or(|s| s.position < head)
    {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the saga did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Section 5: testing with a clock you move.
    clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(worker.poll_once().await.unwrap().fired, 0);
    clock.advance(Duration::from_secs(6 * 60));
    let report = worker.poll_once().await.unwrap();
    assert_eq!(report.fired, 1); // order-2's deadline was cancelled when it was paid
    assert_eq!(report.counts.pending, 0);

    runner.shutdown().await;
    assert_eq!(order_events(&store, &unpaid).await, ["Placed", "Expired"]);
    assert_eq!(order_events(&store, &paid).await, ["Placed", "Paid"]);
}

/// Code without layout: rustfmt rewraps long lines here and adds trailing commas where it
/// does, neither of which changes what the code means.
fn without_layout(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect()
}

#[test]
fn the_guide_is_the_code_tested_here() {
    let guide = include_str!("../docs/process-managers.md");
    let here = without_layout(include_str!("process_managers_guide.rs"));
    let blocks: Vec<&str> = guide
        .split("```rust\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert_eq!(
        blocks.len(),
        5,
        "the guide's rust blocks changed: update tests/process_managers_guide.rs"
    );
    for block in blocks {
        assert!(
            here.contains(&without_layout(block)),
            "this block of docs/process-managers.md is not in tests/process_managers_guide.rs:\n{block}"
        );
    }
}
