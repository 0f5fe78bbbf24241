//! The global log: every event in commit order, with indexes by event id and by event type.

use std::collections::HashMap;

use crossfold_core::{EventId, EventType, Position, RecordedEvent};

use crate::chunked::ChunkedVec;

/// Shards of the event-id index. A single map of millions of ids would rehash all of them at
/// once while the log lock is held; shards keep each rehash small.
const ID_SHARDS: usize = 64;

/// The position of the event with 1-based global sequence number `seq`.
///
/// Sequence numbers are handed out under the log lock in the same step that makes the event
/// visible, so sequence order is commit order and the commit component alone orders the log.
pub(crate) const fn position_of_seq(seq: u64) -> Position {
    Position::new(seq, 0)
}

/// The index in the log of the first event after `after`.
///
/// The event at index `i` sits at `(i + 1, 0)`, which is greater than `(c, s)` exactly when
/// `i >= c`, whatever `s` is, so any position (even one this store did not issue) maps to an
/// index without a search.
pub(crate) fn first_index_after(after: Position) -> usize {
    usize::try_from(after.commit()).unwrap_or(usize::MAX)
}

/// Every event in commit order, indexed.
#[derive(Debug)]
pub(crate) struct Log {
    events: ChunkedVec<RecordedEvent>,
    /// Event id → global sequence number, sharded by the id's low (random) bits.
    ids: Box<[HashMap<EventId, u64>]>,
    /// Event type → global sequence numbers of its events, ascending.
    by_type: HashMap<EventType, ChunkedVec<u64>>,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            events: ChunkedVec::default(),
            ids: (0..ID_SHARDS).map(|_| HashMap::new()).collect(),
            by_type: HashMap::new(),
        }
    }
}

fn id_shard(id: &EventId) -> usize {
    // The low bits of a UUIDv7 are its random counter, so they spread ids evenly.
    (id.as_uuid().as_u128() as usize) & (ID_SHARDS - 1)
}

impl Log {
    /// Number of events.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The global sequence number of a stored event.
    pub(crate) fn seq_of(&self, id: &EventId) -> Option<u64> {
        self.ids[id_shard(id)].get(id).copied()
    }

    /// The first of `ids` that is already stored.
    pub(crate) fn find_stored<'a>(
        &self,
        mut ids: impl Iterator<Item = &'a EventId>,
    ) -> Option<EventId> {
        ids.find(|id| self.seq_of(id).is_some()).copied()
    }

    /// Appends events whose positions are already set to the next sequence numbers.
    pub(crate) fn push(&mut self, event: RecordedEvent) {
        let seq = event.position.commit();
        self.ids[id_shard(&event.event_id)].insert(event.event_id, seq);
        match self.by_type.get_mut(event.event_type.as_str()) {
            Some(seqs) => seqs.push(seq),
            None => {
                let mut seqs = ChunkedVec::default();
                seqs.push(seq);
                self.by_type.insert(event.event_type.clone(), seqs);
            }
        }
        self.events.push(event);
    }

    /// Up to `limit` events after `after`.
    pub(crate) fn read(&self, after: Position, limit: usize) -> Vec<RecordedEvent> {
        let start = first_index_after(after);
        let count = self.len().saturating_sub(start).min(limit);
        let mut out = Vec::with_capacity(count);
        out.extend(self.events.iter_from(start).take(count).cloned());
        out
    }

    /// Up to `limit` events after `after` whose type is one of `types`, in log order, found
    /// through the type index rather than by scanning.
    pub(crate) fn read_types(
        &self,
        after: Position,
        limit: usize,
        types: &[EventType],
    ) -> Vec<RecordedEvent> {
        let after_seq = after.commit();
        let mut seqs: Vec<u64> = Vec::new();
        let mut seen: Vec<&str> = Vec::with_capacity(types.len());
        for event_type in types {
            if seen.contains(&event_type.as_str()) {
                continue;
            }
            seen.push(event_type.as_str());
            if let Some(index) = self.by_type.get(event_type.as_str()) {
                let start = index.partition_point(|&seq| seq <= after_seq);
                seqs.extend(index.iter_from(start).take(limit).copied());
            }
        }
        if seen.len() > 1 {
            seqs.sort_unstable();
            seqs.truncate(limit);
        }
        seqs.iter()
            .filter_map(|&seq| {
                let index = usize::try_from(seq).ok()?.checked_sub(1)?;
                self.events.get(index).cloned()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{EventData, Payload, StreamId, StreamVersion};

    fn log_of(types: &[&str]) -> (Log, Vec<EventId>) {
        let mut log = Log::default();
        let stream = StreamId::new("s").unwrap();
        let mut ids = Vec::new();
        for (i, t) in types.iter().enumerate() {
            let seq = i as u64 + 1;
            let data = EventData::new(*t, Payload::json(&b"{}"[..]));
            ids.push(data.event_id);
            log.push(data.record(
                stream.clone(),
                StreamVersion::new(seq),
                position_of_seq(seq),
            ));
        }
        (log, ids)
    }

    #[test]
    fn any_position_maps_to_the_next_index() {
        assert_eq!(first_index_after(Position::START), 0);
        assert_eq!(first_index_after(position_of_seq(3)), 3);
        assert_eq!(first_index_after(Position::new(3, 99)), 3);
        assert!(position_of_seq(4) > Position::new(3, 99));
    }

    #[test]
    fn reads_pages_of_the_log() {
        let (log, ids) = log_of(&["A", "B", "C", "D"]);
        let page: Vec<_> = log
            .read(position_of_seq(1), 2)
            .iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(page, ids[1..3]);
        assert!(log.read(position_of_seq(4), 10).is_empty());
        assert!(log.read(position_of_seq(40), 10).is_empty());
        assert!(log.read(Position::START, 0).is_empty());
    }

    #[test]
    fn type_index_merges_types_in_log_order() {
        let (log, ids) = log_of(&["A", "B", "A", "C", "B", "A"]);
        let types = [
            EventType::from("B"),
            EventType::from("A"),
            EventType::from("B"),
        ];
        let got: Vec<_> = log
            .read_types(position_of_seq(1), 3, &types)
            .iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(got, vec![ids[1], ids[2], ids[4]]);
        assert!(
            log.read_types(Position::START, 10, &[EventType::from("Z")])
                .is_empty()
        );
    }

    #[test]
    fn finds_stored_ids() {
        let (log, ids) = log_of(&["A", "B"]);
        let fresh = EventId::generate();
        assert_eq!(log.find_stored([fresh, ids[1]].iter()), Some(ids[1]));
        assert_eq!(log.find_stored([fresh].iter()), None);
        assert_eq!(log.seq_of(&ids[0]), Some(1));
    }
}
