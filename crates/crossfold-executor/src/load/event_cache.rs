//! The cache of recently read or written stream events, which lets a command whose combination
//! of streams is new fold without reading streams the executor has seen before.

use crossfold_core::{RecordedEvent, StreamId, StreamVersion};

use crate::cache::ClockCache;

struct CachedStream {
    version: StreamVersion,
    events: Vec<RecordedEvent>,
    /// Approximate memory held, kept up to date as events are added.
    weight: usize,
}

impl CachedStream {
    fn new(version: StreamVersion, events: Vec<RecordedEvent>) -> Self {
        let weight = 64
            + events
                .iter()
                .map(RecordedEvent::approximate_size)
                .sum::<usize>();
        Self {
            version,
            events,
            weight,
        }
    }

    fn extend(&mut self, version: StreamVersion, events: &[RecordedEvent]) {
        self.weight += events
            .iter()
            .map(RecordedEvent::approximate_size)
            .sum::<usize>();
        self.events.extend_from_slice(events);
        self.version = version;
    }
}

pub(super) struct EventCache(ClockCache<StreamId, CachedStream>);

impl EventCache {
    pub(super) fn new(bytes: usize) -> Self {
        Self(ClockCache::new(bytes))
    }

    pub(super) fn is_enabled(&self) -> bool {
        self.0.is_enabled()
    }

    pub(super) fn used(&self) -> usize {
        self.0.used()
    }

    pub(super) fn clear(&self) {
        self.0.clear();
    }

    /// The version of a cached stream.
    pub(super) fn version(&self, id: &StreamId) -> Option<StreamVersion> {
        self.0.with(id, |s| s.version)
    }

    /// A copy of a cached stream's events, if the cache holds it at `version`.
    pub(super) fn events_at(
        &self,
        id: &StreamId,
        version: StreamVersion,
    ) -> Option<Vec<RecordedEvent>> {
        self.0
            .with(id, |s| (s.version == version).then(|| s.events.clone()))
            .flatten()
    }

    /// Caches a stream read whole.
    pub(super) fn insert(&self, id: StreamId, version: StreamVersion, events: Vec<RecordedEvent>) {
        let cached = CachedStream::new(version, events);
        let weight = cached.weight;
        self.0.insert(id, cached, weight);
    }

    /// Adds events written after `previous` to a cached stream, if the cache holds exactly
    /// that version (or the stream was empty); otherwise drops the stale entry.
    pub(super) fn extend(
        &self,
        id: &StreamId,
        previous: StreamVersion,
        events: Vec<RecordedEvent>,
    ) {
        if !self.0.is_enabled() || events.is_empty() {
            return;
        }
        let Some(last) = events.last().map(|e| e.stream_version) else {
            return;
        };
        let updated = self.0.with(id, |cached| {
            if cached.version == previous {
                cached.extend(last, &events);
                Some(cached.weight)
            } else {
                None
            }
        });
        match updated {
            Some(Some(weight)) => self.0.reweigh(id, weight),
            Some(None) => self.0.remove(id),
            None if previous.is_empty() => {
                let stream = CachedStream::new(last, events);
                let weight = stream.weight;
                self.0.insert(id.clone(), stream, weight);
            }
            None => {}
        }
    }

    /// Drops streams whose cached events may no longer be true.
    pub(super) fn forget<'s>(&self, ids: impl IntoIterator<Item = &'s StreamId>) {
        for id in ids {
            self.0.remove(id);
        }
    }
}
