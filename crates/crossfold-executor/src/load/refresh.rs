//! Catching a view up: after a conflict, or to confirm a decision made on a view that the store
//! has not shown whole, read what changed since it and fold that in, instead of folding the
//! streams' history again.

use crossfold_core::{
    Command, EventId, Fold, RecordedEvent, StreamConflict, StreamRead, StreamVersion,
};

use crate::error::Error;

use super::loader::{Backend, read_exactly};
use super::parts::add_parts;
use super::working::Working;

/// What [`refresh`] did to a view.
pub(crate) enum Refresh {
    Unchanged,
    Changed,
    /// The view cannot be caught up incrementally; fold again from the store.
    Rebuild,
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
pub(crate) async fn refresh<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    work: &mut Working<Cmd::State>,
    conflicts: Option<&[StreamConflict]>,
) -> Result<Refresh, Error> {
    refresh_above(backend, command, work, conflicts, None).await
}

/// Like [`refresh`], but leaves the view as it is and asks for a rebuild if an event read has
/// an id at or below `floor`: folded after the view's events, it would come later than in a
/// fold of the streams from the start (which merges by event id). A view loaded from a
/// snapshot is caught up so.
pub(super) async fn refresh_above<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    work: &mut Working<Cmd::State>,
    conflicts: Option<&[StreamConflict]>,
    floor: Option<EventId>,
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
    let read = read_exactly(backend.store(), &reads).await?;
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
                backend
                    .loader()
                    .events
                    .extend(&ids[i], work.versions[i], stream.events.clone());
            }
            changed.push((i, stream.version));
            tail.extend(stream.events.into_iter().map(|e| (i, e)));
        }
    }
    tail.sort_by_key(|(_, e)| e.event_id);
    if let (Some(floor), Some((_, first))) = (floor, tail.first())
        && first.event_id <= floor
    {
        return Ok(Refresh::Rebuild);
    }
    // Everything is decoded before the view changes: an event that cannot be decoded
    // leaves the view as it was, a true fold of the versions it shows (it may be kept for
    // the next command), never versions ahead of its state. Events of retired types the
    // upcasters skip are left out of the fold, not of the floor.
    let mut decoded = Vec::with_capacity(tail.len());
    for (i, raw) in &tail {
        if let Some(event) = backend
            .loader()
            .decode::<B::Codec, Cmd>(backend.codec(), raw)?
        {
            decoded.push((*i, event));
        }
    }
    for (i, version) in changed {
        work.versions[i] = version;
        work.assumed[i] = false;
    }
    work.verified = true;
    match work.parts.as_mut() {
        Some(parts) => {
            for (i, raw) in &tail {
                parts[*i].floor = parts[*i].floor.max(Some(raw.event_id));
            }
        }
        None => {
            for (i, raw) in &tail {
                work.raise_base_floor(*i, raw.event_id);
            }
        }
    }
    if decoded.is_empty() {
        work.floor = work.floor.max(tail.last().map(|(_, e)| e.event_id));
        return Ok(Refresh::Unchanged);
    }
    match work.parts.as_mut() {
        Some(parts) => {
            for (i, event) in &decoded {
                parts[*i].state.apply(event);
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
        add_parts(backend, command, work, &found, false).await?;
        work.merge_parts::<Cmd>();
        // The new parts come from a later read than the rest.
        work.verified = false;
    }
    Ok(Refresh::Changed)
}
