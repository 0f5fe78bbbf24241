//! Snapshots on the way in and out: a view whose state is in no cache starts from the latest
//! snapshot and the events after it; a view kept for the next command leaves a snapshot when
//! its state's policy says one is due.
//!
//! A snapshot is trusted no more than a cached state: it names the version of every stream it
//! reflects, the events after those versions are read and folded onto it, and the append checks
//! every version as always.

use crossfold_core::{Command, ReadSet, StreamId, StreamRead, StreamVersion};

use crate::error::Error;
use crate::snapshots::{Format, Keeper};

use super::loader::Backend;
use super::refresh::{Refresh, refresh_above};
use super::working::{Part, Working};

/// The snapshots of the per-stream parts the reads are for, in order (each with the version it
/// reflects), or `None` (having allocated nothing) when this state is not kept in snapshots.
#[allow(clippy::type_complexity, reason = "one use, next to its only caller")]
pub(super) async fn parts<B: Backend, Cmd: Command>(
    backend: &B,
    reads: &[StreamRead],
) -> Option<Vec<Option<(Part<Cmd::State>, StreamVersion)>>> {
    let (keeper, format) = backend.loader().snapshot_format::<Cmd::State>()?;
    let keys: Vec<Vec<StreamId>> = reads.iter().map(|r| vec![r.stream.clone()]).collect();
    let found = keeper.load(format, &keys).await;
    Some(
        found
            .into_iter()
            .zip(&keys)
            .map(|(snapshot, key)| {
                let snapshot = snapshot?;
                if snapshot.streams != *key
                    || !snapshot.discovered.is_empty()
                    || snapshot.versions.len() != 1
                {
                    format.count("invalid");
                    return None;
                }
                let version = snapshot.versions[0];
                let state = format.read::<Cmd::State>(&snapshot)?;
                let part = Part {
                    state,
                    floor: snapshot.floor,
                    saved: version,
                };
                Some((part, version))
            })
            .collect(),
    )
}

/// The view of the declared streams from their snapshot and the events after it, read in one
/// call; `None` when there is no usable snapshot (the caller folds from the events).
pub(super) async fn combination<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    declared: &ReadSet,
) -> Result<Option<Working<Cmd::State>>, Error> {
    let Some((keeper, format)) = backend.loader().snapshot_format::<Cmd::State>() else {
        return Ok(None);
    };
    // A combination with a stream named after a fresh id is never seen again: no snapshot to
    // look for.
    if declared.ids().iter().any(|id| command.expects_new(id)) {
        return Ok(None);
    }
    let key = declared.ids().to_vec();
    let Some(Some(snapshot)) = keeper.load(format, std::slice::from_ref(&key)).await.pop() else {
        return Ok(None);
    };
    let mut read_set = declared.clone();
    let added = read_set.discover(snapshot.discovered.iter().cloned());
    if snapshot.streams != key
        || added != snapshot.discovered
        || read_set.ids().len() != snapshot.versions.len()
    {
        format.count("invalid");
        return Ok(None);
    }
    let Some(state) = format.read::<Cmd::State>(&snapshot) else {
        return Ok(None);
    };
    // The streams this command discovers from the state must be the snapshot's, no more and
    // no fewer: another command over the same state may discover others, and a stream this
    // one would not read must not join its read set.
    let mut discovered = declared.clone();
    discovered.discover(command.discover(&state));
    let mut expected: Vec<&StreamId> = discovered.ids().iter().collect();
    let mut found: Vec<&StreamId> = read_set.ids().iter().collect();
    expected.sort_unstable();
    found.sort_unstable();
    if expected != found {
        return Ok(None);
    }
    let streams = read_set.ids().len();
    let saved = snapshot.events();
    let mut work = Working {
        read_set,
        versions: snapshot.versions,
        assumed: vec![false; streams],
        parts: None,
        state,
        floor: snapshot.floor,
        verified: false,
        cacheable: true,
        base: None,
        saved,
        load_time: None,
    };
    // Events after the snapshot with ids at or below its floor would fold in another order
    // than from the start: then fold from the start.
    let floor = work.floor;
    match refresh_above(backend, command, &mut work, None, floor).await? {
        Refresh::Unchanged | Refresh::Changed => {
            format.count("loaded");
            Ok(Some(work))
        }
        // A stream behind the snapshot, events after it that would fold in another order, or
        // that name a stream the snapshot was not folded with: fold from the events.
        Refresh::Rebuild => {
            tracing::debug!(
                state = format.name,
                "a snapshot could not be caught up; folding from the events"
            );
            Ok(None)
        }
    }
}

/// Takes the snapshots `work` is due for, as its state's policy says, and notes them in
/// `work` so that the events they cover do not count towards the next.
pub(super) fn take<Cmd: Command>(
    keeper: &Keeper,
    format: &Format,
    declared: &ReadSet,
    work: &mut Working<Cmd::State>,
) {
    let ids = work.read_set.ids();
    match work.parts.as_mut() {
        Some(parts) => {
            for (i, part) in parts.iter_mut().enumerate() {
                // A part assumed empty was never read.
                if work.assumed[i] {
                    continue;
                }
                let version = work.versions[i];
                let unsaved = version.get().saturating_sub(part.saved.get());
                if format.policy.is_due(unsaved, work.load_time)
                    && keeper.save(
                        format,
                        &part.state,
                        vec![ids[i].clone()],
                        Vec::new(),
                        vec![version],
                        part.floor,
                    )
                {
                    part.saved = version;
                }
            }
        }
        None => {
            // A combination with a stream assumed new is not a fold the store has shown.
            if !work.cacheable || work.assumed.contains(&true) {
                return;
            }
            let events: u64 = work.versions.iter().map(|v| v.get()).sum();
            let unsaved = events.saturating_sub(work.saved);
            let declared_len = declared.ids().len().min(ids.len());
            if format.policy.is_due(unsaved, work.load_time)
                && keeper.save(
                    format,
                    &work.state,
                    ids[..declared_len].to_vec(),
                    ids[declared_len..].to_vec(),
                    work.versions.clone(),
                    work.floor,
                )
            {
                work.saved = events;
            }
        }
    }
}
