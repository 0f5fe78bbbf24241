//! Deadline behaviours every [`DeadlineStore`] must keep, as public async functions that
//! panic when a store misbehaves, run by the memory and PostgreSQL stores' tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is reported by panicking"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossfold_core::deadline::{
    ClaimedDeadline, Deadline, DeadlineCounts, DeadlineId, DeadlineOutcome, DeadlineRecord,
    DeadlineStatus, DeadlineStore,
};
use crossfold_core::{
    AppendRequest, Codec, Command, CommandError, DomainEvent, Emit, EventData, EventStore,
    ExpectedVersion, ManualClock, Payload, StoreError, StreamId, StreamRef, StreamVersion,
    Timestamp,
};
use crossfold_executor::{DeadlineHandler, DeadlineWorker, Error, Executed, Executor, Firing};
use serde::{Deserialize, Serialize};

/// The events of the test orders.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// Placed; a payment timeout is scheduled.
    Placed,
    /// Expired by its deadline.
    Expired,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Placed => "Placed",
            OrderEvent::Expired => "Expired",
        }
    }
}

/// Appends `Expired` every time it runs: only the deadline's idempotency key keeps a second
/// firing from writing a second event.
#[derive(Debug)]
pub struct ExpireOrder {
    /// The order's stream.
    pub order: StreamId,
}

impl Command for ExpireOrder {
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
        out.append(order, OrderEvent::Expired);
        Ok(())
    }
}

/// Fires a deadline whose payload names an order stream (`{"order": "..."}`) with
/// [`ExpireOrder`], counting its calls.
#[derive(Clone, Debug, Default)]
pub struct ExpireHandler {
    /// How many times a deadline was handed to the handler.
    pub calls: Arc<AtomicUsize>,
}

impl<S: EventStore, C: Codec> DeadlineHandler<S, C> for ExpireHandler {
    async fn fire(&self, firing: Firing<'_, S, C>) -> Result<Executed, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let order = firing.deadline().payload["order"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let order = StreamId::new(order).map_err(|e| Error::Command(e.into()))?;
        firing.execute(ExpireOrder { order }).await
    }
}

/// Wraps a deadline store and fails [`complete`](DeadlineStore::complete) while `crash` is
/// set, as if the worker died after the command ran and before the deadline was marked.
#[derive(Clone, Debug)]
pub struct CrashBeforeComplete<D> {
    inner: D,
    /// While set, `complete` fails without recording anything.
    pub crash: Arc<AtomicBool>,
}

impl<D> CrashBeforeComplete<D> {
    /// `inner`, crashing from the start.
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            crash: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl<D: DeadlineStore> DeadlineStore for CrashBeforeComplete<D> {
    async fn schedule(&self, deadline: Deadline) -> Result<bool, StoreError> {
        self.inner.schedule(deadline).await
    }
    async fn cancel(&self, id: &DeadlineId) -> Result<bool, StoreError> {
        self.inner.cancel(id).await
    }
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedDeadline>, StoreError> {
        self.inner.claim_due(now, limit, lease).await
    }
    async fn complete(
        &self,
        claim: &ClaimedDeadline,
        outcome: &DeadlineOutcome,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        if self.crash.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the worker died".into()));
        }
        self.inner.complete(claim, outcome, at).await
    }
    async fn deadline(&self, id: &DeadlineId) -> Result<Option<DeadlineRecord>, StoreError> {
        self.inner.deadline(id).await
    }
    async fn deadline_counts(&self, now: Timestamp) -> Result<DeadlineCounts, StoreError> {
        self.inner.deadline_counts(now).await
    }
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

const LEASE: Duration = Duration::from_secs(30);
const MINUTE: Duration = Duration::from_secs(60);

/// Places an order (one event) and schedules its payment timeout 15 minutes after `now`, with
/// an id derived from the placing event.
async fn place_order<S: EventStore, D: DeadlineStore>(
    store: &S,
    deadlines: &D,
    order: &str,
    now: Timestamp,
) -> DeadlineId {
    let appended = store
        .append(AppendRequest::new().stream(
            sid(order),
            ExpectedVersion::NoStream,
            vec![EventData::new(
                "Placed",
                Payload::json(br#"{"type":"Placed"}"#.to_vec()),
            )],
        ))
        .await
        .unwrap();
    let placed = &appended.events[0];
    let id = DeadlineId::for_event("payment-timeout", placed.event_id).unwrap();
    let deadline = Deadline::new(
        id.clone(),
        "payment-timeout",
        now.saturating_add(15 * MINUTE),
    )
    .payload(serde_json::json!({ "order": order }))
    .caused_by(placed.event_id.as_uuid(), placed.metadata.correlation_id);
    assert!(deadlines.schedule(deadline.clone()).await.unwrap());
    assert!(
        !deadlines.schedule(deadline).await.unwrap(),
        "scheduling again from the same event must change nothing"
    );
    id
}

async fn expired_events<S: EventStore>(store: &S, order: &str) -> usize {
    store
        .read_stream(&sid(order), StreamVersion::EMPTY, usize::MAX)
        .await
        .unwrap()
        .events
        .iter()
        .filter(|e| e.event_type.as_str() == "Expired")
        .count()
}

/// A deadline fires after its time and only then, once, although the worker is restarted
/// before it is due and then dies between running the command and marking the deadline fired;
/// a cancelled deadline never fires. The store must hold no events and no deadlines.
pub async fn deadlines_fire_once_across_a_restart<S, D>(store: S, deadlines: D)
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
{
    let clock = ManualClock::new(Timestamp::from_unix_micros(1_800_000_000_000_000));
    let handler = ExpireHandler::default();
    let unpaid = place_order(&store, &deadlines, "order-unpaid", clock.now()).await;
    let cancelled = place_order(&store, &deadlines, "order-paid", clock.now()).await;

    let worker = DeadlineWorker::new(
        Executor::new(store.clone()),
        deadlines.clone(),
        clock.clone(),
        handler.clone(),
    )
    .lease(LEASE);
    clock.advance(10 * MINUTE);
    let report = worker.poll_once().await.unwrap();
    assert_eq!(report.claimed, 0, "nothing is due after 10 minutes");
    assert_eq!(report.counts, DeadlineCounts::new(2, 0));
    // The order is paid: its deadline is cancelled.
    assert!(deadlines.cancel(&cancelled).await.unwrap());
    drop(worker);

    // A restart: a new worker on the same store. It dies after the command and before the
    // deadline is marked.
    clock.advance(6 * MINUTE);
    assert_eq!(
        deadlines.deadline_counts(clock.now()).await.unwrap(),
        DeadlineCounts::new(1, 1),
        "the unpaid order's deadline is overdue"
    );
    let crashing = CrashBeforeComplete::new(deadlines.clone());
    let worker = DeadlineWorker::new(
        Executor::new(store.clone()),
        crashing,
        clock.clone(),
        handler.clone(),
    )
    .lease(LEASE);
    assert!(worker.poll_once().await.is_err());
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    assert_eq!(expired_events(&store, "order-unpaid").await, 1);
    drop(worker);

    // Another worker: while the dead worker's claim holds it leaves the deadline alone; once
    // the claim has expired it fires it again, and the command is not applied twice.
    let worker = DeadlineWorker::new(
        Executor::new(store.clone()),
        deadlines.clone(),
        clock.clone(),
        handler.clone(),
    )
    .lease(LEASE);
    assert_eq!(worker.poll_once().await.unwrap().claimed, 0);
    clock.advance(LEASE + Duration::from_secs(1));
    let report = worker.poll_once().await.unwrap();
    assert_eq!(
        (report.claimed, report.fired, report.replayed),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
    assert_eq!(expired_events(&store, "order-unpaid").await, 1);
    let record = deadlines.deadline(&unpaid).await.unwrap().unwrap();
    assert_eq!((record.status, record.claims), (DeadlineStatus::Fired, 2));

    // Nothing fires again, and the cancelled deadline never fired.
    clock.advance(60 * MINUTE);
    assert_eq!(worker.poll_once().await.unwrap().claimed, 0);
    assert_eq!(expired_events(&store, "order-paid").await, 0);
    let record = deadlines.deadline(&cancelled).await.unwrap().unwrap();
    assert_eq!(record.status, DeadlineStatus::Cancelled);
    assert_eq!(
        deadlines.deadline_counts(clock.now()).await.unwrap(),
        DeadlineCounts::new(0, 0)
    );
}

/// Two workers polling the same deadlines at once fire each exactly once: every deadline is
/// handed to one of them, and its command is applied once.
pub async fn racing_workers_fire_each_deadline_once<S, D>(store: S, deadlines: D)
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
{
    const ORDERS: usize = 24;
    let clock = ManualClock::new(Timestamp::from_unix_micros(1_800_000_000_000_000));
    for i in 0..ORDERS {
        place_order(&store, &deadlines, &format!("order-{i}"), clock.now()).await;
    }
    clock.advance(16 * MINUTE);
    let handler = ExpireHandler::default();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let worker = DeadlineWorker::new(
            Executor::new(store.clone()),
            deadlines.clone(),
            clock.clone(),
            handler.clone(),
        )
        .lease(LEASE)
        .batch(3);
        tasks.push(tokio::spawn(async move {
            let mut fired = 0;
            loop {
                let report = worker.poll_once().await.unwrap();
                fired += report.fired;
                if report.claimed == 0 {
                    return fired;
                }
            }
        }));
    }
    let mut fired = 0;
    for task in tasks {
        fired += task.await.unwrap();
    }
    assert_eq!(fired, ORDERS);
    assert_eq!(handler.calls.load(Ordering::SeqCst), ORDERS);
    for i in 0..ORDERS {
        assert_eq!(expired_events(&store, &format!("order-{i}")).await, 1);
    }
    assert_eq!(
        deadlines.deadline_counts(clock.now()).await.unwrap(),
        DeadlineCounts::new(0, 0)
    );
}
