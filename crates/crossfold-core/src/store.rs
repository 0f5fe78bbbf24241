//! The storage contract every event store implements.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;
use crate::event::{EventData, EventType, RecordedEvent};
use crate::id::StreamId;
use crate::subscription::{Subscription, SubscriptionOptions};
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

    /// Total number of events in the request.
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }

    /// Checks the request's shape: no stream named twice, no event id used twice. Stores call
    /// this before touching storage.
    pub fn validate(&self) -> Result<(), StoreError> {
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

/// What a successful append wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Each stream's version after the append, in request order.
    pub versions: Vec<StreamVersion>,
    /// Each new event's global position, in request order (streams, then events).
    pub positions: Vec<Position>,
}

/// Which events of the global log to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only these streams (`None`: all streams).
    pub streams: Option<Vec<StreamId>>,
    /// Only these event types (`None`: all types).
    pub event_types: Option<Vec<EventType>>,
}

impl LogFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events of these streams.
    pub fn streams(streams: impl IntoIterator<Item = StreamId>) -> Self {
        Self {
            streams: Some(streams.into_iter().collect()),
            event_types: None,
        }
    }

    /// Events of these types.
    pub fn event_types<T: Into<EventType>>(types: impl IntoIterator<Item = T>) -> Self {
        Self {
            streams: None,
            event_types: Some(types.into_iter().map(Into::into).collect()),
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

    /// Whether every event passes.
    pub fn is_all(&self) -> bool {
        self.streams.is_none() && self.event_types.is_none()
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.streams
            .as_ref()
            .is_none_or(|s| s.contains(&event.stream_id))
            && self
                .event_types
                .as_ref()
                .is_none_or(|t| t.contains(&event.event_type))
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
    fn read_streams(
        &self,
        reads: &[StreamRead],
    ) -> impl Future<Output = Result<Vec<StreamEvents>, StoreError>> + Send;

    /// Appends atomically. On a failed condition nothing is written and the error is
    /// [`StoreError::Conflict`] naming every stream that failed.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Reads up to `limit` events of the global log after `after`, in position order.
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

    /// A subscription to the global log (or a filtered part of it) from a position: it catches
    /// up in batches, then follows new events as they commit.
    fn subscribe(&self, options: SubscriptionOptions) -> Subscription<&Self>
    where
        Self: Sized,
    {
        Subscription::new(self, options)
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
            fn wait_for_events(
                &self,
                after: Position,
                timeout: Duration,
            ) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).wait_for_events(after, timeout)
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
        assert!(
            !LogFilter::streams([sid("a")])
                .with_event_types(["F"])
                .matches(&e)
        );
    }
}
