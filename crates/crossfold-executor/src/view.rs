//! An execution's view of its streams: where the folded state comes from (caches, assumptions,
//! the store), how it catches up after a conflict, and what is kept for the next command.
//!
//! Two ways to hold state:
//! * **per stream** — for commands that declare `PER_STREAM`: one folded part per stream,
//!   cached by (command type, stream) and merged for each execution. A new combination of
//!   known streams costs no read and no fold.
//! * **per combination** — for the rest: the state folded over the merged events of the whole
//!   read set, cached by (command type, declared streams); on a miss it is folded from the
//!   event cache and one store read.
//!
//! Every cached or assumed version is checked by the append, so a wrong guess costs a conflict
//! and a catch-up read, never a wrong write.

use std::any::{Any, TypeId};

use crossfold_core::{
    Codec, Command, Error, EventId, EventStore, ReadSet, RecordedEvent, StreamConflict,
    StreamEvents, StreamId, StreamRead, StreamVersion,
};

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

    fn empty() -> Self {
        Self::new(StreamVersion::EMPTY, Vec::new())
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
    /// Whether every version was confirmed by the store during this execution (rather than
    /// taken from a cache or assumed).
    pub(crate) verified: bool,
    /// Whether a per-combination state may be cached. Not when a stream was assumed new: such
    /// a combination of streams is unlikely to come again.
    pub(crate) cacheable: bool,
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
    pub(crate) fn merge_parts<Cmd: Command<State = St>>(&mut self) {
        if let Some(parts) = &self.parts {
            self.floor = parts.iter().filter_map(|p| p.floor).max();
            if parts.len() == 1 {
                return;
            }
            let mut state = St::default();
            for part in parts {
                Cmd::merge(&mut state, &part.state);
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
        if Cmd::PER_STREAM {
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
    /// (refolding everything, to keep the merged order) until none are new.
    async fn load_merged<Cmd: Command>(
        &self,
        command: &Cmd,
        mut read_set: ReadSet,
        use_cache: bool,
    ) -> Result<Working<Cmd::State>, Error> {
        let mut streams: Vec<CachedStream> = Vec::new();
        let mut work = Working::empty(ReadSet::default(), false);
        let mut pending: Vec<StreamId> = read_set.ids().to_vec();
        let mut rounds = 0;
        loop {
            self.gather(command, &pending, use_cache, &mut streams, &mut work)
                .await?;
            let mut merged: Vec<&RecordedEvent> = streams.iter().flat_map(|s| &s.events).collect();
            merged.sort_by_key(|e| e.event_id);
            let mut state = Cmd::State::default();
            self.fold_into::<Cmd>(&mut state, merged.iter().copied())?;
            work.floor = merged.last().map(|e| e.event_id);
            work.state = state;
            pending = read_set.discover(command.discover(&work.state));
            if pending.is_empty() {
                work.versions = streams.iter().map(|s| s.version).collect();
                work.cacheable = !work.assumed.contains(&true);
                work.read_set = read_set;
                return Ok(work);
            }
            rounds += 1;
            self.check_discovery_rounds(command, rounds)?;
        }
    }

    fn check_discovery_rounds<Cmd: Command>(
        &self,
        command: &Cmd,
        rounds: u32,
    ) -> Result<(), Error> {
        if rounds > self.inner.max_discovery_rounds {
            return Err(Error::InvalidState(format!(
                "command {} kept discovering new streams after {} rounds",
                command.name(),
                self.inner.max_discovery_rounds
            )));
        }
        Ok(())
    }

    /// Appends the contents of `ids` to `out`: from the event cache, by assumption, or from one
    /// store read.
    async fn gather<Cmd: Command>(
        &self,
        command: &Cmd,
        ids: &[StreamId],
        use_cache: bool,
        out: &mut Vec<CachedStream>,
        work: &mut Working<Cmd::State>,
    ) -> Result<(), Error> {
        let metrics = self.inner.metrics.cache();
        let start = out.len();
        let mut reads = Vec::new();
        let mut slots = Vec::new();
        for id in ids {
            let cached = if use_cache {
                self.inner
                    .streams
                    .with(id, |s| CachedStream::new(s.version, s.events.clone()))
            } else {
                None
            };
            match cached {
                Some(stream) => {
                    metrics.events_hit.increment(1);
                    work.verified = false;
                    work.assumed.push(false);
                    out.push(stream);
                }
                None if use_cache && command.expects_new(id) => {
                    work.verified = false;
                    work.assumed.push(true);
                    out.push(CachedStream::empty());
                }
                None => {
                    if use_cache {
                        metrics.events_miss.increment(1);
                    }
                    slots.push(out.len());
                    reads.push(StreamRead::all(id.clone()));
                    work.assumed.push(false);
                    out.push(CachedStream::empty());
                }
            }
        }
        debug_assert!(out.len() - start == ids.len());
        if reads.is_empty() {
            return Ok(());
        }
        for (slot, stream) in slots.into_iter().zip(self.read_exactly(&reads).await?) {
            let fetched = CachedStream::new(stream.version, stream.events);
            if self.inner.streams.is_enabled() && !fetched.version.is_empty() {
                let weight = fetched.weight;
                self.inner.streams.insert(
                    stream.stream,
                    CachedStream::new(fetched.version, fetched.events.clone()),
                    weight,
                );
            }
            out[slot] = fetched;
        }
        Ok(())
    }

    /// Reads streams, insisting the store answers each read.
    async fn read_exactly(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, Error> {
        let read = self.inner.store.read_streams(reads).await?;
        if read.len() != reads.len() {
            return Err(Error::InvalidState(
                "store returned a different number of streams than were read".into(),
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
            Cmd::apply(state, &event);
        }
        Ok(())
    }

    /// Reads what changed after the versions `work` reflects — for the conflicting streams,
    /// or for all streams when `conflicts` is `None` — and folds it in.
    pub(crate) async fn refresh<Cmd: Command>(
        &self,
        command: &Cmd,
        work: &mut Working<Cmd::State>,
        conflicts: Option<&[StreamConflict]>,
    ) -> Result<Refresh, Error> {
        let ids = work.read_set.ids().to_vec();
        let indices: Vec<usize> = match conflicts {
            Some(conflicts) => {
                let mut indices = Vec::with_capacity(conflicts.len());
                for c in conflicts {
                    match ids.iter().position(|id| *id == c.stream) {
                        Some(i) if c.actual > work.versions[i] => indices.push(i),
                        // Behind what we believed, or a stream we did not send: our view is
                        // wrong somewhere; start over from the store.
                        _ => return Ok(Refresh::Rebuild),
                    }
                }
                indices
            }
            None => (0..ids.len()).collect(),
        };
        let reads: Vec<StreamRead> = indices
            .iter()
            .map(|&i| StreamRead::after(ids[i].clone(), work.versions[i]))
            .collect();
        let read = self.read_exactly(&reads).await?;
        let mut tail: Vec<(usize, RecordedEvent)> = Vec::new();
        for (&i, stream) in indices.iter().zip(read) {
            if stream.version < work.versions[i] {
                return Ok(Refresh::Rebuild);
            }
            if stream.version != work.versions[i] {
                if work.parts.is_none() {
                    self.extend_cached_stream(&ids[i], work.versions[i], stream.events.clone());
                }
                tail.extend(stream.events.into_iter().map(|e| (i, e)));
                work.versions[i] = stream.version;
                work.assumed[i] = false;
            }
        }
        work.verified = true;
        if tail.is_empty() {
            return Ok(Refresh::Unchanged);
        }
        tail.sort_by_key(|(_, e)| e.event_id);
        match work.parts.as_mut() {
            Some(parts) => {
                for (i, raw) in &tail {
                    let event = self
                        .inner
                        .upcasters
                        .decode::<Cmd::Event, C>(&self.inner.codec, raw)?;
                    Cmd::apply(&mut parts[*i].state, &event);
                    parts[*i].floor = parts[*i].floor.max(Some(raw.event_id));
                }
                work.merge_parts::<Cmd>();
            }
            None => {
                self.fold_into::<Cmd>(&mut work.state, tail.iter().map(|(_, e)| e))?;
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
            None if work.cacheable => {
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
            None => {}
        }
    }
}
