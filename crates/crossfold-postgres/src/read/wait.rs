//! Waiting on the log: briefly, for events that committed before a read started but are still
//! behind the visibility horizon ([`VisibilityWait`]), and for new events to become visible
//! ([`wait_for_events`]). Both poll the horizon by the same [`Backoff`], and both ask which open
//! transactions are foreign to the store (see [`horizon`](super::horizon)) once the horizon has
//! held them for [`ASK_AFTER`]: what holds the horizon then is either an append of this store,
//! worth waiting for, or a transaction open elsewhere on the server, which the look passes.

use std::time::Duration;

use crossfold_core::{Backoff, Delays, Position, StoreError};
use tokio::sync::watch;
use tokio_postgres::Row;

use super::horizon::ASK_AFTER;
use crate::db::Db;
use crate::error::classify;
use crate::types::{Xid8, get, position_params};

/// The longest pause between two looks at a log whose new events are committed but still
/// behind the visibility horizon.
const MAX_HORIZON_POLL: Duration = Duration::from_millis(25);

/// The pauses between two such looks: from 1 ms, doubling up to [`MAX_HORIZON_POLL`], without
/// jitter (a poll competes with nobody).
const HORIZON_POLL: Backoff = Backoff::new(Duration::from_millis(1), MAX_HORIZON_POLL);

/// Bounded waiting for committed events to pass the visibility horizon, so a read sees what
/// committed before it started (read-your-writes). It waits only for the transactions that
/// were already running when the read started (the newest committed-but-invisible transaction
/// the first look found), never for later commits, so steady traffic cannot keep it waiting;
/// and at most `limit`, after which the read returns what is visible and the rest follows
/// later (never lost).
pub(super) struct VisibilityWait {
    started: tokio::time::Instant,
    deadline: tokio::time::Instant,
    pauses: Delays,
    /// The newest transaction whose committed events the first look could not see yet.
    target: Option<Option<Xid8>>,
}

impl VisibilityWait {
    pub(super) fn new(limit: Duration) -> Self {
        let started = tokio::time::Instant::now();
        Self {
            started,
            deadline: started + limit,
            pauses: HORIZON_POLL.delays(),
            target: None,
        }
    }

    /// Whether the events committed before the first look are still not all visible, from a
    /// row whose first two columns are the horizon and the newest pending transaction.
    pub(super) fn must_wait(&mut self, row: &Row) -> Result<bool, StoreError> {
        let horizon: Xid8 = get(row, 0)?;
        if self.target.is_none() {
            self.target = Some(get::<Option<Xid8>>(row, 1)?);
        }
        Ok(matches!(self.target, Some(Some(target)) if horizon <= target))
    }

    /// Waits before the next look: sleeps, or, once the horizon has held this read for
    /// [`ASK_AFTER`], first asks which open transactions are foreign and looks again at once
    /// when that names a new one. `false` once the time is up.
    pub(super) async fn pause(&mut self, db: &Db) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            return false;
        }
        if now - self.started >= ASK_AFTER && db.horizon.learn(db).await {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pauses.next_delay().min(self.deadline - now)).await;
        true
    }
}

/// Returns once events after `after` are visible, or after `timeout`, whichever comes first.
/// `woken` must have been subscribed before the call, so a wake-up between the look and the
/// wait is not lost.
pub(crate) async fn wait_for_events(
    db: &Db,
    after: Position,
    timeout: Duration,
    mut woken: watch::Receiver<u64>,
) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut horizon_polls = HORIZON_POLL.delays();
    // Since when the events after `after` have been committed but behind the horizon.
    let mut held_since = None;
    loop {
        let (visible, committed) = probe(db, after).await?;
        if visible {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        if committed {
            // Committed, but an older transaction is still open: an append usually ends within
            // a millisecond or two. One that stays open longer may be foreign to the store.
            let since = *held_since.get_or_insert(now);
            if now - since >= ASK_AFTER && db.horizon.learn(db).await {
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::time::sleep(horizon_polls.next_delay().min(deadline - now)).await;
            continue;
        }
        held_since = None;
        match tokio::time::timeout_at(deadline, woken.changed()).await {
            Ok(Ok(())) => {
                woken.borrow_and_update();
            }
            Ok(Err(_)) | Err(_) => return Ok(()),
        }
    }
}

/// Whether events after `after` are visible, and whether any are committed at all.
async fn probe(db: &Db, after: Position) -> Result<(bool, bool), StoreError> {
    let (commit, sequence) = position_params(after);
    let foreign = db.horizon.foreign();
    let client = db.client().await?;
    let statement = client
        .prepare_cached(&db.sql.probe)
        .await
        .map_err(classify)?;
    let row = client
        .query_opt(&statement, &[&commit, &sequence, &*foreign])
        .await
        .map_err(classify)?;
    match row {
        Some(row) => Ok((get(&row, 0)?, true)),
        None => Ok((false, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizon_polls_double_from_a_millisecond_to_25() {
        let polls: Vec<u64> = HORIZON_POLL
            .delays()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(polls, [1, 2, 4, 8, 16, 25, 25]);
    }
}
