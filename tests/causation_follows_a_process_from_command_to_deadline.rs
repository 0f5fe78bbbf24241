//! Causation and correlation across a whole process, read back from the log: a command run
//! with a correlation id and a typed custom metadata field writes an order; a process manager
//! reacts with a command of its own and schedules a deadline; a deadline worker fires it into
//! a third command. Every event carries the request's correlation id; the process manager's
//! event and the deadline's event name the order's event as their cause; the typed field reads
//! back as the struct it was written from.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crossfold::core::deadline::DeadlineStore;
use crossfold::core::{
    Codec, EventStore, Json, LogFilter, ManualClock, Position, Recorded, Upcasters,
};
use crossfold::executor::{
    DeadlineHandler, DeadlineWorker, Error, Executed, ExecutionContext, Executor, Firing,
};
use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore, MemoryStore};
use crossfold::prelude::*;
use crossfold::projections::{
    ApplyContext, HandlerError, Process, ProcessManager, ProcessManagerProjection, Projection,
    command_failure,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Shop {
    Placed { order: String },
    Confirmed { order: String },
    Reminded { order: String },
}

impl DomainEvent for Shop {
    fn event_type(&self) -> &'static str {
        match self {
            Shop::Placed { .. } => "Placed",
            Shop::Confirmed { .. } => "Confirmed",
            Shop::Reminded { .. } => "Reminded",
        }
    }
}

/// Where a request came from: custom metadata of the application's own.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Origin {
    channel: String,
    session: u64,
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

/// Writes `event` to `stream`.
struct Write {
    stream: StreamId,
    event: Shop,
}

impl Command for Write {
    type Event = Shop;
    type State = ();
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.stream.clone()
    }
    fn handle<'x>(
        &self,
        _: &(),
        stream: StreamRef<'x>,
        out: &mut Emit<'x, Shop>,
    ) -> Result<(), CommandError> {
        out.append(stream, self.event.clone());
        Ok(())
    }
}

fn confirm(order: &str) -> Write {
    Write {
        stream: sid(&format!("confirmation-{order}")),
        event: Shop::Confirmed {
            order: order.to_owned(),
        },
    }
}

/// Confirms each order placed and schedules a reminder.
#[derive(Clone)]
struct Confirmer;

impl ProcessManager for Confirmer {
    type Event = Shop;
    type State = ();

    fn name(&self) -> &str {
        "confirmer"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["order"])
    }

    fn state_streams(&self, _: &Recorded<Shop>) -> Vec<StreamId> {
        Vec::new()
    }

    fn apply(_: &mut (), _: &Recorded<Shop>) {}

    async fn react<S: EventStore, C: Codec, D: DeadlineStore>(
        &self,
        _: &(),
        event: &Recorded<Shop>,
        process: &mut Process<'_, S, C, D>,
    ) -> Result<(), HandlerError> {
        let Shop::Placed { order } = &event.event else {
            return Ok(());
        };
        process
            .execute(confirm(order))
            .await
            .map_err(command_failure)?;
        process
            .schedule(
                "reminder",
                Duration::from_secs(3600),
                serde_json::json!({ "order": order }),
            )
            .await?;
        Ok(())
    }
}

/// Fires a reminder into a command.
struct Remind;

impl<S: EventStore, C: Codec> DeadlineHandler<S, C> for Remind {
    async fn fire(&self, firing: Firing<'_, S, C>) -> Result<Executed, Error> {
        let order = firing.deadline().payload["order"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        firing
            .execute(Write {
                stream: sid(&format!("reminder-{order}")),
                event: Shop::Reminded { order },
            })
            .await
    }
}

#[tokio::test]
async fn every_event_of_the_process_names_its_cause_and_the_request() {
    let store = MemoryStore::new();
    let deadlines = MemoryDeadlineStore::new();
    let checkpoints = MemoryCheckpoints::new();
    let executor = Executor::new(store.clone());

    // The request: a correlation id and where it came from.
    let request = uuid::Uuid::now_v7();
    let origin = Origin {
        channel: "web".into(),
        session: 42,
    };
    let context = ExecutionContext::new()
        .correlation_id(request)
        .with_typed("origin", &origin)
        .unwrap();
    executor
        .execute_with(
            Write {
                stream: sid("order-17"),
                event: Shop::Placed { order: "17".into() },
            },
            &context,
        )
        .await
        .unwrap();

    // The process manager reacts to what the log holds.
    let placed = store
        .read_all(Position::START, 100, &LogFilter::categories(["order"]))
        .await
        .unwrap();
    let upcasters = Upcasters::new();
    let decoded: Vec<Recorded<Shop>> = placed
        .iter()
        .map(|e| upcasters.decode(&Json, e).unwrap())
        .collect();
    let process = ProcessManagerProjection::<_, _, _, _, _, ()>::new(
        Confirmer,
        executor.clone(),
        deadlines.clone(),
        checkpoints.clone(),
    );
    process
        .apply(&mut (), &ApplyContext::new("confirmer", 1, 1), &decoded)
        .await
        .unwrap();

    // An hour later the reminder fires.
    let clock = ManualClock::starting_now();
    clock.advance(Duration::from_secs(2 * 3600));
    let worker = DeadlineWorker::new(executor.clone(), deadlines.clone(), clock, Remind);
    let report = worker.poll_once().await.unwrap();
    assert_eq!(report.fired, 1, "{report:?}");

    // Read back from the log, in order: the order, its confirmation, the reminder.
    let log = store
        .read_all(Position::START, 100, &LogFilter::all())
        .await
        .unwrap();
    let types: Vec<&str> = log.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Placed", "Confirmed", "Reminded"]);
    let (order, confirmation, reminder) = (&log[0], &log[1], &log[2]);
    for event in &log {
        assert_eq!(
            event.metadata.correlation_id,
            Some(request),
            "{} carries the request's correlation id",
            event.event_type
        );
    }
    assert_eq!(
        order.metadata.causation_id, None,
        "the request had no cause"
    );
    assert_eq!(
        confirmation.metadata.causation_id,
        Some(order.event_id.as_uuid()),
        "the process manager's command was caused by the order"
    );
    assert_eq!(
        reminder.metadata.causation_id,
        Some(order.event_id.as_uuid()),
        "the deadline's command was caused by what scheduled it"
    );
    assert_eq!(
        order.metadata.custom_as::<Origin>("origin").unwrap(),
        Some(origin),
        "the typed field reads back as written"
    );
    assert!(
        order.metadata.custom_as::<u64>("origin").is_err(),
        "a field of another shape is an error, not a default"
    );
}
