//! The ordering rule: a transaction that took its id early and commits late must still be
//! delivered, exactly once and in order, to a subscriber that checkpointed while it was open.
//!
//! Run with each append alone, and with group commit on (the appends that commit after the
//! held transaction are sent at once, so that they go in groups).
//!
//! This file holds a writing transaction open on purpose, which holds back the visibility
//! horizon of the whole server: it is its own test binary so that no other test waits on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Commit, events, fresh_store_in, raw_client, sid};
use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, LogFilter, Position, RecordedEvent,
    SubscriptionExt, SubscriptionOptions,
};

commit_modes!([Alone, Grouped] a_late_commit_is_delivered_after_a_checkpoint_taken_while_it_was_open);

async fn a_late_commit_is_delivered_after_a_checkpoint_taken_while_it_was_open(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let schema = store.schema().to_owned();
    let mut live = store
        .store
        .subscribe(SubscriptionOptions::all().max_wait(Duration::from_millis(200)));

    // Two events before anything is held open; the subscriber consumes them.
    for i in 0..2 {
        store
            .append(AppendRequest::new().stream(
                sid(&format!("before-{i}")),
                ExpectedVersion::NoStream,
                events("Before", 1),
            ))
            .await
            .unwrap();
    }
    let mut delivered: Vec<RecordedEvent> = Vec::new();
    while delivered.len() < 2 {
        delivered.push(live.next_event().await.unwrap());
    }

    // A writer that has inserted through the append function but not committed. Its
    // transaction id and its sequence are both lower than those of everything appended next.
    let mut held = raw_client().await;
    let held_tx = held.transaction().await.unwrap();
    let held_id = EventId::generate();
    held_tx
        .execute(
            &format!(
                "SELECT * FROM {schema}.append(ARRAY['held'], ARRAY[-1]::int8[], ARRAY[1], \
                 ARRAY[1], ARRAY[1], ARRAY[$1::uuid], ARRAY['Held'], ARRAY[1], \
                 ARRAY['{{\"n\": 0}}'::jsonb], ARRAY[NULL::bytea], \
                 ARRAY['{{\"recorded_at\": 0}}'::jsonb])"
            ),
            &[&held_id.as_uuid()],
        )
        .await
        .unwrap();

    // Five appends commit after it, on other connections: one after the other, or with group
    // commit all at once, so that those arriving while others are in flight go together.
    let requests: Vec<AppendRequest> = (0..5)
        .map(|i| {
            AppendRequest::new().stream(
                sid(&format!("after-{i}")),
                ExpectedVersion::NoStream,
                events("After", 1),
            )
        })
        .collect();
    let appended = if commit == Commit::Alone {
        let mut appended = Vec::new();
        for request in requests {
            appended.push(store.append(request).await.unwrap());
        }
        appended
    } else {
        futures_util::future::join_all(requests.into_iter().map(|r| store.append(r)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect()
    };
    // In log order: by position.
    let mut after: Vec<(Position, EventId)> = appended
        .iter()
        .flat_map(|a| a.events.iter().map(|e| (e.position, e.event_id)))
        .collect();
    after.sort_unstable();
    let after_ids: Vec<EventId> = after.iter().map(|(_, id)| *id).collect();
    assert_eq!(after_ids.len(), 5);

    // They are committed but must stay invisible while the held transaction is open: a reader
    // that saw them now would checkpoint past the held event.
    let head = store.head_position().await.unwrap();
    assert_eq!(
        head, delivered[1].position,
        "head must not pass the open transaction"
    );
    let early = live.read_available().await.unwrap().events;
    assert!(
        early.is_empty(),
        "delivered past an open transaction: {early:?}"
    );
    let checkpoint = live.position();
    assert_eq!(checkpoint, delivered[1].position);
    let visible = store
        .read_all(checkpoint, 100, &LogFilter::all())
        .await
        .unwrap();
    assert!(visible.is_empty(), "{visible:?}");

    // A waiter for events after the checkpoint must return soon after the commit below.
    let waiter = {
        let store = store.store.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            store
                .wait_for_events(checkpoint, Duration::from_secs(30))
                .await
                .unwrap();
            start.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    held_tx.commit().await.unwrap();
    let waited = waiter.await.unwrap();
    assert!(
        waited < Duration::from_secs(15),
        "wait_for_events did not wake up after the commit ({waited:?})"
    );

    // The live subscriber and one resumed from the checkpoint both get all six, once, in
    // order, the late commit first (its transaction id is the lowest).
    let mut resumed = store.store.subscribe(
        SubscriptionOptions::all()
            .from(checkpoint)
            .max_wait(Duration::from_millis(200)),
    );
    for (name, subscription) in [("live", &mut live), ("resumed", &mut resumed)] {
        let mut got = Vec::new();
        while got.len() < 6 {
            let event = tokio::time::timeout(Duration::from_secs(20), subscription.next_event())
                .await
                .unwrap_or_else(|_| panic!("{name}: only {} of 6 events delivered", got.len()))
                .unwrap();
            got.push(event);
        }
        let ids: Vec<EventId> = got.iter().map(|e| e.event_id).collect();
        assert_eq!(ids[0], held_id, "{name}: the late commit comes first");
        assert_eq!(&ids[1..], &after_ids[..], "{name}");
        assert!(
            got.windows(2).all(|w| w[0].position < w[1].position),
            "{name}: positions increase"
        );
        assert!(got.iter().all(|e| e.position > checkpoint), "{name}");
        let extra = subscription.read_available().await.unwrap().events;
        assert!(extra.is_empty(), "{name}: delivered twice: {extra:?}");
    }

    // The whole log holds each of the eight events exactly once.
    let all = store
        .read_all(Position::START, 100, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(all.len(), 8);
    assert_eq!(
        all.iter().map(|e| e.event_id).collect::<HashSet<_>>().len(),
        8
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}
