//! On PostgreSQL, a projection reads events stored in old shapes through its upcasters, as
//! JSON and as MessagePack: a typed step turns an old deposit (`{"value": n}`, version 1) into
//! today's, and a retired type's events are skipped, the checkpoint moving past them (also
//! when every event of a batch is retired).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/pg_ledger.rs"]
mod ledger;

use std::time::{Duration, Instant};

use crossfold::core::checkpoint::ProjectionControl;
use crossfold::core::{
    AppendRequest, Codec, EventData, EventStore, ExpectedVersion, LogFilter, MessagePack, Payload,
    Recorded, StreamId, Upcasters,
};
use crossfold::postgres::{PgCheckpoints, PgEventStore, PgUnit};
use crossfold::projections::{
    ApplyContext, HandlerError, Projection, ProjectionOptions, ProjectionRunner,
};
use ledger::*;
use serde::{Deserialize, Serialize};

/// One row per deposit applied.
struct Deposits {
    table: String,
}

#[derive(Deserialize)]
struct DepositedV1 {
    value: i64,
}

#[derive(Serialize)]
struct DepositedV2 {
    amount: i64,
}

impl Projection for Deposits {
    type Event = Deposited;
    type Unit = PgUnit;

    fn name(&self) -> &str {
        "deposits"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["account"])
    }

    fn upcasters(&self) -> Upcasters {
        let mut upcasters = Upcasters::new();
        upcasters
            .register_typed("Deposited", 1, |old: DepositedV1| DepositedV2 {
                amount: old.value,
            })
            .retire("Frozen");
        upcasters
    }

    async fn apply(
        &self,
        unit: &mut PgUnit,
        _context: &ApplyContext,
        events: &[Recorded<Deposited>],
    ) -> Result<(), HandlerError> {
        let client = unit.client()?;
        for e in events {
            client
                .execute(
                    &format!(
                        "INSERT INTO {} (position, amount) VALUES ($1, $2)",
                        self.table
                    ),
                    &[&e.position.to_string(), &e.event.amount],
                )
                .await
                .map_err(HandlerError::transient)?;
        }
        Ok(())
    }
}

fn versioned(mut event: EventData, version: u16) -> EventData {
    event.schema_version = version;
    event
}

fn old_json(value: i64) -> EventData {
    versioned(
        EventData::new(
            "Deposited",
            Payload::json(format!(r#"{{"value":{value}}}"#)),
        ),
        1,
    )
}

fn old_packed(value: i64) -> EventData {
    let payload = MessagePack
        .encode(&serde_json::json!({ "value": value }))
        .unwrap();
    versioned(EventData::new("Deposited", payload), 1)
}

fn frozen() -> EventData {
    EventData::new("Frozen", Payload::json(r#"{"reason":"audit"}"#))
}

async fn append(store: &PgEventStore, events: Vec<EventData>) -> crossfold::core::Position {
    let appended = store
        .append(AppendRequest::new().stream(
            StreamId::new("account-1").unwrap(),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .unwrap();
    let last = appended.events.last().unwrap().position;
    store
        .wait_for_position(last, Duration::from_secs(10))
        .await
        .unwrap();
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_shapes_are_upcast_and_retired_events_skipped() {
    let (store, schema) = fresh("oldshapes").await;
    let _drop = SchemaGuard(schema.clone());
    let table = format!("\"{schema}\".deposits");
    store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE {table} (position text PRIMARY KEY, amount bigint NOT NULL)"
        ))
        .await
        .unwrap();
    append(
        &store,
        vec![
            old_json(5),
            frozen(),
            old_packed(7),
            versioned(deposit(11), 2),
        ],
    )
    .await;
    let checkpoints = PgCheckpoints::new(&store);
    let mut runner = ProjectionRunner::new(
        store.clone(),
        checkpoints.clone(),
        runner_options("here", Duration::from_secs(5)),
    );
    runner.spawn(
        Deposits {
            table: table.clone(),
        },
        ProjectionOptions::default(),
    );
    let wait_for = async |position| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let record = checkpoints.get("deposits").await.unwrap();
            if record.is_some_and(|r| r.position >= position) {
                return;
            }
            assert!(Instant::now() < deadline, "{:?}", runner.status());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let first = store.head_position().await.unwrap();
    wait_for(first).await;
    assert_eq!(amounts_in(&store, &table).await, [5, 7, 11]);

    // A batch of nothing but retired events: the checkpoint moves past it.
    let last = append(&store, vec![frozen(), frozen()]).await;
    wait_for(last).await;
    assert_eq!(amounts_in(&store, &table).await, [5, 7, 11]);
    runner.shutdown().await;
    drop_schema(&store, &schema).await;
}
