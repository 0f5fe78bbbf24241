//! The in-memory store.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crossfold_core::{
    AppendRequest, Appended, EventId, EventStore, LogFilter, Position, RecordedEvent, StoreError,
    StreamConflict, StreamEvents, StreamId, StreamRead, StreamVersion,
};
use tokio::sync::Notify;

use crate::log::{Log, position_of_seq};
use crate::streams::{self, Streams};

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
/// * stream versions are gap-free, and positions ([`Position::new`]`(n, 0)` for the `n`-th event)
///   are assigned in the same step that makes an event visible, so readers never see a gap that
///   fills in later.
///
/// Cloning is cheap and every clone shares the same events. It is safe to use from many tasks
/// at once: appends lock only the shards of the streams they touch, and the global log only
/// long enough to number and push their events. Reading a stream costs what it returns; so does
/// reading the log, by stream or by type, thanks to indexes.
///
/// [`wait_for_events`](EventStore::wait_for_events) needs a Tokio runtime with its timer
/// enabled, like any Tokio timeout.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    streams: Streams,
    log: RwLock<Log>,
    /// The global sequence number of the last visible event (0: none).
    head: AtomicU64,
    /// Tasks inside `wait_for_events`. Appends skip the wake-up entirely while it is zero.
    waiters: AtomicUsize,
    new_events: Notify,
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

    /// The position of a stored event, or `None` if no event has this id: lets a consumer that
    /// remembers event ids resume a subscription from the matching position.
    pub fn position_of(&self, event_id: EventId) -> Option<Position> {
        self.log().seq_of(&event_id).map(position_of_seq)
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
                conflicts.push(StreamConflict {
                    stream: s.stream.clone(),
                    expected: s.expected,
                    actual,
                });
            }
            versions.push(actual);
        }
        if !conflicts.is_empty() {
            return Err(StoreError::Conflict(conflicts));
        }

        let count = request.event_count();
        if count == 0 {
            return Ok(Appended {
                versions,
                positions: Vec::new(),
            });
        }

        // Build the records before taking the log lock, so that it is held only to number them.
        let mut records = Vec::with_capacity(count);
        for (s, version) in request.streams.into_iter().zip(versions.iter_mut()) {
            for data in s.events {
                *version = version.next();
                records.push(data.record(s.stream.clone(), *version, Position::START));
            }
        }
        let mut for_log = records.clone();

        let first_seq = {
            let mut log = self.log_mut();
            if let Some(stored) = log.find_stored(records.iter().map(|r| &r.event_id)) {
                return Err(StoreError::DuplicateEvent(stored));
            }
            let first_seq = log.len() as u64 + 1;
            for (seq, record) in (first_seq..).zip(for_log.drain(..)) {
                log.push(RecordedEvent {
                    position: position_of_seq(seq),
                    ..record
                });
            }
            // Published while the log is still locked, so the head only ever moves forward and
            // never past an event that is not in the log.
            self.inner
                .head
                .store(first_seq + count as u64 - 1, Ordering::SeqCst);
            first_seq
        };

        // The stream shards are still locked, so no reader can see the new head's events missing
        // from their streams.
        let mut positions = Vec::with_capacity(count);
        for (seq, mut record) in (first_seq..).zip(records) {
            record.position = position_of_seq(seq);
            positions.push(record.position);
            if let Some(shard) = locked.shard_mut(&record.stream_id) {
                match shard.get_mut(&record.stream_id) {
                    Some(stream) => stream.push(record),
                    None => {
                        let mut stream = streams::Stream::default();
                        let id = record.stream_id.clone();
                        stream.push(record);
                        shard.insert(id, stream);
                    }
                }
            }
        }
        drop(locked);

        if self.inner.waiters.load(Ordering::SeqCst) > 0 {
            self.inner.new_events.notify_waiters();
        }
        Ok(Appended {
            versions,
            positions,
        })
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
        match (&filter.streams, &filter.event_types) {
            (None, None) => self.log().read(after, limit),
            (None, Some(types)) => self.log().read_types(after, limit, types),
            (Some(streams), _) => self.read_log_of_streams(after, limit, streams, filter),
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
            let start = stream.partition_point(|e| e.position <= after);
            let before = out.len();
            out.extend(
                stream
                    .iter_from(start)
                    .take_while(|e| e.position <= head)
                    .filter(|e| filter.matches(e))
                    .take(limit)
                    .cloned(),
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

impl EventStore for MemoryStore {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        Ok(self.read_streams_now(reads))
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.append_now(request)
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
