//! A command that only reads a stream still fails (and retries) if that stream changed before
//! its append; the retry sees the change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use crossfold_core::{
    AppendRequest, Appended, Codec, EventData, EventStore, ExpectedVersion, Json, LogFilter,
    Position, RecordedEvent, StoreError, StreamEvents, StreamRead,
};
use crossfold_executor::Executor;
use crossfold_memory::MemoryStore;

/// Lets another writer credit stream `b` just before the first append goes through.
#[derive(Clone)]
struct Interloper {
    inner: MemoryStore,
    armed: Arc<AtomicBool>,
}

impl EventStore for Interloper {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        self.inner.read_streams(reads).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let sneaky = EventData::new(
                "Credited",
                Json.encode(&Ledger::Credited { amount: 1 }).unwrap(),
            );
            self.inner
                .append(AppendRequest::new().stream(sid("b"), ExpectedVersion::Any, vec![sneaky]))
                .await?;
        }
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
async fn a_change_to_a_stream_only_read_forces_a_retry_that_sees_it() {
    let store = Interloper {
        inner: MemoryStore::new(),
        armed: Arc::new(AtomicBool::new(false)),
    };
    let executor = Executor::new(store.clone());
    executor
        .execute(Credit {
            account: sid("b"),
            amount: 1,
        })
        .await
        .unwrap();
    store.armed.store(true, Ordering::SeqCst);
    // Count reads a and b and writes only to a.
    let done = executor
        .execute(Count {
            streams: vec![sid("a"), sid("b")],
        })
        .await
        .unwrap();
    assert_eq!(done.attempts, 2, "the first append must conflict on b");
    assert_eq!(done.conflicts, 1);
    let written = done.decode::<Ledger>().unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].stream_id, sid("a"));
    assert_eq!(
        written[0].event,
        Ledger::Counted { seen: 2 },
        "the retry must fold b's new event"
    );
}

#[tokio::test]
async fn without_retries_the_conflict_names_the_read_only_stream() {
    let store = Interloper {
        inner: MemoryStore::new(),
        armed: Arc::new(AtomicBool::new(false)),
    };
    let executor = Executor::builder(store.clone())
        .retry(crossfold_executor::RetryPolicy::none())
        .build();
    executor
        .execute(Credit {
            account: sid("b"),
            amount: 1,
        })
        .await
        .unwrap();
    store.armed.store(true, Ordering::SeqCst);
    let err = executor
        .execute(Count {
            streams: vec![sid("a"), sid("b")],
        })
        .await
        .unwrap_err();
    match err {
        crossfold_executor::Error::Store {
            source: crossfold_core::StoreError::Conflict(conflicts),
            attempts,
        } => {
            assert_eq!(attempts, 1);
            assert_eq!(conflicts.len(), 1);
            assert_eq!(conflicts[0].stream, sid("b"));
            assert_eq!(
                conflicts[0].expected,
                ExpectedVersion::Exact(crossfold_core::StreamVersion::new(1))
            );
            assert_eq!(conflicts[0].actual, crossfold_core::StreamVersion::new(2));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.inner.stream_version(&sid("a")).await.unwrap().get(),
        0,
        "nothing written to a"
    );
}
