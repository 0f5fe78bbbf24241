//! Checking that every stored event still decodes with today's event types and upcasters.
//!
//! Events are written once and read for years; the types that read them change. A change that
//! breaks the decoding of old events (a field renamed without an alias, an upcaster step
//! forgotten, a variant removed) is found only when a command, a subscription or a projection
//! meets such an event — in production, possibly months later. [`EventCheck`] reads the whole
//! log (or the part after a position) and decodes every event with the decoders it is given,
//! reporting each event that fails with its position, stream, version, type, schema version
//! and error. Run it in CI against a copy of production data, after every change of an event
//! type (`crossfold-testkit` has an assertion built on it).
//!
//! ```no_run
//! use crossfold_core::check::EventCheck;
//! use crossfold_core::{DomainEvent, EventStore, Json, LogFilter, StoreError, Upcasters};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum AccountEvent {
//!     Opened { owner: String },
//! }
//! impl DomainEvent for AccountEvent {
//!     fn event_type(&self) -> &'static str {
//!         "Opened"
//!     }
//! }
//!
//! async fn check(store: &impl EventStore, upcasters: Upcasters) -> Result<(), StoreError> {
//!     let report = EventCheck::new(store)
//!         .decode::<AccountEvent, _>(LogFilter::categories(["account"]), Json, upcasters)
//!         .run()
//!         .await?;
//!     assert!(report.is_clean(), "{report}");
//!     Ok(())
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;

use crate::codec::{Codec, DomainEvent, Upcasters};
use crate::error::{ErrorChain, StoreError};
use crate::event::RecordedEvent;
use crate::id::{EventId, StreamId};
use crate::store::{EventStore, LogFilter};
use crate::version::{Position, StreamVersion};

/// Events read from the log per call.
const DEFAULT_BATCH: usize = 1_000;

/// Failures kept in a report by default (all are counted).
const DEFAULT_KEEP: usize = 1_000;

type DecodeFn<'a> = Box<dyn Fn(&RecordedEvent) -> Result<(), String> + Send + Sync + 'a>;

type ProgressFn<'a> = Box<dyn FnMut(&CheckProgress) + Send + 'a>;

/// How far a check has come: passed to [`EventCheck::on_progress`] after each batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckProgress {
    /// Events read so far.
    pub read: u64,
    /// Events that failed so far.
    pub failed: u64,
    /// The position of the last event read.
    pub position: Position,
    /// The head of the log when the check started: where it stops.
    pub head: Position,
}

impl CheckProgress {
    /// About how much of the log has been read, from 0 to 1: by the positions' sequence, or
    /// by their commit where the store leaves the sequence at 0 (the memory store, whose
    /// commits count events). Positions are opaque; this is an estimate for progress bars.
    pub fn fraction(&self) -> f64 {
        let (at, end) = if self.head.sequence() > 0 {
            (self.position.sequence(), self.head.sequence())
        } else {
            (self.position.commit(), self.head.commit())
        };
        if end == 0 {
            return 1.0;
        }
        (at as f64 / end as f64).clamp(0.0, 1.0)
    }
}

/// A check of the stored events: which decoders apply to which events, and how to read.
pub struct EventCheck<'a, S> {
    store: &'a S,
    decoders: Vec<(LogFilter, DecodeFn<'a>)>,
    from: Position,
    batch: usize,
    keep: usize,
    progress: Option<ProgressFn<'a>>,
}

impl<'a, S: EventStore> EventCheck<'a, S> {
    /// A check of `store`'s whole log, with no decoder yet (every event would be reported as
    /// unchecked).
    pub fn new(store: &'a S) -> Self {
        Self {
            store,
            decoders: Vec::new(),
            from: Position::START,
            batch: DEFAULT_BATCH,
            keep: DEFAULT_KEEP,
            progress: None,
        }
    }

    /// Events that pass `filter` must decode as `E`, through `upcasters` as the executor,
    /// subscriptions and projections decode them. An event is decoded by the first decoder
    /// whose filter it passes, in the order they were added.
    pub fn decode<E: DomainEvent, C: Codec>(
        mut self,
        filter: LogFilter,
        codec: C,
        upcasters: Upcasters,
    ) -> Self {
        self.decoders.push((
            filter,
            Box::new(move |raw| {
                // A retired type the readers skip: nothing to decode.
                if upcasters.is_skipped(raw) {
                    return Ok(());
                }
                upcasters
                    .decode::<E, C>(&codec, raw)
                    .map(drop)
                    .map_err(|e| ErrorChain(&e).to_string())
            }),
        ));
        self
    }

    /// Events that pass `filter` must pass `check`, a decoder of the caller's own (for events
    /// read without a [`DomainEvent`] type, or with checks of their own).
    pub fn check_with(
        mut self,
        filter: LogFilter,
        check: impl Fn(&RecordedEvent) -> Result<(), String> + Send + Sync + 'a,
    ) -> Self {
        self.decoders.push((filter, Box::new(check)));
        self
    }

    /// Reads only the events after `position`.
    pub fn from(mut self, position: Position) -> Self {
        self.from = position;
        self
    }

    /// Reads this many events per call (at least one; default 1,000).
    pub fn batch(mut self, events: usize) -> Self {
        self.batch = events.max(1);
        self
    }

    /// Keeps at most this many failures in the report (default 1,000); all are counted.
    pub fn keep_failures(mut self, failures: usize) -> Self {
        self.keep = failures;
        self
    }

    /// Calls `progress` after each batch read.
    pub fn on_progress(mut self, progress: impl FnMut(&CheckProgress) + Send + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Reads the log up to its head as it is when the check starts and decodes every event
    /// (system streams, Crossfold's own records, are left out). Fails only when the store
    /// does; events that do not decode are in the report.
    pub async fn run(mut self) -> Result<CheckReport, StoreError> {
        let head = self.store.head_position().await?;
        let mut report = CheckReport {
            from: self.from,
            head,
            ..CheckReport::default()
        };
        let mut after = self.from;
        let everything = LogFilter::all();
        while after < head {
            let events = self.store.read_all(after, self.batch, &everything).await?;
            let Some(last) = events.last() else {
                break;
            };
            after = last.position;
            for event in events.iter().filter(|e| e.position <= head) {
                report.read += 1;
                let decoder = self
                    .decoders
                    .iter()
                    .find(|(filter, _)| filter.matches(event));
                let Some((_, decode)) = decoder else {
                    *report
                        .unchecked
                        .entry(event.event_type.as_str().to_owned())
                        .or_default() += 1;
                    continue;
                };
                if let Err(error) = decode(event) {
                    report.failed += 1;
                    if report.failures.len() < self.keep {
                        report.failures.push(DecodeFailure::new(event, error));
                    }
                }
            }
            if let Some(progress) = self.progress.as_mut() {
                progress(&CheckProgress {
                    read: report.read,
                    failed: report.failed,
                    position: after,
                    head,
                });
            }
            if events.len() < self.batch {
                break;
            }
        }
        Ok(report)
    }
}

/// One stored event that did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeFailure {
    /// Where it is in the log.
    pub position: Position,
    /// Its stream.
    pub stream: StreamId,
    /// Its version in the stream.
    pub version: StreamVersion,
    /// Its id.
    pub event_id: EventId,
    /// Its type as stored.
    pub event_type: String,
    /// The schema version it was written with.
    pub schema_version: u16,
    /// Why it did not decode, with its causes.
    pub error: String,
}

impl DecodeFailure {
    fn new(event: &RecordedEvent, error: String) -> Self {
        Self {
            position: event.position,
            stream: event.stream_id.clone(),
            version: event.stream_version,
            event_id: event.event_id,
            event_type: event.event_type.as_str().to_owned(),
            schema_version: event.schema_version,
            error,
        }
    }
}

impl fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}@{} {} (schema version {}, id {}): {}",
            self.position,
            self.stream,
            self.version,
            self.event_type,
            self.schema_version,
            self.event_id,
            self.error
        )
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Where the check started (exclusive).
    pub from: Position,
    /// The head of the log when it started: events after it were not read.
    pub head: Position,
    /// Events read.
    pub read: u64,
    /// Events that did not decode.
    pub failed: u64,
    /// The first of them (as many as the check keeps), in log order.
    pub failures: Vec<DecodeFailure>,
    /// Events no decoder applied to, counted by type: a type nobody reads any more, or a
    /// decoder the check was not given.
    pub unchecked: BTreeMap<String, u64>,
}

impl CheckReport {
    /// Whether every event read decoded and every one had a decoder.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.unchecked.is_empty()
    }

    /// Events no decoder applied to.
    pub fn unchecked_count(&self) -> u64 {
        self.unchecked.values().sum()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} event(s) read after {} up to {}: {} failed to decode, {} unchecked",
            self.read,
            self.from,
            self.head,
            self.failed,
            self.unchecked_count()
        )?;
        for failure in &self.failures {
            write!(f, "\n  {failure}")?;
        }
        if (self.failures.len() as u64) < self.failed {
            write!(
                f,
                "\n  ... and {} more",
                self.failed - self.failures.len() as u64
            )?;
        }
        for (event_type, count) in &self.unchecked {
            write!(f, "\n  unchecked: {count} event(s) of type {event_type}")?;
        }
        Ok(())
    }
}
