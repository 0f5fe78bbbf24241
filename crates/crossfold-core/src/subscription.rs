//! Pull-based subscriptions over any [`EventStore`]: catch up in batches, then follow live.
//!
//! A [`Subscription`] is a [`futures_core::Stream`] of events, so it composes with the stream
//! ecosystem (`StreamExt::next`, `take_until`, `timeout`, `ready_chunks`, ...); what is particular
//! to subscriptions — the checkpoint to resume from, whole batches — is in [`SubscriptionExt`].

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_core::Stream;

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::store::{EventStore, LogFilter};
use crate::version::Position;

/// Where a subscription starts, what it reads, and how it waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Deliver events after this position (`Position::START`: from the beginning). A saved
    /// checkpoint goes here to resume.
    pub from: Position,
    /// Which events to deliver. System streams (`$...`) are left out unless the filter asks
    /// for them.
    pub filter: LogFilter,
    /// How many events one read fetches. This bounds the subscription's memory: it never holds
    /// more than one batch, and reads the next only when the consumer asks (back-pressure).
    pub batch_size: usize,
    /// The longest single wait for new events before re-reading the log. Stores wake waiters
    /// early when events commit, so this only bounds the delay after a lost wake-up.
    pub max_wait: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            from: Position::START,
            filter: LogFilter::all(),
            batch_size: 512,
            max_wait: Duration::from_millis(500),
        }
    }
}

impl SubscriptionOptions {
    /// Every event of every application stream (as [`LogFilter::all`]: system streams are left
    /// out), from the beginning.
    pub fn all() -> Self {
        Self::default()
    }

    /// Starts after `position` (a checkpoint).
    pub fn from(mut self, position: Position) -> Self {
        self.from = position;
        self
    }

    /// Delivers only events passing `filter`.
    pub fn filter(mut self, filter: LogFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the batch size (at least 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets the longest single wait.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}

/// A batch of events and the checkpoint that follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventBatch {
    /// The events, in log order (at least one).
    pub events: Vec<RecordedEvent>,
    /// The subscription's position after this batch: every matching event at or before it has
    /// been delivered, in this batch or an earlier one. Store it with the effects of the batch
    /// to resume after it.
    pub position: Position,
}

/// What a subscription offers besides being a [`Stream`] of events: its checkpoint, and
/// delivery in whole batches (one store read each), which is how a projection applies events
/// efficiently.
///
/// Implemented by [`Subscription`]; code that consumes events (a projection runner, a test) can
/// be generic over it.
pub trait SubscriptionExt: Stream<Item = Result<RecordedEvent, StoreError>> + Unpin {
    /// The checkpoint to resume from: every matching event at or before it has been delivered.
    fn position(&self) -> Position;

    /// Whether the subscription has delivered everything visible so far (it is live).
    fn is_caught_up(&self) -> bool;

    /// Polls for the next batch: every event already fetched, or the next read's events
    /// (at least one, at most the batch size), waiting for new events if necessary.
    fn poll_next_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<EventBatch, StoreError>>;

    /// Polls for what is visible now, without waiting for new events to commit: every event
    /// already fetched, or one read's events — an empty batch when there is nothing new.
    fn poll_available(&mut self, cx: &mut Context<'_>) -> Poll<Result<EventBatch, StoreError>>;

    /// The next event, waiting for one to commit if necessary. A subscription never ends; a
    /// failed read is returned as an error and the next call tries again from the same place.
    fn next_event(&mut self) -> impl Future<Output = Result<RecordedEvent, StoreError>> + Send
    where
        Self: Send + Sized,
    {
        poll_fn(move |cx| match ready!(Pin::new(&mut *self).poll_next(cx)) {
            Some(result) => Poll::Ready(result),
            None => Poll::Ready(Err(StoreError::Unavailable(
                "the subscription ended".into(),
            ))),
        })
    }

    /// The next batch (see [`poll_next_batch`](Self::poll_next_batch)).
    fn next_batch(&mut self) -> impl Future<Output = Result<EventBatch, StoreError>> + Send
    where
        Self: Send + Sized,
    {
        poll_fn(move |cx| self.poll_next_batch(cx))
    }

    /// The next batch of what is visible now, never waiting for new events to commit: empty
    /// when there is nothing new (see [`poll_available`](Self::poll_available)). It still takes
    /// one read of the store, and a store may take a moment to establish what is visible
    /// (PostgreSQL waits, up to its configured visibility wait, for older transactions that
    /// are still open). For tests and for polling loops of your own; a projection waits with
    /// [`next_batch`](Self::next_batch).
    fn read_available(&mut self) -> impl Future<Output = Result<EventBatch, StoreError>> + Send
    where
        Self: Send + Sized,
    {
        poll_fn(move |cx| self.poll_available(cx))
    }

    /// A stream of batches instead of single events.
    fn batches(self) -> Batches<Self>
    where
        Self: Sized,
    {
        Batches(self)
    }
}

/// A [`Stream`] of the [`EventBatch`]es of a subscription; see [`SubscriptionExt::batches`].
#[derive(Debug)]
pub struct Batches<T>(T);

impl<T> Batches<T> {
    /// The subscription, for its position.
    pub fn get_ref(&self) -> &T {
        &self.0
    }

    /// The subscription back.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: SubscriptionExt> Stream for Batches<T> {
    type Item = Result<EventBatch, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().0.poll_next_batch(cx).map(Some)
    }
}

/// What one read of the log found.
struct Fetched {
    events: Vec<RecordedEvent>,
    /// Everything at or before this has been read (returned, or scanned and filtered out).
    cursor: Position,
    /// Whether the read reached the visible end of the log.
    reached_end: bool,
}

/// The part of a subscription that reads: moved into each read's future and back.
struct Reader<S> {
    store: S,
    filter: LogFilter,
    batch_size: usize,
    max_wait: Duration,
    /// The last read filled its batch: the reader is catching up, far from the head.
    catching_up: bool,
}

type Fetch<S> = Pin<Box<dyn Future<Output = (Reader<S>, Result<Fetched, StoreError>)> + Send>>;

impl<S: EventStore + 'static> Reader<S> {
    async fn fetch(mut self, after: Position, wait: bool) -> (Self, Result<Fetched, StoreError>) {
        let result = self.read(after, wait).await;
        (self, result)
    }

    async fn read(&mut self, after: Position, wait: bool) -> Result<Fetched, StoreError> {
        if wait {
            self.store.wait_for_events(after, self.max_wait).await?;
        }
        // When the filter leaves events out, a read can scan far past the cursor and return
        // nothing; knowing the head first lets the cursor move past everything scanned, so that
        // waiting does not spin on events that will never be delivered. (Read before the log:
        // a head read after it could cover events the read did not see.) While the reads fill
        // their batches the cursor moves with the events anyway, so the head is read only once
        // a read comes back short: a catch-up pays no extra round trip per batch, and its end
        // costs one more read.
        let head = if self.filter.is_everything() || self.catching_up {
            None
        } else {
            Some(self.store.head_position().await?)
        };
        let events = self
            .store
            .read_all(after, self.batch_size, &self.filter)
            .await?;
        let reached_end = events.len() < self.batch_size;
        self.catching_up = !reached_end;
        let mut cursor = events.last().map_or(after, |e| e.position);
        if let Some(head) = head
            && reached_end
            && head > cursor
        {
            cursor = head;
        }
        Ok(Fetched {
            events,
            cursor,
            reached_end,
        })
    }
}

/// A subscription: delivers every matching event once, in global-log order, first catching up
/// then following new commits. Delivery is at-least-once across restarts: resume from
/// [`position`](Self::position) after the events you have processed.
///
/// It is a [`Stream`] that never ends: drop it (or use a combinator such as `take_until`) to
/// stop. A failed read is yielded as an error and polling again retries from the same place.
/// It holds at most one batch of events, and reads the next only when asked (back-pressure).
/// The store it reads is owned (stores are cheap to clone), so a subscription can move into a
/// spawned task.
///
/// ```
/// use crossfold_core::{EventStore, StoreError, SubscriptionExt, SubscriptionOptions};
///
/// /// Prints the log as it grows, one batch at a time.
/// async fn tail(store: impl EventStore + Clone + 'static) -> Result<(), StoreError> {
///     let mut subscription = store.subscribe(SubscriptionOptions::all().batch_size(100));
///     loop {
///         let batch = subscription.next_batch().await?;
///         println!("{} events, resume after {}", batch.events.len(), batch.position);
///     }
/// }
/// ```
pub struct Subscription<S> {
    /// `None` while a read is in flight (it owns the reader until it finishes).
    reader: Option<Reader<S>>,
    fetch: Option<Fetch<S>>,
    /// Everything at or before this has been read (delivered or buffered).
    cursor: Position,
    /// Position of the last event handed out (or the read cursor once the buffer drained).
    delivered: Position,
    buffer: VecDeque<RecordedEvent>,
    reached_end: bool,
    /// Whether the last read found nothing, so the next one waits for new events first.
    wait_next: bool,
}

// No field is ever pinned in place: reads are boxed futures.
impl<S> Unpin for Subscription<S> {}

impl<S> fmt::Debug for Subscription<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("position", &self.delivered)
            .field("read_up_to", &self.cursor)
            .field("buffered", &self.buffer.len())
            .field("reading", &self.fetch.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: EventStore + 'static> Subscription<S> {
    /// A subscription on `store` (usually made with [`EventStore::subscribe`]).
    pub fn new(store: S, options: SubscriptionOptions) -> Self {
        Self {
            reader: Some(Reader {
                store,
                filter: options.filter,
                batch_size: options.batch_size.max(1),
                max_wait: options.max_wait,
                catching_up: false,
            }),
            fetch: None,
            cursor: options.from,
            delivered: options.from,
            buffer: VecDeque::new(),
            reached_end: false,
            wait_next: false,
        }
    }

    fn pop(&mut self) -> Option<RecordedEvent> {
        let event = self.buffer.pop_front()?;
        self.delivered = if self.buffer.is_empty() {
            self.cursor
        } else {
            event.position
        };
        Some(event)
    }

    fn drain(&mut self) -> Vec<RecordedEvent> {
        self.delivered = self.cursor;
        self.buffer.drain(..).collect()
    }

    /// Drives one read of the log into the buffer.
    fn poll_fetch(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        let fetch = match &mut self.fetch {
            Some(fetch) => fetch,
            None => {
                let Some(reader) = self.reader.take() else {
                    // Unreachable: the reader is only away while a read is in flight.
                    return Poll::Ready(Err(StoreError::Backend(
                        "subscription has no reader".into(),
                    )));
                };
                self.fetch
                    .insert(Box::pin(reader.fetch(self.cursor, self.wait_next)))
            }
        };
        let (reader, result) = ready!(fetch.as_mut().poll(cx));
        self.fetch = None;
        self.reader = Some(reader);
        let fetched = result?;
        self.cursor = fetched.cursor;
        self.reached_end = fetched.reached_end;
        self.wait_next = fetched.events.is_empty();
        if fetched.events.is_empty() {
            self.delivered = self.cursor;
        }
        self.buffer.extend(fetched.events);
        Poll::Ready(Ok(()))
    }
}

impl<S: EventStore + 'static> Stream for Subscription<S> {
    type Item = Result<RecordedEvent, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.pop() {
                return Poll::Ready(Some(Ok(event)));
            }
            if let Err(error) = ready!(this.poll_fetch(cx)) {
                return Poll::Ready(Some(Err(error)));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.buffer.len(), None)
    }
}

impl<S: EventStore + 'static> SubscriptionExt for Subscription<S> {
    fn position(&self) -> Position {
        self.delivered
    }

    fn is_caught_up(&self) -> bool {
        self.reached_end && self.buffer.is_empty()
    }

    fn poll_available(&mut self, cx: &mut Context<'_>) -> Poll<Result<EventBatch, StoreError>> {
        if self.buffer.is_empty() {
            if self.fetch.is_none() {
                // Read what is there now rather than waiting for something new.
                self.wait_next = false;
            }
            ready!(self.poll_fetch(cx))?;
        }
        let events = self.drain();
        Poll::Ready(Ok(EventBatch {
            events,
            position: self.delivered,
        }))
    }

    fn poll_next_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<EventBatch, StoreError>> {
        loop {
            if !self.buffer.is_empty() {
                let events = self.drain();
                return Poll::Ready(Ok(EventBatch {
                    events,
                    position: self.delivered,
                }));
            }
            ready!(self.poll_fetch(cx))?;
        }
    }
}
