//! Executing commands: atomic multi-stream appends, metadata from the context, causal ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use common::*;
use crossfold_core::{
    AppendRequest, Codec, EventData, EventId, EventStore, ExpectedVersion, Json, StreamVersion,
};
use crossfold_executor::{Actor, ExecutionContext, Executor};
use crossfold_memory::MemoryStore;
use uuid::Uuid;

#[tokio::test]
async fn a_command_appends_to_several_streams_at_once() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    executor
        .execute(Credit {
            account: sid("a"),
            amount: 10,
        })
        .await
        .unwrap();
    let done = executor
        .execute(Move {
            from: sid("a"),
            to: sid("b"),
            amount: 7,
        })
        .await
        .unwrap();
    assert_eq!(done.attempts, 1);
    assert!(!done.replayed);
    let placed: Vec<_> = done
        .events
        .iter()
        .map(|e| (e.stream_id.as_str(), e.stream_version.get(), &*e.event_type))
        .collect();
    assert_eq!(placed, vec![("a", 2, "Debited"), ("b", 1, "Credited")]);
    assert_eq!(balance(&store, &sid("a")).await, 3);
    assert_eq!(balance(&store, &sid("b")).await, 7);
    assert!(done.events[0].position < done.events[1].position);
}

#[tokio::test]
async fn the_context_is_copied_into_every_event() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    let context = ExecutionContext::new()
        .actor(Actor::new("teller-1"))
        .correlation_id(correlation)
        .causation_id(causation)
        .with("channel", "mobile");
    executor
        .execute(Credit {
            account: sid("a"),
            amount: 5,
        })
        .await
        .unwrap();
    let done = executor
        .execute_with(
            Move {
                from: sid("a"),
                to: sid("b"),
                amount: 5,
            },
            &context,
        )
        .await
        .unwrap();
    for event in &done.events {
        let stored = store
            .read_stream(
                &event.stream_id,
                StreamVersion::new(event.stream_version.get() - 1),
                1,
            )
            .await
            .unwrap();
        let meta = &stored.events[0].metadata;
        assert_eq!(meta.correlation_id, Some(correlation));
        assert_eq!(meta.causation_id, Some(causation));
        assert_eq!(meta.actor.as_deref(), Some("teller-1"));
        assert_eq!(
            meta.custom.get("channel"),
            Some(&serde_json::json!("mobile"))
        );
    }
}

#[tokio::test]
async fn a_correlation_id_is_made_up_when_none_is_given() {
    let executor = Executor::new(MemoryStore::new());
    let done = executor
        .execute(Credit {
            account: sid("a"),
            amount: 1,
        })
        .await
        .unwrap();
    assert!(done.events[0].metadata.correlation_id.is_some());
}

#[tokio::test]
async fn new_event_ids_sort_after_everything_the_command_read() {
    let store = MemoryStore::new();
    // An event written by a machine whose clock is a day ahead.
    let ahead_ms = EventId::generate().timestamp_millis() + 86_400_000;
    let future = uuid::Builder::from_unix_timestamp_millis(ahead_ms, &[7; 10]).into_uuid();
    let mut event = EventData::new(
        "Credited",
        Json.encode(&Ledger::Credited { amount: 9 }).unwrap(),
    );
    event.event_id = EventId::from_uuid(future).unwrap();
    store
        .append(AppendRequest::new().stream(
            sid("a"),
            ExpectedVersion::NoStream,
            vec![event.clone()],
        ))
        .await
        .unwrap();
    let executor = Executor::new(store);
    let done = executor
        .execute(Move {
            from: sid("a"),
            to: sid("b"),
            amount: 1,
        })
        .await
        .unwrap();
    for written in &done.events {
        assert!(
            written.event_id > event.event_id,
            "{written:?} sorts before what it read"
        );
    }
}

#[tokio::test]
async fn commands_that_decide_nothing_write_nothing() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    struct Noop;
    impl crossfold_core::Command for Noop {
        type Event = Ledger;
        type State = ();
        type Streams = crossfold_core::StreamId;
        fn streams(&self) -> crossfold_core::StreamId {
            sid("quiet")
        }
        fn handle<'x>(
            &self,
            _: &(),
            _: crossfold_core::StreamRef<'x>,
            _: &mut crossfold_core::Emit<'x, Ledger>,
        ) -> Result<(), crossfold_core::CommandError> {
            Ok(())
        }
    }
    let done = executor.execute(Noop).await.unwrap();
    assert!(done.events.is_empty());
    assert_eq!(
        store.head_position().await.unwrap(),
        crossfold_core::Position::START
    );
}
