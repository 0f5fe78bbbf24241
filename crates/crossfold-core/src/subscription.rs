//! Pull-based subscriptions over any [`EventStore`]: catch up in batches, then follow live.

use std::collections::VecDeque;
use std::time::Duration;

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
    /// Which events to deliver.
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
    /// Every event, from the beginning.
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

/// A subscription: delivers every matching event once, in global-log order, first catching up
/// then following new commits. Delivery is at-least-once across restarts: resume from
/// [`position`](Self::position) after the events you have processed.
#[derive(Debug)]
pub struct Subscription<S> {
    store: S,
    options: SubscriptionOptions,
    /// Everything at or before this has been fetched (delivered or buffered).
    cursor: Position,
    /// Position of the last event handed out (or the scanned cursor once the buffer drained).
    delivered: Position,
    buffer: VecDeque<RecordedEvent>,
    caught_up: bool,
}

impl<S: EventStore> Subscription<S> {
    /// A subscription on `store`.
    pub fn new(store: S, options: SubscriptionOptions) -> Self {
        let options = SubscriptionOptions {
            batch_size: options.batch_size.max(1),
            ..options
        };
        Self {
            store,
            cursor: options.from,
            delivered: options.from,
            options,
            buffer: VecDeque::new(),
            caught_up: false,
        }
    }

    /// The checkpoint to resume from: every matching event at or before it has been delivered.
    pub fn position(&self) -> Position {
        self.delivered
    }

    /// Whether the last read found nothing more to fetch (the subscription is live).
    pub fn is_caught_up(&self) -> bool {
        self.caught_up && self.buffer.is_empty()
    }

    /// The next event, waiting for one to commit if necessary.
    pub async fn next(&mut self) -> Result<RecordedEvent, StoreError> {
        loop {
            if let Some(event) = self.pop() {
                return Ok(event);
            }
            self.fetch_or_wait().await?;
        }
    }

    /// The next batch (at least one event, at most `batch_size`), waiting if necessary.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        loop {
            let batch = self.drain();
            if !batch.is_empty() {
                return Ok(batch);
            }
            self.fetch_or_wait().await?;
        }
    }

    /// The next batch without waiting: empty when there is nothing new right now.
    pub async fn poll_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        if self.buffer.is_empty() {
            self.fetch().await?;
        }
        Ok(self.drain())
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
        if self.buffer.is_empty() {
            self.delivered = self.cursor;
            return Vec::new();
        }
        self.delivered = self.cursor;
        self.buffer.drain(..).collect()
    }

    async fn fetch_or_wait(&mut self) -> Result<(), StoreError> {
        if !self.fetch().await? {
            self.store
                .wait_for_events(self.cursor, self.options.max_wait)
                .await?;
        }
        Ok(())
    }

    /// Reads the next batch into the buffer. Returns whether anything was buffered.
    async fn fetch(&mut self) -> Result<bool, StoreError> {
        // With a filter, a read can scan far past the cursor and return nothing; knowing the
        // head first lets the cursor move past everything scanned, so waiting does not spin.
        let head = if self.options.filter.is_all() {
            None
        } else {
            Some(self.store.head_position().await?)
        };
        let limit = self.options.batch_size;
        let events = self
            .store
            .read_all(self.cursor, limit, &self.options.filter)
            .await?;
        let full = events.len() >= limit;
        if let Some(last) = events.last() {
            self.cursor = last.position;
        }
        if let Some(head) = head
            && !full
            && head > self.cursor
        {
            self.cursor = head;
        }
        self.caught_up = !full;
        let any = !events.is_empty();
        self.buffer.extend(events);
        if !any {
            self.delivered = self.cursor;
        }
        Ok(any)
    }
}
