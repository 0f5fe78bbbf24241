//! On PostgreSQL, an event the read model's database refuses (a CHECK constraint) fails its
//! projection — the events before it committed, nothing after, the error and position kept —
//! or in dead-letter mode is set aside with the database's error while the projection goes on.
//! The batch that held it is rolled back and applied again event by event: a row written twice
//! would break the read model's primary key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/pg_ledger.rs"]
mod ledger;

use std::time::{Duration, Instant};

use crossfold::core::checkpoint::{ProjectionControl, ProjectionState};
use crossfold::core::{AppendRequest, EventStore, ExpectedVersion, LogFilter, Recorded, StreamId};
use crossfold::postgres::{PgCheckpoints, PgUnit};
use crossfold::projections::{
    ApplyContext, HandlerError, OnError, Projection, ProjectionOptions, ProjectionRunner,
};
use ledger::*;

/// One row per event, keyed by its position; amounts must be positive.
struct Strict {
    name: &'static str,
    table: String,
}

impl Projection for Strict {
    type Event = Deposited;
    type Unit = PgUnit;

    fn name(&self) -> &str {
        self.name
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["account"])
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
                .map_err(|error| match error.code().map(|c| c.code()) {
                    // check_violation, unique_violation: this event cannot be applied.
                    Some("23514" | "23505") => HandlerError::rejected(error),
                    _ => HandlerError::transient(error),
                })?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_fails_the_projection_or_goes_to_the_dead_letters() {
    let (store, schema) = fresh("poison").await;
    let _drop = SchemaGuard(schema.clone());
    let account = StreamId::new("account-1").unwrap();
    let amounts = [5, 6, -7, 8, 9];
    store
        .append(AppendRequest::new().stream(
            account,
            ExpectedVersion::NoStream,
            amounts.iter().map(|a| deposit(*a)).collect(),
        ))
        .await
        .unwrap();
    let client = store.pool().get().await.unwrap();
    for name in ["strict", "lenient"] {
        client
            .batch_execute(&format!(
                "CREATE TABLE \"{schema}\".{name} (position text PRIMARY KEY, \
                 amount bigint NOT NULL CHECK (amount > 0))"
            ))
            .await
            .unwrap();
    }
    drop(client);
    let checkpoints = PgCheckpoints::new(&store);
    let mut runner = ProjectionRunner::new(
        store.clone(),
        checkpoints.clone(),
        runner_options("here", Duration::from_secs(5)),
    );
    runner.spawn(
        Strict {
            name: "strict",
            table: format!("\"{schema}\".strict"),
        },
        ProjectionOptions::default(),
    );
    runner.spawn(
        Strict {
            name: "lenient",
            table: format!("\"{schema}\".lenient"),
        },
        ProjectionOptions::default().on_error(OnError::DeadLetter),
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let strict = checkpoints.get("strict").await.unwrap();
        let letters = checkpoints.dead_letters("lenient").await.unwrap();
        let lenient_rows = amounts_in(&store, &format!("\"{schema}\".lenient")).await;
        if strict.is_some_and(|r| r.status.state == ProjectionState::Failed)
            && !letters.is_empty()
            && lenient_rows.len() == 4
        {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", runner.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Failed: the two events before it applied once, nothing after; error and position kept.
    assert_eq!(
        amounts_in(&store, &format!("\"{schema}\".strict")).await,
        [5, 6]
    );
    let strict = checkpoints.get("strict").await.unwrap().unwrap();
    let error = strict.status.last_error.clone().unwrap();
    assert!(error.contains("check constraint"), "{error}");
    let at = strict.status.error_position.unwrap();
    assert!(strict.position < at);
    let log = store
        .read_all(crossfold::core::Position::START, 10, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(at, log[2].position);

    // Dead letter: the others applied once each, the refused one set aside with its error.
    assert_eq!(
        amounts_in(&store, &format!("\"{schema}\".lenient")).await,
        [5, 6, 8, 9]
    );
    let letters = checkpoints.dead_letters("lenient").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, log[2].position);
    assert_eq!(letters[0].event_id, log[2].event_id);
    assert!(
        letters[0].error.contains("check constraint"),
        "{}",
        letters[0].error
    );
    runner.shutdown().await;
    drop_schema(&store, &schema).await;
}
