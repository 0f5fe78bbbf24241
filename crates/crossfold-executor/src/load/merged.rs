//! Per-combination commands: the state folded over the merged events of the whole read set,
//! cached by (command type, declared streams); on a miss it is folded from the event cache and
//! one store read. A stream that holds no event adds nothing to a fold, so the state of a
//! combination is also kept under the streams of it that hold events: a command that reads a
//! hot stream together with a fresh one (a counter and `invoice-<new id>`) starts from the hot
//! stream's state instead of refolding its history, and keeps that state up to date with what
//! it writes.

use crossfold_core::{Command, ReadSet, RecordedEvent, StreamId, StreamRead, StreamVersion};

use crate::error::Error;

use super::loader::{Backend, Loader, read_exactly};
use super::state_cache::StateKey;
use super::working::{Base, Working};

/// How many events of a stream the executor reads before it knows whether it needs them all.
const PEEK: usize = 64;

/// A stream of a read set being loaded: its version, and its events once they are copied out of
/// the event cache or read (`None` while they are only in the cache).
struct Gathered {
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

/// The cached state of the declared combination, if it is still the state of its streams.
pub(super) fn cached_combination<Cmd: Command>(
    loader: &Loader,
    command: &Cmd,
    declared: &ReadSet,
) -> Option<Working<Cmd::State>> {
    let metrics = loader.metrics();
    let entry = loader.states.take(&StateKey::combination::<Cmd>(declared));
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
        saved: entry.saved,
        load_time: None,
    })
}

/// Per-combination commands: fold the read set from merged events — cached streams,
/// streams assumed new, and one store read for the rest — then discover further streams
/// (refolding everything, to keep the merged order) until none are new. When some declared
/// streams hold no event, the state of the others may be cached already: then nothing is
/// folded at all.
pub(super) async fn load_merged<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    mut read_set: ReadSet,
    use_cache: bool,
) -> Result<Working<Cmd::State>, Error> {
    let mut streams: Vec<Gathered> = Vec::new();
    let mut work = Working::empty(ReadSet::default(), false);
    let mut pending: Vec<StreamId> = read_set.ids().to_vec();
    let mut rounds = 0;
    loop {
        gather(
            backend,
            command,
            &pending,
            use_cache,
            &mut streams,
            &mut work,
        )
        .await?;
        if rounds == 0
            && use_cache
            && let Some(reduced) =
                cached_reduced(backend.loader(), command, &read_set, &streams, &work)
        {
            return Ok(reduced);
        }
        let streams = materialize(backend, read_set.ids(), &mut streams, &mut work).await?;
        let mut merged: Vec<&RecordedEvent> = streams.iter().flat_map(|s| s.iter()).collect();
        merged.sort_by_key(|e| e.event_id);
        let mut state = Cmd::State::default();
        backend.loader().fold_into::<B::Codec, Cmd>(
            backend.codec(),
            &mut state,
            merged.iter().copied(),
        )?;
        work.floor = merged.last().map(|e| e.event_id);
        work.state = state;
        pending = read_set.discover(command.discover(&work.state));
        if pending.is_empty() {
            break;
        }
        rounds += 1;
        backend.loader().check_discovery_rounds(command, rounds)?;
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

/// Appends the streams `ids` to `out`: known from the event cache (only their version for
/// now: their events are copied out when they are folded), assumed new, or read from the
/// store in one call.
async fn gather<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    ids: &[StreamId],
    use_cache: bool,
    out: &mut Vec<Gathered>,
    work: &mut Working<Cmd::State>,
) -> Result<(), Error> {
    let metrics = backend.loader().metrics();
    let start = out.len();
    let mut reads = Vec::new();
    let mut slots = Vec::new();
    for id in ids {
        let cached = if use_cache {
            backend.loader().events.version(id)
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
    for (slot, stream) in slots
        .into_iter()
        .zip(read_exactly(backend.store(), &reads).await?)
    {
        let whole = stream.events.len() as u64 == stream.version.get();
        if whole && backend.loader().events.is_enabled() && !stream.version.is_empty() {
            backend
                .loader()
                .events
                .insert(stream.stream, stream.version, stream.events.clone());
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
async fn materialize<'g, B: Backend>(
    backend: &B,
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
        slot.events = backend.loader().events.events_at(id, slot.version);
        if slot.events.is_none() {
            slots.push(i);
            reads.push(StreamRead::all(id.clone()));
        }
    }
    if !reads.is_empty() {
        for (slot, stream) in slots
            .into_iter()
            .zip(read_exactly(backend.store(), &reads).await?)
        {
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

/// The view of a combination whose streams that hold events have a cached state of their
/// own (the rest being empty, they add nothing to it).
fn cached_reduced<Cmd: Command>(
    loader: &Loader,
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
    let entry = loader
        .states
        .take(&StateKey::reduced::<Cmd>(ids, &holding))?;
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
    loader.metrics().state_hit.increment(1);
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
        saved: 0,
        load_time: None,
    })
}
