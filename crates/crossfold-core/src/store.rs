//! The storage contract every event store implements.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::event::{EventData, EventType, RecordedEvent, Timestamp};
use crate::id::StreamId;
use crate::storable;
use crate::subscription::{Subscription, SubscriptionOptions};
use crate::turn::StreamTurn;
use crate::version::{ExpectedVersion, Position, StreamVersion};

/// One stream to read: the events after version `after`, at most `limit` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRead {
    /// The stream.
    pub stream: StreamId,
    /// Read events whose version is greater than this (`EMPTY` reads from the start).
    pub after: StreamVersion,
    /// At most this many events.
    pub limit: usize,
}

impl StreamRead {
    /// The whole stream.
    pub fn all(stream: StreamId) -> Self {
        Self {
            stream,
            after: StreamVersion::EMPTY,
            limit: usize::MAX,
        }
    }

    /// Every event after `after` (the tail of a stream whose start is already known).
    pub fn after(stream: StreamId, after: StreamVersion) -> Self {
        Self {
            stream,
            after,
            limit: usize::MAX,
        }
    }

    /// Only the stream's current version, no events.
    pub fn version_only(stream: StreamId) -> Self {
        Self {
            stream,
            after: StreamVersion::EMPTY,
            limit: 0,
        }
    }

    /// Checks the read against what every store can answer (`after` beyond the highest version
    /// a store can hold is refused). Stores call this before touching storage, so that every
    /// store answers the same input with the same [`StoreError::InvalidRequest`].
    pub fn validate(&self) -> Result<(), StoreError> {
        Self::validate_after(self.after)
    }

    /// [`validate`](Self::validate) for a read given as parts.
    pub fn validate_after(after: StreamVersion) -> Result<(), StoreError> {
        storable::check_version("read after version", after).map_err(StoreError::InvalidRequest)
    }
}

/// The result of reading one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEvents {
    /// The stream.
    pub stream: StreamId,
    /// The stream's current version when it was read (`EMPTY` if it does not exist), which may
    /// be beyond the last event returned when a limit applied.
    pub version: StreamVersion,
    /// The events read, in stream order.
    pub events: Vec<RecordedEvent>,
}

/// The part of an append that concerns one stream: its condition and its new events (none for
/// a stream that was only read and is checked, not written).
#[derive(Clone, Debug, PartialEq)]
pub struct AppendStream {
    /// The stream.
    pub stream: StreamId,
    /// The condition the stream must meet.
    pub expected: ExpectedVersion,
    /// Events to add, in order. Empty for a stream that is only checked.
    pub events: Vec<EventData>,
}

/// An atomic append to one or more streams: either every condition holds and every event is
/// written, or nothing is written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppendRequest {
    /// The streams, each named once.
    pub streams: Vec<AppendStream>,
}

impl AppendRequest {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stream with its condition and events.
    pub fn stream(
        mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Self {
        self.streams.push(AppendStream {
            stream,
            expected,
            events,
        });
        self
    }

    /// Adds a stream that is only checked, not written.
    pub fn check(self, stream: StreamId, expected: ExpectedVersion) -> Self {
        self.stream(stream, expected, Vec::new())
    }

    /// Checks the events' contents against what the strictest store (PostgreSQL) can hold: a
    /// NUL in an event type, a JSON payload that is not UTF-8 JSON or whose strings hold U+0000
    /// (as a Rust `String` may; JSONB refuses it), U+0000 in metadata. A store that could hold
    /// such events itself (the memory store) calls this, so that a command which passes its
    /// tests on it does not fail in production; PostgreSQL refuses the same input with the same
    /// [`StoreError::InvalidRequest`] on its own.
    pub fn check_storable(&self) -> Result<(), StoreError> {
        for event in self.streams.iter().flat_map(|s| &s.events) {
            storable::check_event(event).map_err(StoreError::InvalidRequest)?;
        }
        Ok(())
    }

    /// Total number of events in the request.
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }

    /// Checks the request's shape before a store touches storage: no stream named twice, no
    /// event id used twice, no expected version beyond the highest a store can hold. Every
    /// store calls it, so the same malformed request gets the same
    /// [`StoreError::InvalidRequest`] on all of them, and nothing is written.
    pub fn validate(&self) -> Result<(), StoreError> {
        for s in &self.streams {
            storable::check_expected(s.expected).map_err(StoreError::InvalidRequest)?;
        }
        if let Some(stream) = first_duplicate(self.streams.iter().map(|s| &s.stream)) {
            return Err(StoreError::InvalidRequest(format!(
                "stream {stream} appears twice in one append"
            )));
        }
        let ids = self
            .streams
            .iter()
            .flat_map(|s| s.events.iter().map(|e| e.event_id));
        if let Some(id) = first_duplicate(ids) {
            return Err(StoreError::InvalidRequest(format!(
                "event id {id} appears twice in one append"
            )));
        }
        Ok(())
    }
}

/// The first value that occurs twice. Small requests (the common case) are compared pairwise
/// on the stack, which costs less than building a set.
fn first_duplicate<T: Eq + std::hash::Hash + Copy>(
    items: impl Iterator<Item = T> + Clone,
) -> Option<T> {
    const SMALL: usize = 16;
    if items.clone().nth(SMALL).is_none() {
        let mut seen: [Option<T>; SMALL] = [None; SMALL];
        for (i, item) in items.enumerate() {
            if seen[..i].contains(&Some(item)) {
                return Some(item);
            }
            seen[i] = Some(item);
        }
        return None;
    }
    let mut seen = HashSet::new();
    items.into_iter().find(|a| !seen.insert(*a))
}

/// What a successful append wrote: every new event as it was stored.
///
/// ```
/// use crossfold_core::{Appended, Position};
///
/// let nothing = Appended::new(Vec::new());
/// assert!(nothing.is_empty());
/// assert_eq!(nothing.position(), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Appended {
    /// The events written, as stored — id, stream, stream version, global position, type,
    /// payload, metadata — in request order (the request's streams in order, each stream's
    /// events in order). Empty when the request only checked streams.
    pub events: Vec<RecordedEvent>,
}

impl Appended {
    /// The result of an append that stored `events` (stores build it; callers read it).
    pub fn new(events: Vec<RecordedEvent>) -> Self {
        Self { events }
    }

    /// Number of events written.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was written (the request only checked streams).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The highest global position written: once a reader of the log has reached it, the reader
    /// has seen this whole append. `None` when nothing was written.
    pub fn position(&self) -> Option<Position> {
        self.events.iter().map(|e| e.position).max()
    }

    /// The version of `stream` after the append, if the append wrote to it.
    pub fn version_of(&self, stream: &StreamId) -> Option<StreamVersion> {
        self.events
            .iter()
            .rev()
            .find(|e| e.stream_id == *stream)
            .map(|e| e.stream_version)
    }

    /// The events written.
    pub fn into_events(self) -> Vec<RecordedEvent> {
        self.events
    }
}

/// Which events of the global log to read.
///
/// Events of system streams (names starting with `$`, see [`StreamId::is_system`]) are left
/// out unless the filter asks for them, so that records Crossfold keeps for itself — the
/// executor's idempotency markers — never surprise a projection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only these streams (`None`: all streams).
    pub streams: Option<Vec<StreamId>>,
    /// Only streams of these categories (`None`: all): see [`StreamId::category`].
    pub categories: Option<Vec<String>>,
    /// Only these event types (`None`: all types).
    pub event_types: Option<Vec<EventType>>,
    /// Whether events of system streams are included (default: no). A stream named in
    /// [`streams`](Self::streams) is always included, system or not.
    pub system_streams: bool,
}

impl LogFilter {
    /// Every event of every application stream: all streams but Crossfold's system streams
    /// (names starting with `$`, which [`StreamId::new`] refuses, so no id of yours is one).
    /// Add [`with_system_streams`](Self::with_system_streams) for those too.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events of these streams.
    pub fn streams(streams: impl IntoIterator<Item = StreamId>) -> Self {
        Self {
            streams: Some(streams.into_iter().collect()),
            ..Self::default()
        }
    }

    /// Events of the streams of these categories: `categories(["account"])` follows
    /// `account-1`, `account-2`, ... (see [`StreamId::category`]).
    pub fn categories<C: Into<String>>(categories: impl IntoIterator<Item = C>) -> Self {
        Self {
            categories: Some(categories.into_iter().map(Into::into).collect()),
            ..Self::default()
        }
    }

    /// Events of these types.
    pub fn event_types<T: Into<EventType>>(types: impl IntoIterator<Item = T>) -> Self {
        Self {
            event_types: Some(types.into_iter().map(Into::into).collect()),
            ..Self::default()
        }
    }

    /// Also restricts to these event types.
    pub fn with_event_types<T: Into<EventType>>(
        mut self,
        types: impl IntoIterator<Item = T>,
    ) -> Self {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Also includes the events of system streams.
    pub fn with_system_streams(mut self) -> Self {
        self.system_streams = true;
        self
    }

    /// Whether every event passes, system streams included: a store may then read the log
    /// without looking at any event.
    pub fn is_everything(&self) -> bool {
        self.is_all() && self.system_streams
    }

    /// Whether the filter restricts neither streams, categories nor types (system streams may
    /// still be left out).
    pub fn is_all(&self) -> bool {
        self.streams.is_none() && self.categories.is_none() && self.event_types.is_none()
    }

    /// Whether an event of `stream` passes the stream part of the filter.
    pub fn matches_stream(&self, stream: &StreamId) -> bool {
        match &self.streams {
            Some(streams) => streams.contains(stream),
            None => self.system_streams || !stream.is_system(),
        }
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_stream(&event.stream_id)
            && self
                .categories
                .as_ref()
                .is_none_or(|c| c.iter().any(|c| c == event.stream_id.category()))
            && self
                .event_types
                .as_ref()
                .is_none_or(|t| t.contains(&event.event_type))
    }
}

/// Committed events that readers of the log cannot be given yet, and what they wait for: the
/// answer of [`EventStore::held_back`].
///
/// A store that lets appends commit concurrently hands out log positions before commit: an
/// append that is still open may yet commit below events that others committed after it
/// started. Readers never pass such an append (that would skip its events), so what committed
/// after it waits until it ends.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HeldBack {
    /// Committed events after the position, passing the filter, that readers cannot see yet:
    /// counted up to the limit asked for.
    pub events: u64,
    /// Whether there may be more such events than `events`.
    pub events_capped: bool,
    /// The oldest open append the log waits for, when the store can name it.
    pub open_append: Option<OpenAppend>,
}

impl HeldBack {
    /// `events` held back (`capped`: maybe more), waiting for `open_append`.
    pub fn new(events: u64, events_capped: bool, open_append: Option<OpenAppend>) -> Self {
        Self {
            events,
            events_capped,
            open_append,
        }
    }
}

/// An append whose transaction is still open, holding back what readers of the log see.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct OpenAppend {
    /// The server process running it (on PostgreSQL the backend's pid, as `pg_stat_activity`
    /// and `pg_terminate_backend` know it); `None` for a prepared transaction or when the store
    /// cannot tell.
    pub pid: Option<u32>,
    /// Its transaction, as the store names it (on PostgreSQL the transaction id as
    /// `pg_stat_activity.backend_xid` and `pg_locks` show it).
    pub transaction: Option<u64>,
    /// When its transaction started, when the store may see that.
    pub started_at: Option<Timestamp>,
    /// How long it has been open: since `started_at` when known, otherwise at least this long
    /// (since this process first saw it hold readers back).
    pub open_seconds: f64,
}

impl OpenAppend {
    /// An open append run by process `pid`, open for `open_seconds`.
    pub fn new(pid: Option<u32>, open_seconds: f64) -> Self {
        Self {
            pid,
            open_seconds,
            ..Self::default()
        }
    }

    /// With its transaction's name.
    pub fn transaction(mut self, transaction: u64) -> Self {
        self.transaction = Some(transaction);
        self
    }

    /// With its transaction's start.
    pub fn started_at(mut self, started_at: Timestamp) -> Self {
        self.started_at = Some(started_at);
        self
    }
}

impl std::fmt::Display for OpenAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an append")?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        write!(f, " open for {:.1} s", self.open_seconds)
    }
}

/// An event store: streams of events, atomic multi-stream appends with optimistic concurrency,
/// and a global log in commit order.
///
/// Implementations must guarantee:
/// * **atomicity** — an append writes all its events or none, and checks every stream's
///   condition, including streams that are only checked;
/// * **gap-free versions** — a stream's events have versions `1..=n`;
/// * **commit-safe positions** — [`read_all`](Self::read_all) never returns an event at a
///   position at or below one it has already returned to any reader, so a checkpoint never
///   skips an event that commits late.
///
/// `crossfold-testkit`'s contract suite checks all of this for any implementation.
pub trait EventStore: Send + Sync {
    /// Reads several streams in one call, returning them in request order with their current
    /// versions. An absent stream reads as empty at version `EMPTY`.
    ///
    /// The read is a **snapshot**: every stream is shown at the version it had at one and the
    /// same moment, so an atomic append to several streams is seen whole or not at all. The
    /// executor relies on this to decide on states that existed.
    fn read_streams(
        &self,
        reads: &[StreamRead],
    ) -> impl Future<Output = Result<Vec<StreamEvents>, StoreError>> + Send;

    /// Appends atomically and returns the events as stored. On a failed condition nothing is
    /// written and the error is [`StoreError::Conflict`] naming every stream that failed.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Reads up to `limit` events of the global log after `after` that pass `filter`, in
    /// position order. Fewer than `limit` events means the reader has reached the visible end
    /// of the log. Events of system streams are left out unless the filter asks for them.
    fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The position of the last event a reader can see (`Position::START` for an empty log).
    fn head_position(&self) -> impl Future<Output = Result<Position, StoreError>> + Send;

    /// Waits until events after `after` may be readable, or `timeout` passes. May return early
    /// (callers re-read and wait again); must not wait longer than `timeout`.
    fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Waits until the global log is visible up to `position` — typically the one an append
    /// returned ([`Appended::position`]) — so that a read of the log or a subscription started
    /// afterwards sees that append ("read your writes" on the log). Returns at once on a store
    /// whose appends are visible as soon as they return (the memory store). On PostgreSQL an
    /// append becomes visible to log readers only once every transaction that started before
    /// it has finished, so this waits for those.
    ///
    /// Fails with [`StoreError::Timeout`] (naming the position) when it is not visible within
    /// `timeout`.
    fn wait_for_position(
        &self,
        position: Position,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                // A store's head only moves past what readers can see, and its reads wait a
                // little themselves for what is committed but not yet visible.
                let head = self.head_position().await?;
                if head >= position {
                    return Ok(());
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(StoreError::Timeout(
                        format!(
                            "position {position} was not visible after {timeout:?} \
                             (visible up to {head})"
                        )
                        .into(),
                    ));
                }
                self.wait_for_events(head, deadline - now).await?;
            }
        }
    }

    /// Committed events after `after` that pass `filter` but that [`read_all`](Self::read_all)
    /// cannot return yet, because an append that started before they committed is still open;
    /// counted up to `limit`, with the oldest such open append when the store can name it.
    /// `None` when no committed event is held back. For status and health: a subscription or
    /// projection that has read everything it can is *waiting*, not caught up, while this is
    /// `Some`.
    ///
    /// The default answers `None`: right for stores whose appends are visible to log readers as
    /// soon as they return (the memory store). Not for hot paths: a store may look at every
    /// open transaction to answer.
    fn held_back(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Option<HeldBack>, StoreError>> + Send {
        let _ = (after, filter, limit);
        async { Ok(None) }
    }

    /// Reads one stream: events after `after`, at most `limit`.
    fn read_stream(
        &self,
        stream: &StreamId,
        after: StreamVersion,
        limit: usize,
    ) -> impl Future<Output = Result<StreamEvents, StoreError>> + Send {
        let read = StreamRead {
            stream: stream.clone(),
            after,
            limit,
        };
        async move {
            single(
                self.read_streams(std::slice::from_ref(&read)).await?,
                &read.stream,
            )
        }
    }

    /// A stream's current version (`EMPTY` if it does not exist).
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<StreamVersion, StoreError>> + Send {
        let read = StreamRead::version_only(stream.clone());
        async move {
            single(
                self.read_streams(std::slice::from_ref(&read)).await?,
                &read.stream,
            )
            .map(|s| s.version)
        }
    }

    /// Whether a stream holds any event.
    fn stream_exists(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move { Ok(!self.stream_version(stream).await?.is_empty()) }
    }

    /// Waits for the caller's turn on `streams` and holds it until the returned [`StreamTurn`]
    /// is dropped: callers that ask for a turn on a common stream — in this process or any
    /// other using the same store — take turns, in about the order they asked.
    ///
    /// The executor asks for one only on streams where its appends have lost races to other
    /// writers, so that contenders queue instead of reading again and retrying (and the one
    /// that keeps losing gets its turn). A store may make appends made without a turn give way
    /// to a turn held or waited for on their streams — refused with a conflict marked
    /// [`turn_held`](crate::StreamConflict::turn_held), nothing written — so that a writer that
    /// never loses a race cannot keep beating the turn's holder; the PostgreSQL store does. The
    /// holder appends through [`append_in_turn`](Self::append_in_turn). Either way the append's
    /// version check still decides.
    ///
    /// A store that wraps another and forwards `take_turn` must forward `append_in_turn` too:
    /// with the default, the wrapper's holder would append as if it held no turn, and be
    /// refused for its own.
    ///
    /// The default hands out no turn at once ([`StreamTurn::none`]): right for a store that
    /// lives in one process, where the executor's in-process queue already orders commands on
    /// the same streams. A store shared by several processes (PostgreSQL) holds turns in the
    /// server. Two callers that each hold a turn never wait for each other's in a cycle: the
    /// store takes the turns of one call in an order of its own, the same for every caller.
    fn take_turn(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<StreamTurn, StoreError>> + Send {
        let _ = streams;
        async { Ok(StreamTurn::none()) }
    }

    /// Appends like [`append`](Self::append), for a caller that holds `turn` (taken from this
    /// store by [`take_turn`](Self::take_turn)) on the request's streams.
    ///
    /// A store that holds turns in the server makes every other append give way to them: an
    /// append on a stream whose turn another writer holds, or waits for, is refused with a
    /// [`StreamConflict`](crate::StreamConflict) marked
    /// [`turn_held`](crate::StreamConflict::turn_held), and writes nothing. The turn's holder
    /// appends through this method, which that refusal spares on the turn's streams. The
    /// default appends as [`append`](Self::append) does: right for a store without turns.
    fn append_in_turn(
        &self,
        turn: &StreamTurn,
        request: AppendRequest,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        let _ = turn;
        self.append(request)
    }

    /// How many calls the store can serve at once without making them wait for each other:
    /// for a store with a connection pool, about the pool's size. `None` (the default) means
    /// no such limit (the memory store).
    ///
    /// The executor admits at most this many command executions at once by default and queues
    /// the rest in arrival order, so that an execution never waits for a connection between
    /// its read and its append; see
    /// `ExecutorBuilder::concurrency_limit` in `crossfold-executor`. A store answers with a
    /// constant: the executor asks once, when it is built.
    fn concurrency_limit(&self) -> Option<usize> {
        None
    }

    /// A subscription to the global log (or a filtered part of it) from a position: it catches
    /// up in batches, then follows new events as they commit. It owns a clone of the store
    /// (stores are cheap to clone), so it can move into a spawned task.
    fn subscribe(&self, options: SubscriptionOptions) -> Subscription<Self>
    where
        Self: Sized + Clone + 'static,
    {
        Subscription::new(self.clone(), options)
    }
}

fn single(mut streams: Vec<StreamEvents>, stream: &StreamId) -> Result<StreamEvents, StoreError> {
    match streams.pop() {
        Some(s) if streams.is_empty() => Ok(s),
        _ => Err(StoreError::Backend(
            format!("store returned a wrong number of streams for a read of {stream}").into(),
        )),
    }
}

macro_rules! forward_event_store {
    ($($ty:ty),*) => {$(
        impl<T: EventStore> EventStore for $ty {
            fn read_streams(
                &self,
                reads: &[StreamRead],
            ) -> impl Future<Output = Result<Vec<StreamEvents>, StoreError>> + Send {
                (**self).read_streams(reads)
            }
            fn append(
                &self,
                request: AppendRequest,
            ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
                (**self).append(request)
            }
            fn read_all(
                &self,
                after: Position,
                limit: usize,
                filter: &LogFilter,
            ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
                (**self).read_all(after, limit, filter)
            }
            fn head_position(&self) -> impl Future<Output = Result<Position, StoreError>> + Send {
                (**self).head_position()
            }
            fn wait_for_position(
                &self,
                position: Position,
                timeout: Duration,
            ) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).wait_for_position(position, timeout)
            }
            fn wait_for_events(
                &self,
                after: Position,
                timeout: Duration,
            ) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).wait_for_events(after, timeout)
            }
            fn held_back(
                &self,
                after: Position,
                filter: &LogFilter,
                limit: usize,
            ) -> impl Future<Output = Result<Option<HeldBack>, StoreError>> + Send {
                (**self).held_back(after, filter, limit)
            }
            fn read_stream(
                &self,
                stream: &StreamId,
                after: StreamVersion,
                limit: usize,
            ) -> impl Future<Output = Result<StreamEvents, StoreError>> + Send {
                (**self).read_stream(stream, after, limit)
            }
            fn stream_version(
                &self,
                stream: &StreamId,
            ) -> impl Future<Output = Result<StreamVersion, StoreError>> + Send {
                (**self).stream_version(stream)
            }
            fn take_turn(
                &self,
                streams: &[StreamId],
            ) -> impl Future<Output = Result<StreamTurn, StoreError>> + Send {
                (**self).take_turn(streams)
            }
            fn append_in_turn(
                &self,
                turn: &StreamTurn,
                request: AppendRequest,
            ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
                (**self).append_in_turn(turn, request)
            }
            fn concurrency_limit(&self) -> Option<usize> {
                (**self).concurrency_limit()
            }
        }
    )*};
}

forward_event_store!(&T, Arc<T>, Box<T>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Payload;

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    #[test]
    fn validate_refuses_a_stream_named_twice() {
        let r = AppendRequest::new()
            .check(sid("a"), ExpectedVersion::Any)
            .check(sid("a"), ExpectedVersion::NoStream);
        assert!(matches!(r.validate(), Err(StoreError::InvalidRequest(_))));
    }

    #[test]
    fn validate_refuses_a_duplicate_event_id() {
        let e = EventData::new("E", Payload::json(&b"{}"[..]));
        let r = AppendRequest::new()
            .stream(sid("a"), ExpectedVersion::Any, vec![e.clone()])
            .stream(sid("b"), ExpectedVersion::Any, vec![e]);
        assert!(matches!(r.validate(), Err(StoreError::InvalidRequest(_))));
    }

    #[test]
    fn filter_matches_streams_and_types() {
        let e = EventData::new("E", Payload::json(&b"{}"[..])).record(
            sid("a"),
            StreamVersion::new(1),
            Position::new(1, 1),
        );
        assert!(LogFilter::all().matches(&e));
        assert!(LogFilter::streams([sid("a")]).matches(&e));
        assert!(!LogFilter::streams([sid("b")]).matches(&e));
        assert!(LogFilter::event_types(["E"]).matches(&e));
        assert!(LogFilter::categories(["a"]).matches(&e));
        assert!(!LogFilter::categories(["b"]).matches(&e));
        assert!(
            !LogFilter::streams([sid("a")])
                .with_event_types(["F"])
                .matches(&e)
        );
    }

    #[test]
    fn system_streams_are_left_out_unless_asked_for_or_named() {
        let marker = EventData::new("$CommandCompleted", Payload::json(&b"{}"[..])).record(
            StreamId::system("idempotency-k").unwrap(),
            StreamVersion::new(1),
            Position::new(1, 1),
        );
        assert!(marker.stream_id.is_system() && !sid("account-1").is_system());
        assert!(!LogFilter::all().matches(&marker));
        assert!(!LogFilter::event_types(["$CommandCompleted"]).matches(&marker));
        assert!(LogFilter::all().with_system_streams().matches(&marker));
        assert!(LogFilter::streams([StreamId::system("idempotency-k").unwrap()]).matches(&marker));
        assert!(LogFilter::all().with_system_streams().is_everything());
        assert!(!LogFilter::all().is_everything());
    }

    #[test]
    fn appended_reports_its_highest_position_and_versions() {
        let at = |stream: &str, version: u64, commit: u64| {
            EventData::new("E", Payload::json(&b"{}"[..])).record(
                sid(stream),
                StreamVersion::new(version),
                Position::new(commit, 0),
            )
        };
        let appended = Appended::new(vec![at("a", 4, 7), at("a", 5, 8), at("b", 1, 9)]);
        assert_eq!(appended.len(), 3);
        assert_eq!(appended.position(), Some(Position::new(9, 0)));
        assert_eq!(appended.version_of(&sid("a")), Some(StreamVersion::new(5)));
        assert_eq!(appended.version_of(&sid("c")), None);
    }
}
