//! An execution's view of its streams: where the folded state comes from (caches, assumptions,
//! the store), how it catches up after a conflict, and what is kept for the next command.
//!
//! Two ways to hold state:
//! * **per stream** — for commands whose state declares `PER_STREAM`: one folded part per stream,
//!   cached by (command type, stream) and merged for each execution. A new combination of
//!   known streams costs no read and no fold.
//! * **per combination** — for the rest: the state folded over the merged events of the whole
//!   read set, cached by (command type, declared streams); on a miss it is folded from the
//!   event cache and one store read. A stream that holds no event adds nothing to a fold, so
//!   the state of a combination is also kept under the streams of it that hold events: a
//!   command that reads a hot stream together with a fresh one (a counter and `invoice-<new
//!   id>`) starts from the hot stream's state instead of refolding its history, and keeps that
//!   state up to date with what it writes.
//!
//! Every cached or assumed version is checked by the append, so a wrong guess costs a conflict
//! and a catch-up read, never a wrong write.

use std::any::{Any, TypeId};

use crossfold_core::{
    Codec, Command, EventId, EventStore, Fold, ReadSet, RecordedEvent, StoreError, StreamConflict,
    StreamEvents, StreamId, StreamRead, StreamVersion,
};

use crate::error::Error;
use crate::executor::Executor;

/// Where a cached state belongs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum StateKey {
    /// The whole read set of a command type, by its declared streams.
    Combination(TypeId, Box<[StreamId]>),
    /// One stream's part, for a per-stream command type.
    Part(TypeId, StreamId),
}

pub(crate) struct StateEntry {
    state: Box<dyn Any + Send + Sync>,
    /// Streams found by discovery after the declared ones (combinations only).
    discovered: Vec<StreamId>,
    /// Versions the state reflects, of the read set (combinations only).
    versions: Vec<StreamVersion>,
    /// The version of the one stream a part reflects (parts only; kept out of `versions` so
    /// that caching a part after every command allocates no vector).
    version: StreamVersion,
    floor: Option<EventId>,
}

/// How many events of a stream the executor reads before it knows whether it needs them all.
const PEEK: usize = 64;

/// A stream of a read set being loaded: its version, and its events once they are copied out of
/// the event cache or read (`None` while they are only in the cache).
pub(crate) struct Gathered {
    version: StreamVersion,
    events: Option<Vec<RecordedEvent>>,
}

impl Gathered {
    fn empty() -> Self {
        Self {
            version: StreamVersion::EMPTY,
            events: Some(Vec::new()),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &RecordedEvent> {
        self.events.iter().flatten()
    }
}

pub(crate) struct CachedStream {
    pub(crate) version: StreamVersion,
    pub(crate) events: Vec<RecordedEvent>,
    /// Approximate memory held, kept up to date as events are added.
    pub(crate) weight: usize,
}

impl CachedStream {
    pub(crate) fn new(version: StreamVersion, events: Vec<RecordedEvent>) -> Self {
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

/// One stream's folded part and the highest event id in it.
pub(crate) struct Part<St> {
    pub(crate) state: St,
    pub(crate) floor: Option<EventId>,
}

/// The state of the streams of a combination that held events when it was loaded, kept beside
/// the state of the whole combination while the other streams were empty: the next command
/// that reads these streams with other empty ones starts from it.
pub(crate) struct Base<St> {
    /// Indices in the read set of the streams it covers.
    indices: Vec<usize>,
    state: St,
    floor: Option<EventId>,
}

/// One execution's view: its read set, the versions its state reflects, and the state.
pub(crate) struct Working<St> {
    pub(crate) read_set: ReadSet,
    pub(crate) versions: Vec<StreamVersion>,
    /// Streams taken to be empty without reading them (`Command::expects_new`), and not
    /// contradicted since.
    pub(crate) assumed: Vec<bool>,
    /// For per-stream commands, each stream's part, in read-set order.
    pub(crate) parts: Option<Vec<Part<St>>>,
    /// The state `handle` decides on (for per-stream commands, the merge of `parts`).
    pub(crate) state: St,
    /// The highest event id folded: new events get ids above it.
    pub(crate) floor: Option<EventId>,
    /// Whether the store showed every stream of the read set at these versions in one read
    /// (or one append) during this execution, so that the state is one that existed — rather
    /// than taken from a cache, assumed, or put together from reads made at different times.
    /// Only a decision on a verified view stands without being confirmed.
    pub(crate) verified: bool,
    /// Whether a per-combination state may be cached. Not when a stream was assumed new: such
    /// a combination of streams is unlikely to come again (its streams that hold events are
    /// kept in `base` instead).
    pub(crate) cacheable: bool,
    /// The state of the streams that held events, when the others were empty.
    pub(crate) base: Option<Base<St>>,
}

impl<St: Default> Working<St> {
    fn empty(read_set: ReadSet, per_stream: bool) -> Self {
        Self {
            read_set,
            versions: Vec::new(),
            assumed: Vec::new(),
            parts: per_stream.then(Vec::new),
            state: St::default(),
            floor: None,
            verified: true,
            cacheable: true,
            base: None,
        }
    }

    /// Folds an event of stream `index` (of the read set) into the base state too, if the base
    /// covers that stream. Events of the other streams do not concern it: it stays the state of
    /// its own streams.
    pub(crate) fn track_base<E>(
        &mut self,
        index: usize,
        event: &crossfold_core::Recorded<E>,
        apply: impl FnOnce(&mut St, &crossfold_core::Recorded<E>),
    ) {
        if let Some(base) = &mut self.base
            && base.indices.contains(&index)
        {
            apply(&mut base.state, event);
            base.floor = base.floor.max(Some(event.event_id));
        }
    }

    /// The state to decide on: the merged state, or the only part of a one-stream command
    /// (which needs no merging).
    pub(crate) fn decision_state(&self) -> &St {
        match &self.parts {
            Some(parts) if parts.len() == 1 => &parts[0].state,
            _ => &self.state,
        }
    }

    /// Rebuilds the state from the parts (per-stream commands only).
    pub(crate) fn merge_parts<Cmd: Command<State = St>>(&mut self)
    where
        St: Fold<Cmd::Event>,
    {
        if let Some(parts) = &self.parts {
            self.floor = parts.iter().filter_map(|p| p.floor).max();
            if parts.len() == 1 {
                return;
            }
            let mut state = St::default();
            for part in parts {
                state.merge(&part.state);
            }
            self.state = state;
        }
    }
}

pub(crate) enum Refresh {
    Unchanged,
    Changed,
    /// The view cannot be caught up incrementally; fold again from the store.
    Rebuild,
}

fn per_stream_key<Cmd: Command>(stream: &StreamId) -> StateKey {
    StateKey::Part(TypeId::of::<Cmd>(), stream.clone())
}

pub(crate) fn combination_key<Cmd: Command>(declared: &ReadSet) -> StateKey {
    StateKey::Combination(TypeId::of::<Cmd>(), declared.ids().into())
}

impl<S: EventStore, C: Codec> Executor<S, C> {
    /// The view to decide on: from the caches when `use_cache`, otherwise from the store.
    pub(crate) async fn load<Cmd: Command>(
        &self,
        command: &Cmd,
        declared: &ReadSet,
        use_cache: bool,
    ) -> Result<Working<Cmd::State>, Error> {
        if <Cmd::State as Fold<Cmd::Event>>::PER_STREAM {
            return self.load_parts(command, declared.clone(), use_cache).await;
        }
        if use_cache && let Some(work) = self.cached_combination(command, declared) {
            return Ok(work);
        }
        self.load_merged(command, declared.clone(), use_cache).await
    }

    fn cached_combination<Cmd: Command>(
        &self,
        command: &Cmd,
        declared: &ReadSet,
    ) -> Option<Working<Cmd::State>> {
        let metrics = self.inner.metrics.cache();
        let entry = self.inner.states.take(&combination_key::<Cmd>(declared));
        let Some(entry) = entry else {
            metrics.state_miss.increment(1);
            return None;
        };
        let state = entry.state.downcast::<Cmd::State>().ok()?;
        let mut read_set = declared.clone();
        read_set.discover(entry.discovered);
        if read_set.ids().len() != entry.versions.len() {
            return None;
        }
        let found = command.discover(&state);
        if !read_set.clone().discover(found).is_empty() {
            // The state now names streams it was not folded with: fold again.
            return None;
        }
        metrics.state_hit.increment(1);
        Some(Working {
            assumed: vec![false; read_set.ids().len()],
            read_set,
            versions: entry.versions,
            parts: None,
            state: *state,
            floor: entry.floor,
            verified: false,
            cacheable: true,
            base: None,
        })
    }

    /// Per-stream commands: one part per stream, from the cache, by assumption, or folded from
    /// one store read; then discovery adds parts until it names nothing new.
    async fn load_parts<Cmd: Command>(
        &self,
        command: &Cmd,
        mut read_set: ReadSet,
        use_cache: bool,
    ) -> Result<Working<Cmd::State>, Error> {
        let mut work = Working::empty(ReadSet::default(), true);
        let mut pending = read_set.ids().to_vec();
        let mut rounds = 0;
        loop {
            self.add_parts(command, &mut work, &pending, use_cache)
                .await?;
            work.merge_parts::<Cmd>();
            pending = read_set.discover(command.discover(work.decision_state()));
            if pending.is_empty() {
                work.read_set = read_set;
                return Ok(work);
            }
            rounds += 1;
            self.check_discovery_rounds(command, rounds)?;
            // The parts of discovered streams come from a later read than the others: the
            // view may mix two points of the log, so a decision on it must be confirmed.
            work.verified = false;
        }
    }

    async fn add_parts<Cmd: Command>(
        &self,
        command: &Cmd,
        work: &mut Working<Cmd::State>,
        ids: &[StreamId],
        use_cache: bool,
    ) -> Result<(), Error> {
        let metrics = self.inner.metrics.cache();
        let mut reads = Vec::new();
        let mut slots = Vec::new();
        for id in ids {
            let cached = if use_cache {
                self.inner
                    .states
                    .take(&per_stream_key::<Cmd>(id))
                    .and_then(|entry| {
                        let version = entry.version;
                        let state = entry.state.downcast::<Cmd::State>().ok()?;
                        Some((*state, version, entry.floor))
                    })
            } else {
                None
            };
            let parts = work.parts.get_or_insert_with(Vec::new);
            match cached {
                Some((state, version, floor)) => {
                    metrics.state_hit.increment(1);
                    parts.push(Part { state, floor });
                    work.versions.push(version);
                    work.assumed.push(false);
                    work.verified = false;
                }
                None if use_cache && command.expects_new(id) => {
                    parts.push(Part {
                        state: Cmd::State::default(),
                        floor: None,
                    });
                    work.versions.push(StreamVersion::EMPTY);
                    work.assumed.push(true);
                    work.verified = false;
                }
                None => {
                    if use_cache {
                        metrics.state_miss.increment(1);
                    }
                    slots.push(parts.len());
                    reads.push(StreamRead::all(id.clone()));
                    parts.push(Part {
                        state: Cmd::State::default(),
                        floor: None,
                    });
                    work.versions.push(StreamVersion::EMPTY);
                    work.assumed.push(false);
                }
            }
        }
        if reads.is_empty() {
            return Ok(());
        }
        let streams = self.read_exactly(&reads).await?;
        for (slot, stream) in slots.into_iter().zip(streams) {
            let mut part = Part {
                state: Cmd::State::default(),
                floor: None,
            };
            self.fold_into::<Cmd>(&mut part.state, &stream.events)?;
            part.floor = stream.events.last().map(|e| e.event_id);
            if let Some(parts) = work.parts.as_mut() {
                parts[slot] = part;
            }
            work.versions[slot] = stream.version;
        }
        Ok(())
    }

    /// Per-combination commands: fold the read set from merged events — cached streams,
    /// streams assumed new, and one store read for the rest — then discover further streams
    /// (refolding everything, to keep the merged order) until none are new. When some declared
    /// streams hold no event, the state of the others may be cached already: then nothing is
    /// folded at all.
    async fn load_merged<Cmd: Command>(
        &self,
        command: &Cmd,
        mut read_set: ReadSet,
        use_cache: bool,
    ) -> Result<Working<Cmd::State>, Error> {
        let mut streams: Vec<Gathered> = Vec::new();
        let mut work = Working::empty(ReadSet::default(), false);
        let mut pending: Vec<StreamId> = read_set.ids().to_vec();
        let mut rounds = 0;
        loop {
            self.gather(command, &pending, use_cache, &mut streams, &mut work)
                .await?;
            if rounds == 0
                && use_cache
                && let Some(reduced) = self.cached_reduced(command, &read_set, &streams, &work)
            {
                return Ok(reduced);
            }
            let streams = self
                .materialize(read_set.ids(), &mut streams, &mut work)
                .await?;
            let mut merged: Vec<&RecordedEvent> = streams.iter().flat_map(|s| s.iter()).collect();
            merged.sort_by_key(|e| e.event_id);
            let mut state = Cmd::State::default();
            self.fold_into::<Cmd>(&mut state, merged.iter().copied())?;
            work.floor = merged.last().map(|e| e.event_id);
            work.state = state;
            pending = read_set.discover(command.discover(&work.state));
            if pending.is_empty() {
                break;
            }
            rounds += 1;
            self.check_discovery_rounds(command, rounds)?;
            // Discovered streams are read later than the others: the view may mix two points
            // of the log, so a decision on it must be confirmed.
            work.verified = false;
        }
        work.versions = streams.iter().map(|s| s.version).collect();
        let holding: Vec<usize> = (0..streams.len())
            .filter(|&i| !streams[i].version.is_empty())
            .collect();
        work.cacheable = !work.assumed.contains(&true);
        // Without discovery the other streams are empty, so the state is that of these alone.
        if rounds == 0 && holding.len() < streams.len() && !holding.is_empty() {
            work.base = Some(Base {
                indices: holding,
                state: work.state.clone(),
                floor: work.floor,
            });
        }
        work.read_set = read_set;
        Ok(work)
    }

    /// The key of the state of the read set's streams at `indices`.
    fn reduced_key<Cmd: Command>(ids: &[StreamId], indices: &[usize]) -> StateKey {
        StateKey::Combination(
            TypeId::of::<Cmd>(),
            indices.iter().map(|&i| ids[i].clone()).collect(),
        )
    }

    /// The view of a combination whose streams that hold events have a cached state of their
    /// own (the rest being empty, they add nothing to it).
    fn cached_reduced<Cmd: Command>(
        &self,
        command: &Cmd,
        read_set: &ReadSet,
        streams: &[Gathered],
        work: &Working<Cmd::State>,
    ) -> Option<Working<Cmd::State>> {
        let ids = read_set.ids();
        let holding: Vec<usize> = (0..streams.len())
            .filter(|&i| !streams[i].version.is_empty())
            .collect();
        if holding.is_empty() || holding.len() == streams.len() || streams.len() != ids.len() {
            return None;
        }
        let entry = self
            .inner
            .states
            .take(&Self::reduced_key::<Cmd>(ids, &holding))?;
        if !entry.discovered.is_empty() || entry.versions.len() != holding.len() {
            return None;
        }
        let state = *entry.state.downcast::<Cmd::State>().ok()?;
        if !read_set
            .clone()
            .discover(command.discover(&state))
            .is_empty()
        {
            return None;
        }
        self.inner.metrics.cache().state_hit.increment(1);
        let mut versions = vec![StreamVersion::EMPTY; ids.len()];
        for (&i, &version) in holding.iter().zip(&entry.versions) {
            versions[i] = version;
        }
        Some(Working {
            read_set: read_set.clone(),
            versions,
            assumed: work.assumed.clone(),
            parts: None,
            state: state.clone(),
            floor: entry.floor,
            verified: false,
            cacheable: false,
            base: Some(Base {
                indices: holding,
                state,
                floor: entry.floor,
            }),
        })
    }
    fn check_discovery_rounds<Cmd: Command>(
        &self,
        command: &Cmd,
        rounds: u32,
    ) -> Result<(), Error> {
        if rounds > self.inner.max_discovery_rounds {
            return Err(Error::DiscoveryLimit {
                command: command.name(),
                rounds: self.inner.max_discovery_rounds,
            });
        }
        Ok(())
    }

    /// Appends the streams `ids` to `out`: known from the event cache (only their version for
    /// now: their events are copied out when they are folded), assumed new, or read from the
    /// store in one call.
    async fn gather<Cmd: Command>(
        &self,
        command: &Cmd,
        ids: &[StreamId],
        use_cache: bool,
        out: &mut Vec<Gathered>,
        work: &mut Working<Cmd::State>,
    ) -> Result<(), Error> {
        let metrics = self.inner.metrics.cache();
        let start = out.len();
        let mut reads = Vec::new();
        let mut slots = Vec::new();
        for id in ids {
            let cached = if use_cache {
                self.inner.streams.with(id, |s| s.version)
            } else {
                None
            };
            match cached {
                Some(version) => {
                    metrics.events_hit.increment(1);
                    work.verified = false;
                    work.assumed.push(false);
                    out.push(Gathered {
                        version,
                        events: None,
                    });
                }
                None if use_cache && command.expects_new(id) => {
                    work.verified = false;
                    work.assumed.push(true);
                    out.push(Gathered::empty());
                }
                None => {
                    if use_cache {
                        metrics.events_miss.increment(1);
                    }
                    slots.push(out.len());
                    // With the caches in play, only the start of a stream is read at first:
                    // a cached state may make its events unnecessary (a hot stream too big for
                    // the event cache must not be read whole for every command).
                    reads.push(StreamRead {
                        stream: id.clone(),
                        after: StreamVersion::EMPTY,
                        limit: if use_cache { PEEK } else { usize::MAX },
                    });
                    work.assumed.push(false);
                    out.push(Gathered::empty());
                }
            }
        }
        debug_assert!(out.len() - start == ids.len());
        if reads.is_empty() {
            return Ok(());
        }
        for (slot, stream) in slots.into_iter().zip(self.read_exactly(&reads).await?) {
            let whole = stream.events.len() as u64 == stream.version.get();
            if whole && self.inner.streams.is_enabled() && !stream.version.is_empty() {
                let cached = CachedStream::new(stream.version, stream.events.clone());
                let weight = cached.weight;
                self.inner.streams.insert(stream.stream, cached, weight);
            }
            out[slot] = Gathered {
                version: stream.version,
                events: Some(stream.events),
            };
        }
        Ok(())
    }

    /// Copies out of the event cache the events of gathered streams that are only known there;
    /// a stream evicted (or changed) meanwhile is read from the store instead.
    async fn materialize<'g>(
        &self,
        ids: &[StreamId],
        streams: &'g mut [Gathered],
        work: &mut Working<impl Sized>,
    ) -> Result<&'g [Gathered], Error> {
        let mut reads = Vec::new();
        let mut slots = Vec::new();
        for (i, (id, slot)) in ids.iter().zip(streams.iter_mut()).enumerate() {
            if let Some(events) = &slot.events {
                let read = events.len() as u64;
                if read < slot.version.get() {
                    // Only the start was read: the rest comes from a later read, so the
                    // streams no longer come from one snapshot.
                    slots.push(i);
                    reads.push(StreamRead::after(id.clone(), StreamVersion::new(read)));
                    work.verified = false;
                }
                continue;
            }
            let version = slot.version;
            slot.events = self
                .inner
                .streams
                .with(id, |s| (s.version == version).then(|| s.events.clone()))
                .flatten();
            if slot.events.is_none() {
                slots.push(i);
                reads.push(StreamRead::all(id.clone()));
            }
        }
        if !reads.is_empty() {
            for (slot, stream) in slots.into_iter().zip(self.read_exactly(&reads).await?) {
                let gathered = &mut streams[slot];
                match &mut gathered.events {
                    // The rest of a stream whose start was read.
                    Some(events) => events.extend(stream.events),
                    None => gathered.events = Some(stream.events),
                }
                gathered.version = stream.version;
            }
        }
        Ok(streams)
    }

    /// Reads streams, insisting the store answers each read.
    async fn read_exactly(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, Error> {
        // Attempts are counted by the caller, which re-wraps the error with them.
        let read = (self.inner.store.read_streams(reads).await).map_err(|e| Error::store(e, 0))?;
        if read.len() != reads.len() {
            return Err(Error::store(
                StoreError::Backend(
                    "store returned a different number of streams than were read".into(),
                ),
                0,
            ));
        }
        Ok(read)
    }

    /// Decodes events and folds them into `state`, in the order given.
    fn fold_into<'a, Cmd: Command>(
        &self,
        state: &mut Cmd::State,
        events: impl IntoIterator<Item = &'a RecordedEvent>,
    ) -> Result<(), Error> {
        for raw in events {
            let event = self
                .inner
                .upcasters
                .decode::<Cmd::Event, C>(&self.inner.codec, raw)?;
            state.apply(&event);
        }
        Ok(())
    }

    /// Reads what changed after the versions `work` reflects — after a conflict (`conflicts`
    /// names the streams that failed) or to confirm a decision (`None`) — and folds it in.
    ///
    /// Every stream of the read set is read, in one call, even after a conflict that named
    /// only some of them: `read_streams` is a snapshot, so the refreshed view shows all
    /// streams at versions that coexisted. Reading only the conflicting streams would pair
    /// their new versions with the others' old ones — a state that may never have existed
    /// (two streams always written together seen disagreeing), on which a refusal would be
    /// wrong.
    pub(crate) async fn refresh<Cmd: Command>(
        &self,
        command: &Cmd,
        work: &mut Working<Cmd::State>,
        conflicts: Option<&[StreamConflict]>,
    ) -> Result<Refresh, Error> {
        let ids = work.read_set.ids().to_vec();
        for c in conflicts.unwrap_or_default() {
            match ids.iter().position(|id| *id == c.stream) {
                // A conflict at the version the view shows (a store that refused for a
                // reason of its own) is caught up like any other: the read shows the truth.
                Some(i) if c.actual >= work.versions[i] => {}
                // Behind what we believed, or a stream we did not send: our view is wrong
                // somewhere; start over from the store.
                _ => return Ok(Refresh::Rebuild),
            }
        }
        let reads: Vec<StreamRead> = ids
            .iter()
            .zip(&work.versions)
            .map(|(id, version)| StreamRead::after(id.clone(), *version))
            .collect();
        let read = self.read_exactly(&reads).await?;
        if read
            .iter()
            .zip(&work.versions)
            .any(|(stream, version)| stream.version < *version)
        {
            return Ok(Refresh::Rebuild);
        }
        let mut changed: Vec<(usize, StreamVersion)> = Vec::new();
        let mut tail: Vec<(usize, RecordedEvent)> = Vec::new();
        for (i, stream) in read.into_iter().enumerate() {
            if stream.version != work.versions[i] {
                if work.parts.is_none() {
                    self.extend_cached_stream(&ids[i], work.versions[i], stream.events.clone());
                }
                changed.push((i, stream.version));
                tail.extend(stream.events.into_iter().map(|e| (i, e)));
            }
        }
        tail.sort_by_key(|(_, e)| e.event_id);
        // Everything is decoded before the view changes: an event that cannot be decoded
        // leaves the view as it was, a true fold of the versions it shows (it may be kept for
        // the next command), never versions ahead of its state.
        let decoded = tail
            .iter()
            .map(|(i, raw)| {
                let event = self
                    .inner
                    .upcasters
                    .decode::<Cmd::Event, C>(&self.inner.codec, raw)?;
                Ok((*i, event))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        for (i, version) in changed {
            work.versions[i] = version;
            work.assumed[i] = false;
        }
        work.verified = true;
        if decoded.is_empty() {
            return Ok(Refresh::Unchanged);
        }
        match work.parts.as_mut() {
            Some(parts) => {
                for (i, event) in &decoded {
                    parts[*i].state.apply(event);
                    parts[*i].floor = parts[*i].floor.max(Some(event.event_id));
                }
                work.merge_parts::<Cmd>();
            }
            None => {
                for (i, event) in &decoded {
                    work.state.apply(event);
                    work.track_base(*i, event, Fold::apply);
                }
                work.floor = work.floor.max(tail.last().map(|(_, e)| e.event_id));
            }
        }
        let found = work
            .read_set
            .clone()
            .discover(command.discover(work.decision_state()));
        if !found.is_empty() {
            if work.parts.is_none() {
                // Newly discovered streams must be merged into the fold in event-id order.
                return Ok(Refresh::Rebuild);
            }
            work.read_set.discover(found.iter().cloned());
            self.add_parts(command, work, &found, false).await?;
            work.merge_parts::<Cmd>();
            // The new parts come from a later read than the rest.
            work.verified = false;
        }
        Ok(Refresh::Changed)
    }

    /// Adds events written after `previous` to a cached stream, if the cache holds exactly
    /// that version (or the stream was empty); otherwise drops the stale entry.
    pub(crate) fn extend_cached_stream(
        &self,
        id: &StreamId,
        previous: StreamVersion,
        events: Vec<RecordedEvent>,
    ) {
        if !self.inner.streams.is_enabled() || events.is_empty() {
            return;
        }
        let Some(last) = events.last().map(|e| e.stream_version) else {
            return;
        };
        let updated = self.inner.streams.with(id, |cached| {
            if cached.version == previous {
                cached.extend(last, &events);
                Some(cached.weight)
            } else {
                None
            }
        });
        match updated {
            Some(Some(weight)) => self.inner.streams.reweigh(id, weight),
            Some(None) => self.inner.streams.remove(id),
            None if previous.is_empty() => {
                let stream = CachedStream::new(last, events);
                let weight = stream.weight;
                self.inner.streams.insert(id.clone(), stream, weight);
            }
            None => {}
        }
    }

    /// Keeps what this execution knows for the next command: each stream's part, or the state
    /// of the combination.
    pub(crate) fn keep<Cmd: Command>(&self, declared: &ReadSet, work: Working<Cmd::State>) {
        if !self.inner.states.is_enabled() {
            return;
        }
        let ids = work.read_set.ids();
        let overhead = |s: &StreamId| 48 + s.as_str().len();
        match work.parts {
            Some(parts) => {
                let size = std::mem::size_of::<Cmd::State>() + 96;
                for (i, part) in parts.into_iter().enumerate() {
                    // A part assumed empty was never checked; a fresh stream's part (like a
                    // transfer's own stream) is unlikely to be needed again.
                    if work.assumed[i] {
                        continue;
                    }
                    let entry = StateEntry {
                        state: Box::new(part.state),
                        discovered: Vec::new(),
                        versions: Vec::new(),
                        version: work.versions[i],
                        floor: part.floor,
                    };
                    // Another execution may have stored a newer part meanwhile; keep that one.
                    let version = work.versions[i];
                    self.inner.states.insert_unless(
                        per_stream_key::<Cmd>(&ids[i]),
                        entry,
                        size + overhead(&ids[i]),
                        |existing| existing.version > version,
                    );
                }
            }
            None => {
                if let Some(base) = work.base {
                    let weight = std::mem::size_of::<Cmd::State>()
                        + 96
                        + base
                            .indices
                            .iter()
                            .map(|&i| overhead(&ids[i]))
                            .sum::<usize>();
                    let key = Self::reduced_key::<Cmd>(ids, &base.indices);
                    let entry = StateEntry {
                        versions: base.indices.iter().map(|&i| work.versions[i]).collect(),
                        state: Box::new(base.state),
                        discovered: Vec::new(),
                        version: StreamVersion::EMPTY,
                        floor: base.floor,
                    };
                    self.inner.states.insert(key, entry, weight);
                }
                if work.cacheable {
                    let declared_len = declared.ids().len().min(ids.len());
                    let weight = std::mem::size_of::<Cmd::State>()
                        + 96
                        + ids.iter().map(overhead).sum::<usize>();
                    let entry = StateEntry {
                        discovered: ids[declared_len..].to_vec(),
                        state: Box::new(work.state),
                        versions: work.versions,
                        version: StreamVersion::EMPTY,
                        floor: work.floor,
                    };
                    self.inner
                        .states
                        .insert(combination_key::<Cmd>(declared), entry, weight);
                }
            }
        }
    }
}
