//! The contract suite fails for stores that break the contract: each broken store here differs
//! from a correct one in one way, and the behaviour covering that way must fail.
#![allow(clippy::unwrap_used, reason = "tests report failures by panicking")]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use crossfold_core::{
    AppendRequest, Appended, EventStore, LogFilter, Position, RecordedEvent, StoreError,
    StreamEvents, StreamRead,
};
use crossfold_memory::MemoryStore;
use crossfold_testkit::{Fault, FaultKind, FaultyStore, Operation, block_on, contract};

/// Ways to break a store.
#[derive(Clone, Copy, Debug)]
enum Flaw {
    /// Appends without checking streams that are only read.
    SkipsReadOnlyChecks,
    /// Ignores the event types of a log filter.
    IgnoresTypeFilters,
    /// Reports stream versions one too low.
    MiscountsVersions,
    /// Returns one event too many from `read_all`.
    OverReadsTheLog,
}

struct Broken {
    inner: MemoryStore,
    flaw: Flaw,
}

impl EventStore for Broken {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        let mut read = self.inner.read_streams(reads).await?;
        if let Flaw::MiscountsVersions = self.flaw {
            for s in &mut read {
                s.version = crossfold_core::StreamVersion::new(s.version.get().saturating_sub(1));
            }
        }
        Ok(read)
    }

    async fn append(&self, mut request: AppendRequest) -> Result<Appended, StoreError> {
        if let Flaw::SkipsReadOnlyChecks = self.flaw {
            request.streams.retain(|s| !s.events.is_empty());
        }
        self.inner.append(request).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self.flaw {
            Flaw::IgnoresTypeFilters => {
                let filter = LogFilter {
                    categories: None,
                    event_types: None,
                    ..filter.clone()
                };
                self.inner.read_all(after, limit, &filter).await
            }
            Flaw::OverReadsTheLog => {
                self.inner
                    .read_all(after, limit.saturating_add(1), filter)
                    .await
            }
            _ => self.inner.read_all(after, limit, filter).await,
        }
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        self.inner.head_position().await
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }
}

fn broken(flaw: Flaw) -> Broken {
    Broken {
        inner: MemoryStore::new(),
        flaw,
    }
}

fn fails<F: Future<Output = ()>>(behaviour: F) -> bool {
    std::panic::catch_unwind(AssertUnwindSafe(|| block_on(behaviour))).is_err()
}

#[test]
fn a_store_that_skips_read_only_checks_fails() {
    let flaw = Flaw::SkipsReadOnlyChecks;
    assert!(fails(contract::read_only_streams_are_checked(broken(flaw))));
    assert!(fails(
        contract::conflict_on_a_read_only_stream_writes_nothing(broken(flaw))
    ));
}

#[test]
fn a_store_that_ignores_type_filters_fails() {
    let flaw = Flaw::IgnoresTypeFilters;
    assert!(fails(contract::read_all_filters_by_stream_and_type(
        broken(flaw)
    )));
    assert!(fails(
        contract::filtered_subscriptions_deliver_only_matching_events(broken(flaw))
    ));
}

#[test]
fn a_store_that_miscounts_versions_fails() {
    let flaw = Flaw::MiscountsVersions;
    assert!(fails(contract::read_stream_paginates(broken(flaw))));
    assert!(fails(contract::stream_version_and_existence(broken(flaw))));
}

#[test]
fn a_store_that_over_reads_the_log_fails() {
    assert!(fails(contract::read_all_paginates(broken(
        Flaw::OverReadsTheLog
    ))));
}

#[test]
fn a_store_that_fails_appends_fails() {
    let store = FaultyStore::in_memory().with(
        Fault::on(Operation::Append)
            .nth(2)
            .fail(FaultKind::Unavailable),
    );
    assert!(fails(contract::appended_events_read_back_with_every_field(
        FaultyStore::in_memory().with(Fault::on(Operation::Append).fail(FaultKind::Timeout))
    )));
    assert!(fails(contract::global_order_is_append_order(store)));
}

#[test]
fn a_correct_store_passes_the_same_behaviours() {
    assert!(!fails(contract::read_only_streams_are_checked(
        MemoryStore::new()
    )));
    assert!(!fails(contract::read_all_filters_by_stream_and_type(
        MemoryStore::new()
    )));
    assert!(!fails(contract::read_stream_paginates(MemoryStore::new())));
    assert!(!fails(contract::read_all_paginates(MemoryStore::new())));
}
