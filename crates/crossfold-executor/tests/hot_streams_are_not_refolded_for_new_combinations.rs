//! A command in the default shape (no `PER_STREAM`) that reads a hot stream together with a
//! fresh one — a gapless counter and `invoice-<n>` — is a new combination of streams every
//! time. It must start from the hot stream's cached state instead of refolding its history:
//! the work per command stays flat as the counter grows, and its decisions stay right when
//! another writer moves the counter or a "fresh" stream turns out to hold events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossfold_core::{
    AppendRequest, Appended, Command, CommandError, DomainEvent, Emit, EventData, EventStore,
    ExpectedVersion, Fold, LogFilter, Payload, Position, Recorded, RecordedEvent, StoreError,
    StreamEvents, StreamId, StreamRead, StreamRef, StreamVersion,
};
use crossfold_executor::Executor;
use crossfold_memory::MemoryStore;
use serde::{Deserialize, Serialize};

fn sid(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Numbering {
    Issued { number: u64 },
    Invoiced { number: u64 },
}

impl DomainEvent for Numbering {
    fn event_type(&self) -> &'static str {
        match self {
            Numbering::Issued { .. } => "Issued",
            Numbering::Invoiced { .. } => "Invoiced",
        }
    }
}

/// Events folded by `Issue` in this test process, to count the work done.
static FOLDED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug, Default)]
struct Numbers {
    last_issued: u64,
    invoiced: Option<u64>,
}

impl Fold<Numbering> for Numbers {
    fn apply(&mut self, event: &Recorded<Numbering>) {
        FOLDED.fetch_add(1, Ordering::Relaxed);
        match event.event {
            Numbering::Issued { number } => self.last_issued = number,
            Numbering::Invoiced { number } => self.invoiced = Some(number),
        }
    }
}

/// Issues the next number of a counter to a new invoice, refusing an invoice that has one.
struct Issue {
    counter: StreamId,
    invoice: StreamId,
}

impl Command for Issue {
    type Event = Numbering;
    type State = Numbers;
    type Streams = [StreamId; 2];

    fn streams(&self) -> [StreamId; 2] {
        [self.counter.clone(), self.invoice.clone()]
    }

    fn handle<'x>(
        &self,
        state: &Numbers,
        [counter, invoice]: [StreamRef<'x>; 2],
        out: &mut Emit<'x, Numbering>,
    ) -> Result<(), CommandError> {
        if let Some(number) = state.invoiced {
            return Err(CommandError::rejected(
                "already_numbered",
                format!("invoice has number {number}"),
            ));
        }
        let number = state.last_issued + 1;
        out.append(counter, Numbering::Issued { number });
        out.append(invoice, Numbering::Invoiced { number });
        Ok(())
    }
}

fn issued(event: &Recorded<Numbering>) -> Option<u64> {
    match event.event {
        Numbering::Issued { number } => Some(number),
        Numbering::Invoiced { .. } => None,
    }
}

#[tokio::test]
async fn the_work_per_command_does_not_grow_with_the_counters_history() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    let counter = sid("counter-flat");
    const COMMANDS: u64 = 400;
    let before = FOLDED.load(Ordering::Relaxed);
    for i in 1..=COMMANDS {
        let done = executor
            .execute(Issue {
                counter: counter.clone(),
                invoice: sid(&format!("invoice-flat-{i}")),
            })
            .await
            .unwrap();
        let decoded = done.decode::<Numbering>().unwrap();
        assert_eq!(
            decoded.iter().find_map(issued),
            Some(i),
            "gapless numbering"
        );
    }
    let folded = FOLDED.load(Ordering::Relaxed) - before;
    // Each command folds the two events it writes into the combination's state and the
    // counter's one into the counter's own state: 3 per command. Refolding the counter's
    // history would be 400 * 401 / 2 = 80,200 (other tests in this file fold a few hundred).
    assert!(
        folded <= 3 * COMMANDS + 2_000,
        "{folded} events folded for {COMMANDS} commands"
    );
    assert_eq!(
        store.stream_version(&counter).await.unwrap(),
        StreamVersion::new(COMMANDS)
    );
}

#[tokio::test]
async fn a_counter_moved_by_another_writer_is_caught_up_not_skipped() {
    let store = MemoryStore::new();
    let (mine, theirs) = (Executor::new(store.clone()), Executor::new(store.clone()));
    let counter = sid("counter-shared");
    let mut numbers = Vec::new();
    for i in 0..60 {
        // Two executors with caches of their own, like two processes.
        let executor = if i % 3 == 0 { &theirs } else { &mine };
        let done = executor
            .execute(Issue {
                counter: counter.clone(),
                invoice: sid(&format!("invoice-shared-{i}")),
            })
            .await
            .unwrap();
        numbers.extend(
            done.decode::<Numbering>()
                .unwrap()
                .iter()
                .filter_map(issued),
        );
    }
    assert_eq!(numbers, (1..=60).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_fresh_stream_that_holds_events_is_folded_in() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    let counter = sid("counter-fresh");
    for i in 0..3 {
        executor
            .execute(Issue {
                counter: counter.clone(),
                invoice: sid(&format!("invoice-fresh-{i}")),
            })
            .await
            .unwrap();
    }
    // Someone else numbered this invoice already, without going through the counter: the
    // cached counter state must not hide that.
    let taken = sid("invoice-fresh-taken");
    store
        .append(AppendRequest::new().stream(
            taken.clone(),
            ExpectedVersion::NoStream,
            vec![EventData::new(
                "Invoiced",
                Payload::json(r#"{"type":"Invoiced","number":99}"#),
            )],
        ))
        .await
        .unwrap();
    let refused = executor
        .execute(Issue {
            counter: counter.clone(),
            invoice: taken,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.rule(), Some("already_numbered"));
    let next = executor
        .execute(Issue {
            counter: counter.clone(),
            invoice: sid("invoice-fresh-next"),
        })
        .await
        .unwrap();
    assert_eq!(
        next.decode::<Numbering>().unwrap().iter().find_map(issued),
        Some(4)
    );
}

/// A memory store that counts the events its stream reads return.
#[derive(Clone, Default)]
struct CountingStore {
    inner: MemoryStore,
    events_read: Arc<AtomicU64>,
}

impl EventStore for CountingStore {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        let read = self.inner.read_streams(reads).await?;
        let count: usize = read.iter().map(|s| s.events.len()).sum();
        self.events_read.fetch_add(count as u64, Ordering::Relaxed);
        Ok(read)
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.inner.append(request).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit, filter).await
    }
    async fn head_position(&self) -> Result<Position, StoreError> {
        self.inner.head_position().await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }
}

#[tokio::test]
async fn a_hot_stream_the_event_cache_does_not_hold_is_not_read_whole_either() {
    let store = CountingStore::default();
    // No event cache at all: the counter's events are never at hand, only its folded state.
    let executor = Executor::builder(store.clone())
        .event_cache_bytes(0)
        .build();
    let counter = sid("counter-uncached");
    let mut read_by_the_last_hundred = 0;
    for i in 1..=500u64 {
        if i == 401 {
            read_by_the_last_hundred = store.events_read.load(Ordering::Relaxed);
        }
        executor
            .execute(Issue {
                counter: counter.clone(),
                invoice: sid(&format!("invoice-uncached-{i}")),
            })
            .await
            .unwrap();
    }
    let read = store.events_read.load(Ordering::Relaxed) - read_by_the_last_hundred;
    // A bounded look at the counter per command (its first events), not its 400-odd events:
    // reading it whole would be about 45,000 events for these hundred commands.
    assert!(
        read <= 100 * 70,
        "{read} events read by the last 100 commands"
    );
    assert_eq!(
        store.inner.stream_version(&counter).await.unwrap(),
        StreamVersion::new(500)
    );
}
