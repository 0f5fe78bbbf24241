//! Stores that break the harness's assumptions in one way each, and a short run to feed them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossfold_bench::{LoadOptions, LoadReport, Workload};
use crossfold_core::{
    AppendRequest, Appended, EventData, EventId, EventStore, ExpectedVersion, LogFilter, Position,
    RecordedEvent, StoreError, StreamEvents, StreamRead, StreamVersion,
};
use crossfold_memory::MemoryStore;

/// What a broken store does wrong, once, to the first event of a given type.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code, reason = "each test file uses one of them")]
pub(crate) enum Flaw {
    /// Leaves the event out of what it stores, and reports the append as if it had stored it.
    LosesAnEvent,
    /// Stores the event a second time (as a new row, with an id of its own), and reports the
    /// append as if it had stored it once.
    DuplicatesAnEvent,
}

/// A memory store with one [`Flaw`], aimed at the first event of type `event_type`.
#[derive(Clone)]
pub(crate) struct BrokenStore {
    inner: MemoryStore,
    flaw: Flaw,
    event_type: &'static str,
    struck: Arc<AtomicBool>,
}

impl BrokenStore {
    pub(crate) fn new(flaw: Flaw, event_type: &'static str) -> Self {
        Self {
            inner: MemoryStore::new(),
            flaw,
            event_type,
            struck: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the flaw has done its damage (so a passing run cannot be blamed on a flaw that
    /// never struck).
    pub(crate) fn struck(&self) -> bool {
        self.struck.load(Ordering::SeqCst)
    }

    /// Where the first not-yet-struck target event sits: (stream index, event index, index
    /// among all the request's events).
    fn target(&self, request: &AppendRequest) -> Option<(usize, usize, usize)> {
        if self.struck() {
            return None;
        }
        let mut flat = 0;
        for (s, stream) in request.streams.iter().enumerate() {
            for (k, event) in stream.events.iter().enumerate() {
                if event.event_type.as_str() == self.event_type {
                    return Some((s, k, flat));
                }
                flat += 1;
            }
        }
        None
    }

    fn strike(&self) -> bool {
        !self.struck.swap(true, Ordering::SeqCst)
    }
}

impl EventStore for BrokenStore {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        self.inner.read_streams(reads).await
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        let Some((s, k, flat)) = self.target(&request) else {
            return self.inner.append(request).await;
        };
        match self.flaw {
            Flaw::LosesAnEvent => {
                if !self.strike() {
                    // Another append took the flaw's one strike.
                    return self.inner.append(request).await;
                }
                let mut lost = request;
                let missing = lost.streams[s].events.remove(k);
                let stream = lost.streams[s].stream.clone();
                let appended = match self.inner.append(lost).await {
                    Ok(appended) => appended,
                    Err(e) => {
                        // Nothing was written, so nothing was lost: try again on a later append.
                        self.struck.store(false, Ordering::SeqCst);
                        return Err(e);
                    }
                };
                // Report what a store that had written the event would report: the event in
                // its place, and the stream's versions counted as if it were there.
                let written = appended.events.iter().filter(|e| e.stream_id == stream);
                let now = self.inner.stream_version(&stream).await?;
                let mut version = StreamVersion::new(now.get() - written.count() as u64);
                let position = self.inner.head_position().await?;
                let mut events = Vec::with_capacity(appended.len() + 1);
                let mut returned = appended.into_events().into_iter();
                for i in 0..=returned.len() {
                    let mut event = if i == flat {
                        missing.clone().record(stream.clone(), version, position)
                    } else {
                        match returned.next() {
                            Some(event) => event,
                            None => break,
                        }
                    };
                    if event.stream_id == stream {
                        version = version.next();
                        event.stream_version = version;
                    }
                    events.push(event);
                }
                Ok(Appended::new(events))
            }
            Flaw::DuplicatesAnEvent => {
                let copy = EventData {
                    event_id: EventId::generate(),
                    ..request.streams[s].events[k].clone()
                };
                let stream = request.streams[s].stream.clone();
                let appended = self.inner.append(request).await?;
                if self.strike() {
                    self.inner
                        .append(AppendRequest::new().stream(
                            stream,
                            ExpectedVersion::Any,
                            vec![copy],
                        ))
                        .await?;
                }
                Ok(appended)
            }
        }
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

/// Options for a short run: no warm-up, 100 accounts, a few commands in flight.
fn short(workload: Workload) -> LoadOptions {
    let mut options = LoadOptions::new(workload);
    options.duration = Duration::from_millis(300);
    options.warmup = Duration::ZERO;
    options.accounts = 100;
    options.concurrency = 4;
    options.store_name = "test".into();
    options
}

/// Runs `workload` briefly against `store`.
pub(crate) async fn run<S: EventStore + Clone + 'static>(
    store: S,
    workload: Workload,
) -> LoadReport {
    match crossfold_bench::run(store, &short(workload)).await {
        Ok(report) => report,
        Err(e) => panic!("{workload}: the run produced no report: {e:?}"),
    }
}

/// Asserts that the run is reported FAILED, naming `what` among its problems.
pub(crate) fn assert_failed_naming(report: &LoadReport, what: &str) {
    assert!(
        !report.verification.passed,
        "{}: verification passed: {report:#?}",
        report.workload
    );
    assert!(!report.is_valid());
    assert!(
        report
            .verification
            .problems
            .iter()
            .any(|p| p.contains(what)),
        "{}: no problem mentions {what:?}: {:#?}",
        report.workload,
        report.verification.problems
    );
    let table = crossfold_bench::render_table(std::slice::from_ref(report));
    assert!(
        table.contains("FAILED") && table.contains(what),
        "the table does not say FAILED with {what:?}:\n{table}"
    );
}
