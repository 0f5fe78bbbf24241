//! Where an execution's view of its streams comes from — the caches, assumptions, the store —
//! how it catches up after a conflict, and what is kept for the next command. The [`Loader`]
//! owns both caches; everything else reaches them through it.
//!
//! Two ways to hold state, a file each: **per stream** (`parts`, for commands whose state
//! declares `PER_STREAM`) and **per combination** (`merged`, for the rest); `refresh` catches either up.
//!
//! Every cached or assumed version is checked by the append, so a wrong guess costs a conflict
//! and a catch-up read, never a wrong write.

mod event_cache;
mod loader;
mod merged;
mod parts;
mod refresh;
mod snapshot;
mod state_cache;
mod working;

use std::time::Instant;

use crossfold_core::{Command, Fold, ReadSet};

use crate::error::Error;

pub(crate) use loader::{Backend, Loader};
pub(crate) use refresh::{Refresh, refresh};
pub(crate) use working::Working;

/// The view to decide on: from the caches (and snapshots) when `use_cache`, otherwise from the
/// store.
pub(crate) async fn load<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    declared: &ReadSet,
    use_cache: bool,
) -> Result<Working<Cmd::State>, Error> {
    // Only the loads of states kept in snapshots are timed: their policy may ask for one
    // after a slow load.
    let started = backend
        .loader()
        .snapshot_format::<Cmd::State>()
        .map(|_| Instant::now());
    let timed = |mut work: Working<Cmd::State>| {
        work.load_time = started.map(|start| start.elapsed());
        work
    };
    if <Cmd::State as Fold<Cmd::Event>>::PER_STREAM {
        return parts::load_parts(backend, command, declared.clone(), use_cache)
            .await
            .map(timed);
    }
    if use_cache {
        if let Some(work) = merged::cached_combination(backend.loader(), command, declared) {
            return Ok(work);
        }
        if started.is_some()
            && let Some(work) = snapshot::combination(backend, command, declared).await?
        {
            return Ok(timed(work));
        }
    }
    merged::load_merged(backend, command, declared.clone(), use_cache)
        .await
        .map(timed)
}
