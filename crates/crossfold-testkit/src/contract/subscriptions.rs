//! Waiting and subscriptions: catching up, resuming from a saved position, live delivery,
//! filters, and exactly-once delivery while others append.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, LogFilter, Position, RecordedEvent,
    Subscription, SubscriptionExt, SubscriptionOptions,
};
use tokio::task::JoinSet;

use super::{
    append_ok, assert_recorded_as, assert_strictly_increasing, data_ids, event, events, ids, read,
    read_page, sid, write,
};

/// How long a single wait for a subscription or a wake-up may take before the test fails.
/// Generous: it catches a store that never delivers, not a slow one.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(20);

async fn with_deadline<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DELIVERY_DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing within {DELIVERY_DEADLINE:?}"),
    }
}

async fn next_event<S: EventStore + 'static>(subscription: &mut Subscription<S>) -> RecordedEvent {
    with_deadline("subscription.next_event()", subscription.next_event())
        .await
        .unwrap()
}

/// Whatever is visible now, without waiting for more.
async fn available<S: EventStore + 'static>(
    subscription: &mut Subscription<S>,
) -> Vec<RecordedEvent> {
    with_deadline("read_available()", subscription.read_available())
        .await
        .unwrap()
        .events
}

async fn take<S: EventStore + 'static>(
    subscription: &mut Subscription<S>,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        out.push(next_event(subscription).await);
    }
    out
}

/// `wait_for_events` returns at once when events exist after the given position, returns after
/// its timeout when none do, and wakes up when an event is appended.
pub async fn wait_for_events_returns_on_events_or_timeout<S: EventStore + 'static>(store: S) {
    let store = Arc::new(store);
    let s = sid("wait");
    with_deadline(
        "wait with a short timeout on an empty log",
        store.wait_for_events(Position::START, Duration::from_millis(50)),
    )
    .await
    .unwrap();

    write(&*store, &s, events("E", 1)).await;
    with_deadline(
        "wait when events already exist",
        store.wait_for_events(Position::START, Duration::from_secs(3600)),
    )
    .await
    .unwrap();

    let head = store.head_position().await.unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_events(head, Duration::from_secs(3600)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&*store, &s, events("E", 1)).await;
    with_deadline("wake-up after an append", waiter)
        .await
        .unwrap()
        .unwrap();
}

/// A subscription from the start delivers every event once, in log order, in batches, and
/// then reports that it has caught up.
pub async fn subscription_catches_up_from_the_start<S: EventStore + 'static>(store: S) {
    let store = Arc::new(store);
    let (a, b) = (sid("sub-a"), sid("sub-b"));
    let mut expected = Vec::new();
    for i in 0..10u64 {
        let batch = events("E", 1 + i % 4);
        expected.extend(data_ids(&batch));
        write(&*store, if i % 2 == 0 { &a } else { &b }, batch).await;
    }
    let mut subscription = store.subscribe(SubscriptionOptions::all().batch_size(4));
    let got = take(&mut subscription, expected.len()).await;
    assert_eq!(ids(&got), expected);
    assert!(available(&mut subscription).await.is_empty());
    assert!(subscription.is_caught_up());
    assert_eq!(
        subscription.position(),
        store.head_position().await.unwrap()
    );
}

/// A subscription resumed from a saved `position()` continues exactly where the first one
/// stopped: no event repeated, none skipped.
pub async fn subscription_resumes_from_a_saved_position<S: EventStore + 'static>(store: S) {
    let store = Arc::new(store);
    let s = sid("resume");
    let all = events("E", 25);
    for chunk in all.chunks(5) {
        write(&*store, &s, chunk.to_vec()).await;
    }
    let expected = data_ids(&all);

    let mut first = store.subscribe(SubscriptionOptions::all().batch_size(3));
    let mut delivered = ids(&take(&mut first, 10).await);
    let checkpoint = first.position();
    drop(first);

    // More events arrive while no one is subscribed.
    let more = events("E", 5);
    write(&*store, &s, more.clone()).await;

    let mut second = store.subscribe(SubscriptionOptions::all().from(checkpoint).batch_size(7));
    delivered.extend(ids(&take(&mut second, 20).await));
    let mut all_ids = expected;
    all_ids.extend(data_ids(&more));
    assert_eq!(delivered, all_ids);
    assert!(available(&mut second).await.is_empty());

    // Batches resume as well: a batch's checkpoint is past the whole batch.
    let mut third = store.subscribe(SubscriptionOptions::all().batch_size(8));
    let batch = with_deadline("next_batch", third.next_batch())
        .await
        .unwrap();
    assert_eq!(ids(&batch.events), all_ids[..8]);
    assert_eq!(batch.position, third.position());
    assert_eq!(batch.position, batch.events[7].position);
    let mut fourth = store.subscribe(SubscriptionOptions::all().from(batch.position));
    assert_eq!(next_event(&mut fourth).await.event_id, all_ids[8]);
}

/// A subscription that has caught up delivers an event appended afterwards.
pub async fn subscription_delivers_live_events<S: EventStore + 'static>(store: S) {
    let store = Arc::new(store);
    let s = sid("live");
    write(&*store, &s, events("E", 3)).await;
    let mut subscription = Subscription::new(
        store.clone(),
        SubscriptionOptions::all().max_wait(Duration::from_secs(2)),
    );
    assert_eq!(take(&mut subscription, 3).await.len(), 3);

    let reader = tokio::spawn(async move {
        let e = next_event(&mut subscription).await;
        (e, subscription)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let live = event("Live", 1);
    write(&*store, &s, vec![live.clone()]).await;
    let (got, mut subscription) = with_deadline("live event", reader).await.unwrap();
    assert_recorded_as(&got, &live, &s, 4, None);

    let second = event("Live", 2);
    write(&*store, &s, vec![second.clone()]).await;
    assert_eq!(
        next_event(&mut subscription).await.event_id,
        second.event_id
    );
}

/// Subscriptions filtered by stream or by event type deliver only matching events, in order,
/// both while catching up and live.
pub async fn filtered_subscriptions_deliver_only_matching_events<S: EventStore + 'static>(
    store: S,
) {
    let store = Arc::new(store);
    let (a, b) = (sid("fsub-a"), sid("fsub-b"));
    let mut of_a = Vec::new();
    let mut of_type = Vec::new();
    for i in 0..12u64 {
        let stream = if i % 3 == 0 { &a } else { &b };
        let event_type = if i % 2 == 0 { "Even" } else { "Odd" };
        let e = event(event_type, i);
        if stream == &a {
            of_a.push(e.event_id);
        }
        if event_type == "Odd" {
            of_type.push(e.event_id);
        }
        write(&*store, stream, vec![e]).await;
    }
    let mut by_stream = store.subscribe(
        SubscriptionOptions::all()
            .filter(LogFilter::streams([a.clone()]))
            .batch_size(2),
    );
    let mut by_type = store.subscribe(
        SubscriptionOptions::all()
            .filter(LogFilter::event_types(["Odd"]))
            .batch_size(2),
    );
    assert_eq!(ids(&take(&mut by_stream, of_a.len()).await), of_a);
    assert_eq!(ids(&take(&mut by_type, of_type.len()).await), of_type);
    assert!(available(&mut by_stream).await.is_empty());
    assert!(available(&mut by_type).await.is_empty());

    // Live: non-matching events first, then a matching one.
    write(&*store, &b, vec![event("Even", 100)]).await;
    let for_a = event("Even", 101);
    write(&*store, &a, vec![for_a.clone()]).await;
    let odd = event("Odd", 102);
    write(&*store, &b, vec![odd.clone()]).await;
    assert_eq!(next_event(&mut by_stream).await.event_id, for_a.event_id);
    assert_eq!(next_event(&mut by_type).await.event_id, odd.event_id);
}

/// While several tasks append concurrently, a live subscription delivers every event exactly
/// once, in strictly increasing positions — no event ever appears behind one already read.
pub async fn subscription_sees_every_event_once_under_concurrent_appends<
    S: EventStore + 'static,
>(
    store: S,
) {
    const WRITERS: usize = 4;
    const APPENDS: usize = 40;
    let store = Arc::new(store);
    let mut subscription = Subscription::new(
        store.clone(),
        SubscriptionOptions::all()
            .batch_size(16)
            .max_wait(Duration::from_millis(200)),
    );
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.spawn(async move {
            let mut written = Vec::new();
            for i in 0..APPENDS {
                let batch = events("E", 1 + (i % 3) as u64);
                written.extend(data_ids(&batch));
                let stream = sid(&format!("concurrent-sub-{}", (w + i) % 5));
                write(&*store, &stream, batch).await;
                if i % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            written
        });
    }
    let mut written: Vec<EventId> = Vec::new();
    while let Some(result) = writers.join_next().await {
        written.extend(result.unwrap());
    }
    let delivered = take(&mut subscription, written.len()).await;
    assert_strictly_increasing(delivered.iter().map(|e| e.position), "live subscription");
    let delivered_ids: HashSet<EventId> = ids(&delivered).into_iter().collect();
    assert_eq!(
        delivered_ids.len(),
        written.len(),
        "every event exactly once"
    );
    assert_eq!(delivered_ids, written.into_iter().collect::<HashSet<_>>());
    assert!(available(&mut subscription).await.is_empty());
}

/// Events of system streams (names starting with `$`, where Crossfold keeps its own records)
/// are left out of log reads and subscriptions unless the filter asks for them or names the
/// stream; a limit counts only the events returned, and a subscription whose log ends in such
/// events is still caught up at the head. The streams themselves read as usual.
pub async fn system_streams_are_left_out_of_the_log_unless_asked<S: EventStore + 'static>(
    store: S,
) {
    let store = Arc::new(store);
    let (user, system) = (
        sid("visible"),
        crossfold_core::StreamId::system("hidden-1").unwrap(),
    );
    let first = events("E", 2);
    append_ok(
        &*store,
        AppendRequest::new()
            .stream(
                system.clone(),
                ExpectedVersion::NoStream,
                events("Marker", 1),
            )
            .stream(user.clone(), ExpectedVersion::NoStream, first.clone()),
    )
    .await;
    write(&*store, &system, events("Marker", 1)).await;
    let last = events("E", 1);
    write(&*store, &user, last.clone()).await;
    let mut visible = data_ids(&first);
    visible.extend(data_ids(&last));

    let page = |limit, filter| {
        let store = store.clone();
        async move { ids(&read_page(&*store, Position::START, limit, &filter).await) }
    };
    assert_eq!(page(100, LogFilter::all()).await, visible);
    assert_eq!(page(2, LogFilter::all()).await, visible[..2]);
    assert!(
        page(100, LogFilter::event_types(["Marker"]))
            .await
            .is_empty()
    );
    assert_eq!(
        page(100, LogFilter::all().with_system_streams())
            .await
            .len(),
        5
    );
    assert_eq!(
        page(
            100,
            LogFilter::event_types(["Marker"]).with_system_streams()
        )
        .await
        .len(),
        2
    );
    assert_eq!(
        page(100, LogFilter::streams([system.clone()])).await.len(),
        2
    );
    assert_eq!(read(&*store, &system).await.len(), 2);

    let mut subscription = store.subscribe(SubscriptionOptions::all().batch_size(2));
    assert_eq!(ids(&take(&mut subscription, 3).await), visible);
    write(&*store, &system, events("Marker", 1)).await;
    assert!(available(&mut subscription).await.is_empty());
    assert!(subscription.is_caught_up());
    assert_eq!(
        subscription.position(),
        store.head_position().await.unwrap(),
        "the subscription moved past the hidden events"
    );
    let mut everything = store.subscribe(
        SubscriptionOptions::all()
            .filter(LogFilter::all().with_system_streams())
            .batch_size(2),
    );
    assert_eq!(take(&mut everything, 6).await.len(), 6);
}
