//! The in-memory store.

use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crossfold_core::{
    AppendRequest, Appended, EventId, EventStore, HealthCheck, HealthReport, LogFilter, Position,
    RecordedEvent, StoreError, StreamConflict, StreamEvents, StreamId, StreamRead, StreamVersion,
};
use tokio::sync::Notify;

use crate::ids::EventIds;
use crate::log::{Batch, Log, materialize, position_of_seq};
use crate::metrics::StoreMetrics;
use crate::streams::{self, StreamEntry, Streams};

/// An event store held in memory: the embedded default, and the store to test against.
///
/// It keeps every guarantee of the [`EventStore`] contract, exactly as the PostgreSQL store
/// does:
///
/// * an append checks every stream's [`ExpectedVersion`](crossfold_core::ExpectedVersion)
///   (streams that are only checked included) and writes all of its events or none; a failed
///   check is a [`StoreError::Conflict`] naming every failing stream;
/// * when a request both fails a version check and reuses a stored event id, the conflict is
///   reported;
/// * what PostgreSQL cannot store it refuses too, with the same
///   [`StoreError::InvalidRequest`] ([`AppendRequest::check_storable`]: U+0000 in a JSON
///   string or in metadata, a NUL in an event type, a JSON payload that is not JSON), so a
///   command that passes its tests here does not fail in production for its input;
/// * stream versions are gap-free, and positions ([`Position::new`]`(n, 0)` for the `n`-th event)
///   are assigned in the same step that makes an event visible, so readers never see a gap that
///   fills in later.
///
/// Cloning is cheap and every clone shares the same events. It is safe to use from many tasks
/// at once: appends lock only the shards of the streams they touch (in a fixed order, so they
/// never deadlock), and the global log only long enough to publish one pointer per append. No
/// lock is held across an `.await`. An append costs the same however many events and streams
/// the store holds; reading a stream costs what it returns, and so does reading the log,
/// filtered by stream or by type, thanks to indexes. A multi-stream read is a snapshot.
///
/// Events are kept until the store is dropped, so memory grows with the number of events
/// (a few hundred bytes each besides their payloads). Subscribers pull, so the store buffers
/// nothing per subscriber.
///
/// [`wait_for_events`](EventStore::wait_for_events) needs a Tokio runtime with its timer
/// enabled, like any Tokio timeout.
///
/// # Metrics
///
/// Appends count, under `store="memory"`, the events they write
/// ([`STORE_APPENDED_EVENTS_TOTAL`](crossfold_core::metrics::STORE_APPENDED_EVENTS_TOTAL)) and their
/// failures by kind ([`STORE_ERRORS_TOTAL`](crossfold_core::metrics::STORE_ERRORS_TOTAL), `operation`
/// `append`; no other call can fail). Calls are not timed: two clock reads per call would cost
/// every user about 3% of an in-memory command, and with a Prometheus recorder put the metrics
/// past their budget of 5% of a command; the executor times whole commands. The counters bind
/// to the `metrics` recorder installed at the store's first append, and are no-ops without one.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemoryStore {
    /// Shows the number of events, not the events: a store can hold millions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("events", &self.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    streams: Streams,
    ids: EventIds,
    log: RwLock<Log>,
    /// The global sequence number of the last visible event (0: none).
    head: AtomicU64,
    /// Tasks inside `wait_for_events`. Appends skip the wake-up entirely while it is zero.
    waiters: AtomicUsize,
    new_events: Notify,
    metrics: OnceLock<StoreMetrics>,
    snapshots: crate::snapshots::Snapshots,
}

/// Counts a task as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Self(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of events stored.
    pub fn len(&self) -> usize {
        usize::try_from(self.inner.head.load(Ordering::Acquire)).unwrap_or(usize::MAX)
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of streams holding at least one event. Locks every shard in turn, so it is meant
    /// for tests and diagnostics rather than hot paths.
    pub fn stream_count(&self) -> usize {
        self.inner.streams.count()
    }

    pub(crate) fn snapshots(&self) -> &crate::snapshots::Snapshots {
        &self.inner.snapshots
    }

    fn log(&self) -> RwLockReadGuard<'_, Log> {
        // The log is only changed by pushes that cannot panic halfway, so a poisoned lock still
        // guards a consistent log.
        self.inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn log_mut(&self) -> RwLockWriteGuard<'_, Log> {
        self.inner
            .log
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn metrics(&self) -> &StoreMetrics {
        self.inner.metrics.get_or_init(StoreMetrics::new)
    }

    fn head(&self) -> u64 {
        self.inner.head.load(Ordering::SeqCst)
    }

    fn read_streams_now(&self, reads: &[StreamRead]) -> Vec<StreamEvents> {
        // All shards are held at once so that a multi-stream read is a snapshot, as it is in
        // PostgreSQL: a reader never sees half of another command's atomic append.
        let locked = self.inner.streams.lock_all(reads.iter().map(|r| &r.stream));
        reads
            .iter()
            .map(|read| {
                let stream = locked.get(&read.stream);
                StreamEvents {
                    stream: read.stream.clone(),
                    version: streams::version(stream),
                    events: streams::read(stream, read.after, read.limit),
                }
            })
            .collect()
    }

    fn append_now(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        request.validate()?;
        request.check_storable()?;
        if request.streams.is_empty() {
            return Ok(Appended::default());
        }
        let mut locked = self
            .inner
            .streams
            .lock_all(request.streams.iter().map(|s| &s.stream));

        let mut versions = Vec::with_capacity(request.streams.len());
        let mut conflicts = Vec::new();
        for s in &request.streams {
            let actual = streams::version(locked.get(&s.stream));
            if !s.expected.is_met_by(actual) {
                conflicts.push(StreamConflict::new(s.stream.clone(), s.expected, actual));
            }
            versions.push(actual);
        }
        if !conflicts.is_empty() {
            return Err(StoreError::Conflict(conflicts));
        }

        let count = request.event_count();
        if count == 0 {
            return Ok(Appended::default());
        }

        let mut records: Vec<RecordedEvent> = Vec::with_capacity(count);
        for (s, version) in request.streams.into_iter().zip(versions.iter_mut()) {
            for data in s.events {
                *version = version.next();
                // Positions are only known under the log lock; readers fill them in.
                records.push(data.record(s.stream.clone(), *version, Position::START));
            }
        }
        let many_ids: Vec<EventId>;
        let ids = match records.as_slice() {
            // The common single-event append needs no list of ids.
            [one] => std::slice::from_ref(&one.event_id),
            many => {
                many_ids = many.iter().map(|r| r.event_id).collect();
                &many_ids
            }
        };
        if let Err(stored) = self.inner.ids.insert_all(ids) {
            return Err(StoreError::DuplicateEvent(stored));
        }
        // From here on nothing can fail: the append is decided.
        let batch: Batch = Batch::from(records);

        let first_seq = {
            let mut log = self.log_mut();
            let first_seq = log.push(batch.clone());
            // Published while the log is still locked, so the head only ever moves forward and
            // never past an event that is not in the log.
            self.inner.head.store(log.len(), Ordering::SeqCst);
            first_seq
        };

        // The stream shards are still locked, so no reader can see the new head's events missing
        // from their streams.
        let mut offset = 0;
        while let Some(first) = batch.get(offset) {
            let stream_id = &first.stream_id;
            let run = batch[offset..]
                .iter()
                .take_while(|e| e.stream_id == *stream_id)
                .count();
            if let Some(shard) = locked.shard_mut(stream_id) {
                let push_run = |stream: &mut streams::Stream| {
                    for i in offset..offset + run {
                        stream.push(StreamEntry::new(batch.clone(), i, first_seq + i as u64));
                    }
                };
                match shard.get_mut(stream_id) {
                    Some(stream) => push_run(stream),
                    None => {
                        let mut stream = streams::Stream::with_capacity(run);
                        push_run(&mut stream);
                        shard.insert(stream_id.clone(), stream);
                    }
                }
            }
            offset += run;
        }
        drop(locked);

        if self.inner.waiters.load(Ordering::SeqCst) > 0 {
            self.inner.new_events.notify_waiters();
        }
        Ok(Appended::new(
            (0..batch.len())
                .filter_map(|i| materialize(&batch, i, first_seq))
                .collect(),
        ))
    }

    fn read_all_now(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Vec<RecordedEvent> {
        if limit == 0 {
            return Vec::new();
        }
        let system = filter.system_streams;
        match (&filter.streams, &filter.event_types) {
            (Some(streams), _) => self.read_log_of_streams(after, limit, streams, filter),
            // No category index: the log is scanned from the position and filtered.
            (None, _) if filter.categories.is_some() => {
                self.read_log_filtered(after, limit, filter)
            }
            // The batches are cut out under the read lock and copied out after it, so
            // readers hold up writers only for a few pointer copies.
            (None, None) => {
                let slices = self.log().read(after, limit, system);
                slices.into_events()
            }
            (None, Some(types)) => {
                let slices = self.log().read_types(after, limit, types, system);
                slices.into_events()
            }
        }
    }

    /// Up to `limit` events after `after` passing `filter`, found by reading the log page by
    /// page.
    fn read_log_filtered(
        &self,
        mut after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Vec<RecordedEvent> {
        const PAGE: usize = 1024;
        let mut out = Vec::new();
        loop {
            let page = self.log().read(after, PAGE, true).into_events();
            let Some(last) = page.last() else {
                return out;
            };
            after = last.position;
            let full = page.len() == PAGE;
            let wanted = limit - out.len();
            out.extend(page.into_iter().filter(|e| filter.matches(e)).take(wanted));
            if out.len() >= limit || !full {
                return out;
            }
        }
    }

    /// The log restricted to some streams, read from the streams themselves instead of scanning
    /// the log.
    fn read_log_of_streams(
        &self,
        after: Position,
        limit: usize,
        stream_ids: &[StreamId],
        filter: &LogFilter,
    ) -> Vec<RecordedEvent> {
        // Every event up to the head was in its stream before the head moved past it (the
        // writer held the stream's shard throughout), so streams read one at a time below
        // the head together form a gap-free prefix of the filtered log.
        let head = position_of_seq(self.head());
        let mut out: Vec<RecordedEvent> = Vec::new();
        let mut merged = 0;
        for (i, id) in stream_ids.iter().enumerate() {
            if stream_ids[..i].contains(id) {
                continue;
            }
            let shard = self.inner.streams.lock_one(id);
            let Some(stream) = shard.get(id) else {
                continue;
            };
            let start = stream.partition_point(|e| e.position() <= after);
            let before = out.len();
            out.extend(
                stream
                    .iter_from(start)
                    .take_while(|e| e.position() <= head)
                    .filter(|e| e.unpositioned().is_some_and(|u| filter.matches(u)))
                    .take(limit)
                    .filter_map(StreamEntry::event),
            );
            if out.len() > before {
                merged += 1;
            }
        }
        if merged > 1 {
            out.sort_unstable_by_key(|e| e.position);
            out.truncate(limit);
        }
        out
    }

    async fn wait_now(&self, after: Position, timeout: Duration) {
        let has_new = |store: &Self| position_of_seq(store.head()) > after;
        if has_new(self) || timeout.is_zero() {
            return;
        }
        let _waiting = Waiting::new(&self.inner.waiters);
        let mut notified = pin!(self.inner.new_events.notified());
        notified.as_mut().enable();
        // Checked again after registering: an append that moved the head before it saw no
        // waiter and sent no wake-up, and one that moves it after will wake this future.
        if has_new(self) {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }
}

/// Appends record the store metrics (see [`MemoryStore`]'s documentation).
impl EventStore for MemoryStore {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        for read in reads {
            read.validate()?;
        }
        Ok(self.read_streams_now(reads))
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        let result = self.append_now(request);
        self.metrics().append(&result);
        result
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self.read_all_now(after, limit, filter))
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        Ok(position_of_seq(self.head()))
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        self.wait_now(after, timeout).await;
        Ok(())
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after: StreamVersion,
        limit: usize,
    ) -> Result<StreamEvents, StoreError> {
        StreamRead::validate_after(after)?;
        let shard = self.inner.streams.lock_one(stream);
        let events = shard.get(stream);
        Ok(StreamEvents {
            stream: stream.clone(),
            version: streams::version(events),
            events: streams::read(events, after, limit),
        })
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, StoreError> {
        Ok(streams::version(
            self.inner.streams.lock_one(stream).get(stream),
        ))
    }
}

/// Always healthy: there is no connection to lose and no transaction to wait for. Details:
/// `store` (`"memory"`), `events`, `streams` and `waiting_subscribers`. Counting streams locks
/// every shard in turn, so the check suits a health endpoint, not a hot loop.
impl HealthCheck for MemoryStore {
    async fn check_health(&self) -> HealthReport {
        let started = Instant::now();
        let mut report = HealthReport::healthy("event_store")
            .detail("store", "memory")
            .detail("events", self.len())
            .detail("streams", self.stream_count())
            .detail(
                "waiting_subscribers",
                self.inner.waiters.load(Ordering::Relaxed),
            );
        report.checked_in = started.elapsed();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{EventData, ExpectedVersion, Payload};

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    fn one() -> Vec<EventData> {
        vec![EventData::new("E", Payload::json("{}"))]
    }

    #[test]
    fn payloads_of_a_multi_event_append_read_back_whole_and_apart() {
        let store = MemoryStore::new();
        let payloads = ["{\"a\":1}", "0", "{\"b\":[2,3]}", "{}"];
        let events = |prefix: &str| {
            payloads
                .iter()
                .map(|p| EventData::new(format!("{prefix}E"), Payload::json(p.to_string())))
                .collect::<Vec<_>>()
        };
        let request = AppendRequest::new()
            .stream(sid("x"), ExpectedVersion::NoStream, events("x"))
            .stream(sid("y"), ExpectedVersion::NoStream, events("y"));
        store.append_now(request).unwrap();
        let read = store.read_streams_now(&[StreamRead::all(sid("x")), StreamRead::all(sid("y"))]);
        for stream in &read {
            let got: Vec<&[u8]> = stream.events.iter().map(|e| &e.payload.bytes[..]).collect();
            let want: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
            assert_eq!(got, want, "stream {}", stream.stream);
        }
    }

    #[test]
    fn payloads_that_already_share_storage_are_not_copied() {
        let store = MemoryStore::new();
        let one = Payload::json(r#"{"same":true}"#.to_string());
        let events: Vec<EventData> = (0..3).map(|_| EventData::new("E", one.clone())).collect();
        let request = AppendRequest::new().stream(sid("x"), ExpectedVersion::NoStream, events);
        store.append_now(request).unwrap();
        let read = store.read_streams_now(&[StreamRead::all(sid("x"))]);
        for event in &read[0].events {
            assert_eq!(event.payload.bytes.as_ptr(), one.bytes.as_ptr());
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn counts_events_and_streams() {
        runtime().block_on(async {
            let store = MemoryStore::new();
            assert!(store.is_empty());
            store
                .append(
                    AppendRequest::new()
                        .stream(sid("a"), ExpectedVersion::Any, one())
                        .stream(sid("b"), ExpectedVersion::Any, one())
                        .check(sid("c"), ExpectedVersion::Any),
                )
                .await
                .unwrap();
            assert_eq!(store.len(), 2);
            assert_eq!(store.stream_count(), 2, "a checked stream is not created");
            assert_eq!(store.clone().len(), 2, "clones share the events");
            assert_eq!(format!("{store:?}"), "MemoryStore { events: 2, .. }");
        });
    }

    #[test]
    fn health_reports_events_streams_and_waiters() {
        runtime().block_on(async {
            let store = MemoryStore::new();
            store
                .append(
                    AppendRequest::new()
                        .stream(sid("a"), ExpectedVersion::Any, one())
                        .stream(sid("b"), ExpectedVersion::Any, [one(), one()].concat()),
                )
                .await
                .unwrap();
            let waiter = tokio::spawn({
                let store = store.clone();
                async move {
                    let head = store.head_position().await.unwrap();
                    store.wait_for_events(head, Duration::from_secs(3600)).await
                }
            });
            while store.inner.waiters.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            let report = store.check_health().await;
            assert_eq!(report.status, crossfold_core::HealthStatus::Healthy);
            assert_eq!(report.message, None);
            assert_eq!(report.details["store"], "memory");
            assert_eq!(report.details["events"], 3);
            assert_eq!(report.details["streams"], 2);
            assert_eq!(report.details["waiting_subscribers"], 1);
            waiter.abort();
        });
    }

    #[test]
    fn waiting_wakes_on_append_and_leaves_no_waiter_behind() {
        runtime().block_on(async {
            let store = MemoryStore::new();
            let waiter = tokio::spawn({
                let store = store.clone();
                async move {
                    store
                        .wait_for_events(Position::START, Duration::from_secs(3600))
                        .await
                }
            });
            while store.inner.waiters.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            store
                .append(AppendRequest::new().stream(sid("a"), ExpectedVersion::Any, one()))
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(20), waiter)
                .await
                .expect("the append must wake the waiter")
                .unwrap()
                .unwrap();
            assert_eq!(store.inner.waiters.load(Ordering::SeqCst), 0);

            let head = store.head_position().await.unwrap();
            store
                .wait_for_events(head, Duration::from_millis(10))
                .await
                .unwrap();
            assert_eq!(store.inner.waiters.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn multi_stream_reads_are_snapshots() {
        runtime().block_on(async {
            let store = MemoryStore::new();
            let (a, b) = (sid("snapshot-a"), sid("snapshot-b"));
            assert_ne!(streams::shard_of(&a), streams::shard_of(&b));
            let writer = tokio::spawn({
                let (store, a, b) = (store.clone(), a.clone(), b.clone());
                async move {
                    for _ in 0..2_000 {
                        store
                            .append(
                                AppendRequest::new()
                                    .stream(a.clone(), ExpectedVersion::Any, one())
                                    .stream(b.clone(), ExpectedVersion::Any, one()),
                            )
                            .await
                            .unwrap();
                    }
                }
            });
            let reads = [StreamRead::version_only(a), StreamRead::version_only(b)];
            while !writer.is_finished() {
                let read = store.read_streams(&reads).await.unwrap();
                assert_eq!(read[0].version, read[1].version, "a torn read");
                tokio::task::yield_now().await;
            }
            writer.await.unwrap();
        });
    }

    #[test]
    fn stream_filtered_log_reads_never_skip_an_event() {
        runtime().block_on(async {
            let store = MemoryStore::new();
            let streams: Vec<StreamId> = (0..4).map(|i| sid(&format!("tail-{i}"))).collect();
            let filter = LogFilter::streams(streams[..3].iter().cloned());
            let mut writers = Vec::new();
            for w in 0..2 {
                let (store, streams) = (store.clone(), streams.clone());
                writers.push(tokio::spawn(async move {
                    for i in 0..1_000 {
                        let s = streams[(w + i) % streams.len()].clone();
                        store
                            .append(AppendRequest::new().stream(s, ExpectedVersion::Any, one()))
                            .await
                            .unwrap();
                    }
                }));
            }
            // Tail the filtered log like a subscription does, while the writers write.
            let mut seen = Vec::new();
            let mut after = Position::START;
            loop {
                let done = writers.iter().all(|w| w.is_finished());
                let page = store.read_all(after, 7, &filter).await.unwrap();
                if let Some(last) = page.last() {
                    after = last.position;
                }
                seen.extend(page.into_iter().map(|e| e.event_id));
                if done && store.read_all(after, 1, &filter).await.unwrap().is_empty() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let all: Vec<_> = store
                .read_all(Position::START, usize::MAX, &filter)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_id)
                .collect();
            assert_eq!(seen, all);
            assert_eq!(all.len(), 1_500);
        });
    }
}
