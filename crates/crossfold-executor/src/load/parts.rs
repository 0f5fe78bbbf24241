//! Per-stream commands (their state declares `PER_STREAM`): one folded part per stream, cached
//! by (command type, stream) and merged for each execution, so that a new combination of known
//! streams costs no read and no fold.

use crossfold_core::{Command, ReadSet, StreamId, StreamRead, StreamVersion};

use crate::error::Error;

use super::loader::{Backend, read_exactly};
use super::snapshot;
use super::state_cache::StateKey;
use super::working::{Part, Working};

/// Per-stream commands: one part per stream, from the cache, by assumption, or folded from
/// one store read; then discovery adds parts until it names nothing new.
pub(super) async fn load_parts<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    mut read_set: ReadSet,
    use_cache: bool,
) -> Result<Working<Cmd::State>, Error> {
    let mut work = Working::empty(ReadSet::default(), true);
    let mut pending = read_set.ids().to_vec();
    let mut rounds = 0;
    loop {
        add_parts(backend, command, &mut work, &pending, use_cache).await?;
        work.merge_parts::<Cmd>();
        pending = read_set.discover(command.discover(work.decision_state()));
        if pending.is_empty() {
            work.read_set = read_set;
            return Ok(work);
        }
        rounds += 1;
        backend.loader().check_discovery_rounds(command, rounds)?;
        // The parts of discovered streams come from a later read than the others: the
        // view may mix two points of the log, so a decision on it must be confirmed.
        work.verified = false;
    }
}

pub(super) async fn add_parts<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    work: &mut Working<Cmd::State>,
    ids: &[StreamId],
    use_cache: bool,
) -> Result<(), Error> {
    let metrics = backend.loader().metrics();
    let mut reads = Vec::new();
    let mut slots = Vec::new();
    for id in ids {
        let cached = if use_cache {
            backend
                .loader()
                .states
                .take(&StateKey::part::<Cmd>(id))
                .and_then(|entry| {
                    let version = entry.version;
                    let state = entry.state.downcast::<Cmd::State>().ok()?;
                    Some((*state, version, entry.floor, entry.saved))
                })
        } else {
            None
        };
        let parts = work.parts.get_or_insert_with(Vec::new);
        match cached {
            Some((state, version, floor, saved)) => {
                metrics.state_hit.increment(1);
                parts.push(Part {
                    state,
                    floor,
                    saved: StreamVersion::new(saved),
                });
                work.versions.push(version);
                work.assumed.push(false);
                work.verified = false;
            }
            None if use_cache && command.expects_new(id) => {
                parts.push(Part::empty());
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
                parts.push(Part::empty());
                work.versions.push(StreamVersion::EMPTY);
                work.assumed.push(false);
            }
        }
    }
    if reads.is_empty() {
        return Ok(());
    }
    // Parts kept in snapshots start from the latest one: only the events after it are read.
    let mut starts = Vec::new();
    if use_cache && let Some(found) = snapshot::parts::<B, Cmd>(backend, &reads).await {
        for (read, start) in reads.iter_mut().zip(&found) {
            if let Some((_, version)) = start {
                read.after = *version;
            }
        }
        starts = found;
    }
    // At most two rounds: a snapshot ahead of its stream is dropped and the stream read whole.
    while !reads.is_empty() {
        let streams = read_exactly(backend.store(), &reads).await?;
        let mut again = (Vec::new(), Vec::new());
        for (k, (slot, stream)) in slots.iter().copied().zip(streams).enumerate() {
            let mut part = match starts.get_mut(k).and_then(Option::take) {
                Some((part, version)) if stream.version >= version => {
                    count_snapshot::<B, Cmd>(backend, "loaded");
                    part
                }
                Some(_) => {
                    count_snapshot::<B, Cmd>(backend, "invalid");
                    again.0.push(slot);
                    again.1.push(StreamRead::all(stream.stream));
                    continue;
                }
                None => Part::empty(),
            };
            backend.loader().fold_into::<B::Codec, Cmd>(
                backend.codec(),
                &mut part.state,
                &stream.events,
            )?;
            part.floor = part.floor.max(stream.events.last().map(|e| e.event_id));
            if let Some(parts) = work.parts.as_mut() {
                parts[slot] = part;
            }
            work.versions[slot] = stream.version;
        }
        if !again.0.is_empty() {
            // Read later than the others: the view may mix two points of the log.
            work.verified = false;
        }
        (slots, reads) = again;
        starts.clear();
    }
    Ok(())
}

fn count_snapshot<B: Backend, Cmd: Command>(backend: &B, outcome: &'static str) {
    if let Some((_, format)) = backend.loader().snapshot_format::<Cmd::State>() {
        format.count(outcome);
    }
}
