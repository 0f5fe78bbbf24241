//! The global log: every event in commit order, with an index by event type.
//!
//! The log holds the events of each append as one shared batch, so that publishing an append
//! under the log lock is a single push of a pointer: the lock every writer shares stays
//! uncontended for as long as possible. Events inside a batch do not carry their positions
//! (they are only known under the lock); readers fill them in from the batch's first sequence
//! number.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crossfold_core::{EventType, Position, RecordedEvent};

use crate::chunked::ChunkedVec;

/// The events of one append, in request order, with placeholder positions.
pub(crate) type Batch = Arc<[RecordedEvent]>;

/// The position of the event with 1-based global sequence number `seq`.
///
/// Sequence numbers are handed out under the log lock in the same step that makes the events
/// visible, so sequence order is commit order and the commit component alone orders the log.
pub(crate) const fn position_of_seq(seq: u64) -> Position {
    Position::new(seq, 0)
}

/// The sequence number of the last event at or before `after`.
///
/// The event with sequence `s` sits at `(s, 0)`, which is greater than `(c, x)` exactly when
/// `s > c`, whatever `x` is, so any position (even one this store did not issue) maps to a
/// sequence number without a search.
pub(crate) const fn seq_at_or_before(after: Position) -> u64 {
    after.commit()
}

/// The event at `offset` of `batch`, whose first event has sequence number `start`, with its
/// position filled in.
pub(crate) fn materialize(batch: &Batch, offset: usize, start: u64) -> Option<RecordedEvent> {
    let mut event = batch.get(offset)?.clone();
    event.position = position_of_seq(start + offset as u64);
    Some(event)
}

#[derive(Debug)]
struct Entry {
    /// Sequence number of the batch's first event.
    start: u64,
    events: Batch,
}

/// Where an event of some type is: its batch (index in the log) and its place in the batch.
#[derive(Clone, Copy, Debug)]
struct TypeEntry {
    batch: usize,
    offset: u32,
}

/// Parts of batches cut out under the log's read lock, to be turned into events after it is
/// released.
#[derive(Debug, Default)]
pub(crate) struct Slices(Vec<(u64, Batch, Range<usize>)>);

impl Slices {
    /// The events, with positions, in order.
    pub(crate) fn into_events(self) -> Vec<RecordedEvent> {
        let count = self.0.iter().map(|(_, _, r)| r.len()).sum();
        let mut out = Vec::with_capacity(count);
        for (start, batch, range) in &self.0 {
            out.extend(range.clone().filter_map(|i| materialize(batch, i, *start)));
        }
        out
    }
}

/// Every event in commit order, indexed by type.
#[derive(Debug, Default)]
pub(crate) struct Log {
    batches: ChunkedVec<Entry>,
    len: u64,
    by_type: HashMap<EventType, ChunkedVec<TypeEntry>, foldhash::fast::RandomState>,
}

impl Log {
    /// Number of events.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Publishes a batch; returns the sequence number of its first event.
    pub(crate) fn push(&mut self, events: Batch) -> u64 {
        let start = self.len + 1;
        let batch = self.batches.len();
        // Batches usually hold runs of one type: look the type up once per run.
        let mut run_start = 0;
        while let Some(first) = events.get(run_start) {
            let event_type = &first.event_type;
            let run_end = events[run_start..]
                .iter()
                .position(|e| e.event_type != *event_type)
                .map_or(events.len(), |n| run_start + n);
            // Looked up before inserting: the type is almost always known, and the lookup
            // needs no clone of its name.
            let index = match self.by_type.get_mut(event_type.as_str()) {
                Some(index) => index,
                None => self.by_type.entry(event_type.clone()).or_default(),
            };
            for offset in run_start..run_end {
                index.push(TypeEntry {
                    batch,
                    offset: offset as u32,
                });
            }
            run_start = run_end;
        }
        self.len += events.len() as u64;
        self.batches.push(Entry { start, events });
        start
    }

    /// Up to `limit` events after `after`; events of system streams only if `system`.
    pub(crate) fn read(&self, after: Position, limit: usize, system: bool) -> Slices {
        let first = seq_at_or_before(after).saturating_add(1);
        if first > self.len || limit == 0 {
            return Slices::default();
        }
        // The batch holding `first`: the last one starting at or before it.
        let mut batch = self
            .batches
            .partition_point(|e| e.start <= first)
            .saturating_sub(1);
        let mut skip = 0;
        if let Some(entry) = self.batches.get(batch) {
            skip = usize::try_from(first - entry.start).unwrap_or(usize::MAX);
        }
        let wanted = |e: &RecordedEvent| system || !e.stream_id.is_system();
        let mut left = limit;
        let mut slices = Vec::new();
        while left > 0 {
            let Some(entry) = self.batches.get(batch) else {
                break;
            };
            // Runs of wanted events become slices; system events between them are skipped.
            let events = &entry.events;
            let mut i = skip;
            while i < events.len() && left > 0 {
                if !wanted(&events[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < events.len() && i - start < left && wanted(&events[i]) {
                    i += 1;
                }
                slices.push((entry.start, entry.events.clone(), start..i));
                left -= i - start;
            }
            skip = 0;
            batch += 1;
        }
        Slices(slices)
    }

    fn is_system(&self, entry: TypeEntry) -> bool {
        self.batches
            .get(entry.batch)
            .and_then(|b| b.events.get(entry.offset as usize))
            .is_some_and(|e| e.stream_id.is_system())
    }

    fn seq_of(&self, entry: TypeEntry) -> u64 {
        self.batches
            .get(entry.batch)
            .map_or(u64::MAX, |b| b.start + u64::from(entry.offset))
    }

    /// Up to `limit` events after `after` whose type is one of `types`, in log order, found
    /// through the type index rather than by scanning.
    pub(crate) fn read_types(
        &self,
        after: Position,
        limit: usize,
        types: &[EventType],
        system: bool,
    ) -> Slices {
        let after_seq = seq_at_or_before(after);
        let mut found: Vec<(u64, TypeEntry)> = Vec::new();
        let mut seen: Vec<&str> = Vec::with_capacity(types.len());
        for event_type in types {
            if seen.contains(&event_type.as_str()) {
                continue;
            }
            seen.push(event_type.as_str());
            if let Some(index) = self.by_type.get(event_type.as_str()) {
                let start = index.partition_point(|e| self.seq_of(*e) <= after_seq);
                found.extend(
                    index
                        .iter_from(start)
                        .filter(|e| system || !self.is_system(**e))
                        .take(limit)
                        .map(|e| (self.seq_of(*e), *e)),
                );
            }
        }
        if seen.len() > 1 {
            found.sort_unstable_by_key(|(seq, _)| *seq);
            found.truncate(limit);
        }
        Slices(
            found
                .into_iter()
                .filter_map(|(_, e)| {
                    let entry = self.batches.get(e.batch)?;
                    let offset = e.offset as usize;
                    Some((entry.start, entry.events.clone(), offset..offset + 1))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{EventData, EventId, Payload, StreamId, StreamVersion};

    /// A log of one batch per group of types.
    fn log_of(batches: &[&[&str]]) -> (Log, Vec<EventId>) {
        let mut log = Log::default();
        let stream = StreamId::new("s").unwrap();
        let mut ids = Vec::new();
        for types in batches {
            let batch: Vec<RecordedEvent> = types
                .iter()
                .map(|t| {
                    let data = EventData::new(*t, Payload::json(&b"{}"[..]));
                    ids.push(data.event_id);
                    data.record(stream.clone(), StreamVersion::new(1), Position::START)
                })
                .collect();
            log.push(Batch::from(batch));
        }
        (log, ids)
    }

    fn read_ids(slices: Slices) -> Vec<EventId> {
        slices.into_events().iter().map(|e| e.event_id).collect()
    }

    #[test]
    fn any_position_maps_to_a_sequence_number() {
        assert_eq!(seq_at_or_before(Position::START), 0);
        assert_eq!(seq_at_or_before(position_of_seq(3)), 3);
        assert_eq!(seq_at_or_before(Position::new(3, 99)), 3);
        assert!(position_of_seq(4) > Position::new(3, 99));
    }

    #[test]
    fn reads_pages_across_batches() {
        let (log, ids) = log_of(&[&["A", "B"], &["C"], &["D", "E", "F"]]);
        assert_eq!(log.len(), 6);
        for after in 0..=6u64 {
            for limit in 0..=7usize {
                let got = read_ids(log.read(position_of_seq(after), limit, true));
                let from = after as usize;
                let to = (from + limit).min(6);
                assert_eq!(got, ids[from..to.max(from)], "after {after}, limit {limit}");
            }
        }
        assert!(read_ids(log.read(position_of_seq(40), 10, true)).is_empty());
    }

    #[test]
    fn events_read_back_with_their_positions() {
        let (log, _) = log_of(&[&["A", "B"], &["C"]]);
        let positions: Vec<Position> = log
            .read(Position::START, 10, true)
            .into_events()
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(
            positions,
            vec![position_of_seq(1), position_of_seq(2), position_of_seq(3)]
        );
    }

    #[test]
    fn type_index_merges_types_in_log_order() {
        let (log, ids) = log_of(&[&["A", "B", "A"], &["C", "B", "A"]]);
        let types = [
            EventType::from("B"),
            EventType::from("A"),
            EventType::from("B"),
        ];
        let got = read_ids(log.read_types(position_of_seq(1), 3, &types, true));
        assert_eq!(got, vec![ids[1], ids[2], ids[4]]);
        let positions: Vec<Position> = log
            .read_types(Position::START, 10, &[EventType::from("A")], true)
            .into_events()
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(
            positions,
            vec![position_of_seq(1), position_of_seq(3), position_of_seq(6)]
        );
        assert!(
            read_ids(log.read_types(Position::START, 10, &[EventType::from("Z")], true)).is_empty()
        );
    }

    #[test]
    fn system_events_are_skipped_unless_asked_for() {
        let mut log = Log::default();
        let mut ids = Vec::new();
        let user = StreamId::new("s").unwrap();
        let system = StreamId::system("marker").unwrap();
        // Batches: [s, $, s], [$], [s, s]
        for streams in [&[&user, &system, &user][..], &[&system], &[&user, &user]] {
            let batch: Vec<RecordedEvent> = streams
                .iter()
                .map(|s| {
                    let data = EventData::new("A", Payload::json(&b"{}"[..]));
                    ids.push(data.event_id);
                    data.record((*s).clone(), StreamVersion::new(1), Position::START)
                })
                .collect();
            log.push(Batch::from(batch));
        }
        let users = [ids[0], ids[2], ids[4], ids[5]];
        assert_eq!(read_ids(log.read(Position::START, 10, false)), users);
        assert_eq!(read_ids(log.read(Position::START, 3, false)), users[..3]);
        assert_eq!(read_ids(log.read(position_of_seq(2), 1, false)), [ids[2]]);
        assert_eq!(read_ids(log.read(Position::START, 10, true)), ids);
        let types = [EventType::from("A")];
        assert_eq!(
            read_ids(log.read_types(Position::START, 3, &types, false)),
            users[..3]
        );
        assert_eq!(
            read_ids(log.read_types(Position::START, 10, &types, true)),
            ids
        );
    }
}
