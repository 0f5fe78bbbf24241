//! A deadline worker records what it finds and does: the pending and overdue gauges after each
//! poll, and fired deadlines by outcome. A local Prometheus recorder stands in for the
//! application's, and a current-thread runtime keeps every call under it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crossfold_core::deadline::{Deadline, DeadlineId, DeadlineStore};
use crossfold_core::{Codec, EventStore};
use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, ManualClock, StreamId, StreamRef, Timestamp,
};
use crossfold_executor::{DeadlineHandler, DeadlineWorker, Error, Executed, Executor, Firing};
use crossfold_memory::{MemoryDeadlineStore, MemoryStore};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Rang;
impl DomainEvent for Rang {
    fn event_type(&self) -> &'static str {
        "Rang"
    }
}

/// Rings a bell, unless the bell is called "broken".
struct Ring(StreamId);
impl Command for Ring {
    type Event = Rang;
    type State = ();
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.0.clone()
    }
    fn handle<'x>(
        &self,
        _: &(),
        bell: StreamRef<'x>,
        out: &mut Emit<'x, Rang>,
    ) -> Result<(), CommandError> {
        if self.0.as_str() == "bell-broken" {
            return Err(CommandError::rejected("broken", "the bell is broken"));
        }
        out.append(bell, Rang);
        Ok(())
    }
}

struct Ringer;
impl<S: EventStore, C: Codec> DeadlineHandler<S, C> for Ringer {
    async fn fire(&self, firing: Firing<'_, S, C>) -> Result<Executed, Error> {
        let bell = StreamId::new(firing.deadline().kind.as_str()).unwrap();
        firing.execute(Ring(bell)).await
    }
}

#[test]
fn deadline_workers_report_pending_overdue_and_fired() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let deadlines = MemoryDeadlineStore::new();
            let clock = ManualClock::new(Timestamp::from_unix_micros(0));
            for (id, bell, secs) in [
                ("a", "bell-1", 10),
                ("b", "bell-broken", 10),
                ("c", "bell-2", 100),
            ] {
                let due = Timestamp::from_unix_micros(secs * 1_000_000);
                let deadline = Deadline::new(DeadlineId::new(id).unwrap(), bell, due);
                deadlines.schedule(deadline).await.unwrap();
            }
            let worker = DeadlineWorker::new(
                Executor::new(MemoryStore::new()),
                deadlines,
                clock.clone(),
                Ringer,
            );
            clock.advance(Duration::from_secs(20));
            let report = worker.poll_once().await.unwrap();
            assert_eq!((report.fired, report.refused), (1, 1));
        });
    });
    let text = handle.render();
    for line in [
        "crossfold_deadlines_pending 1",
        "crossfold_deadlines_overdue 0",
        "crossfold_deadlines_fired_total{outcome=\"fired\"} 1",
        "crossfold_deadlines_fired_total{outcome=\"refused\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
