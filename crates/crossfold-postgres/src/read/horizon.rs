//! What the log's visibility horizon waits for (see the [`sql`](crate::sql) module docs): the
//! open transactions this store knows to be foreign, which every read passes, and what holds
//! back committed events, for status and health.
//!
//! The reads take the known foreign transactions as a parameter, so the horizon costs them
//! nothing beyond their own snapshot. The set is learned from the server (`foreign_writers`,
//! which reads `pg_locks`) only when a read has been held back for [`ASK_AFTER`], at most once
//! per [`ASK_EVERY`] per store, and one question at a time. It is replaced by each answer:
//! a transaction that is still open and foreign is in every answer, one that ended is no longer
//! needed. Any subset of the foreign transactions is sound to pass, so readers may use the set
//! while it changes, and the store forgets it [`KEEP_FOR`] after the answer: reads that pass no
//! transaction cost nothing extra, and a foreign transaction still open then costs one more
//! question.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossfold_core::{
    ErrorChain, HeldBack, LogFilter, OpenAppend, Position, StoreError, Timestamp,
};

use crate::db::Db;
use crate::error::classify;
use crate::types::{FilterParams, Xid8, get, limit_param, position_params};

/// How long a read waits on the horizon before the store asks which open transactions are
/// foreign. Appends end within this as a rule, so a busy store seldom asks about them; a writer
/// open longer elsewhere costs a reader this much once per [`KEEP_FOR`].
pub(super) const ASK_AFTER: Duration = Duration::from_millis(20);

/// The least time between two questions of one store. Each reads the server's lock table,
/// which looks at every backend's locks: measured at 0.4-0.9 ms a question on a loaded
/// two-core machine, so at most 20 a second cost a store under 2% of a core.
const ASK_EVERY: Duration = Duration::from_millis(50);

/// How long an answer is used. Foreign transactions usually end long before; one that stays
/// open is found again by the next read it holds back.
const KEEP_FOR: Duration = Duration::from_secs(5);

/// The most foreign transactions a read passes: the oldest, when there are more (passing fewer
/// is always sound).
const MAX_KNOWN: usize = 256;

/// [`held_back`] looks at no more than this many times `limit` committed events behind the
/// horizon, so a filter that matches few of them costs a bounded read.
const SCAN_FACTOR: i64 = 8;

/// The open transactions known to be foreign, and the blocker last seen (for its age when the
/// server does not say when it started).
#[derive(Debug, Default)]
pub(crate) struct Horizon {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Ascending transaction ids (unshifted).
    foreign: Arc<Vec<Xid8>>,
    asked_at: Option<Instant>,
    asking: bool,
    /// The oldest open append last seen (its transaction id), and since when.
    blocker: Option<(i64, Instant)>,
}

impl Horizon {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The open transactions every read may pass.
    pub(crate) fn foreign(&self) -> Arc<Vec<Xid8>> {
        let mut state = self.state();
        if !state.foreign.is_empty() && state.asked_at.is_none_or(|at| at.elapsed() > KEEP_FOR) {
            state.foreign = Arc::default();
        }
        state.foreign.clone()
    }

    /// Asks the server which open transactions are foreign, unless another caller of this store
    /// is asking or asked within [`ASK_EVERY`]. Returns whether the answer names a transaction
    /// not known before (a read held back should then look again at once). A question that
    /// fails teaches nothing and fails no read: the read goes on waiting, as it would have.
    pub(crate) async fn learn(&self, db: &Db) -> bool {
        {
            let mut state = self.state();
            let recent = state.asked_at.is_some_and(|at| at.elapsed() < ASK_EVERY);
            if state.asking || recent {
                return false;
            }
            state.asking = true;
        }
        let asked = Asking(self);
        let answer = ask(db).await;
        let mut state = asked.0.state();
        state.asked_at = Some(Instant::now());
        let mut answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(error = %ErrorChain(&e), "crossfold: cannot ask which open transactions are foreign to the store");
                return false;
            }
        };
        answer.truncate(MAX_KNOWN);
        let new = answer
            .iter()
            .any(|x| state.foreign.binary_search(x).is_err());
        state.foreign = Arc::new(answer);
        new
    }

    /// How long `transaction` has been the oldest open append as far as this store has seen:
    /// since the first time it was, in a row of sightings of the same transaction.
    fn seen_blocking(&self, transaction: Option<i64>) -> Duration {
        let mut state = self.state();
        let now = Instant::now();
        match (transaction, state.blocker) {
            (Some(x), Some((seen, since))) if seen == x => now.saturating_duration_since(since),
            (Some(x), _) => {
                state.blocker = Some((x, now));
                Duration::ZERO
            }
            (None, _) => {
                state.blocker = None;
                Duration::ZERO
            }
        }
    }
}

/// Clears the "asking" mark however the question ends (also when its future is dropped).
struct Asking<'a>(&'a Horizon);

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.0.state().asking = false;
    }
}

async fn ask(db: &Db) -> Result<Vec<Xid8>, StoreError> {
    let client = db.client().await?;
    let statement = client
        .prepare_cached(&db.sql.foreign_writers)
        .await
        .map_err(classify)?;
    let row = client.query_one(&statement, &[]).await.map_err(classify)?;
    let mut foreign: Vec<Xid8> = get(&row, 0)?;
    foreign.sort_unstable();
    foreign.dedup();
    Ok(foreign)
}

/// The oldest open append, as the server reports it.
pub(crate) struct Blocker {
    pub(crate) pid: Option<i32>,
    /// Its transaction id, as pg_locks shows it (32 bits).
    pub(crate) transaction: Option<i64>,
    pub(crate) started_micros: Option<i64>,
}

impl Blocker {
    /// From a row's columns `at`, `at + 1`, `at + 2`: pid, transaction id, start in
    /// microseconds since the Unix epoch (each `NULL` when there is none or it is not visible).
    pub(crate) fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<Self, StoreError> {
        Ok(Self {
            pid: get(row, at)?,
            transaction: get(row, at + 1)?,
            started_micros: get(row, at + 2)?,
        })
    }

    /// As an [`OpenAppend`], with its age: since its start when the server showed it, else
    /// since this store first saw it hold the horizon. `None` when there is none.
    pub(crate) fn open_append(&self, horizon: &Horizon) -> Option<OpenAppend> {
        let seen = horizon.seen_blocking(self.transaction);
        let transaction = self.transaction?;
        let now = Timestamp::now();
        let mut append = match self.started_micros {
            Some(micros) => {
                let started = Timestamp::from_unix_micros(micros);
                let open = now.unix_micros().saturating_sub(micros).max(0) as f64 / 1e6;
                OpenAppend::new(None, open).started_at(started)
            }
            None => OpenAppend::new(None, seen.as_secs_f64()),
        }
        .transaction(u64::try_from(transaction).unwrap_or(0));
        append.pid = self.pid.and_then(|p| u32::try_from(p).ok());
        Some(append)
    }
}

/// Committed events after `after` passing `filter` that readers cannot see yet, counted up to
/// `limit`, and the oldest open append (see [`EventStore::held_back`]). Reads `pg_locks`: for
/// status and health, not for hot paths.
///
/// [`EventStore::held_back`]: crossfold_core::EventStore::held_back
pub(crate) async fn held_back(
    db: &Db,
    after: Position,
    filter: &LogFilter,
    limit: usize,
) -> Result<Option<HeldBack>, StoreError> {
    if limit == 0 {
        return Ok(None);
    }
    let (commit, sequence) = position_params(after);
    let limit = limit_param(limit);
    let scan = limit.saturating_mul(SCAN_FACTOR);
    let FilterParams {
        streams,
        categories,
        types,
        system,
    } = FilterParams::of(filter);
    let client = db.client().await?;
    let statement = client
        .prepare_cached(&db.sql.held_back)
        .await
        .map_err(classify)?;
    let row = client
        .query_one(
            &statement,
            &[
                &commit,
                &sequence,
                &limit,
                &streams,
                &categories,
                &types,
                &system,
                &scan,
            ],
        )
        .await
        .map_err(classify)?;
    drop(client);
    let blocker = Blocker::from_row(&row, 1)?;
    let open_append = blocker.open_append(&db.horizon);
    let matched: i64 = get(&row, 4)?;
    let scanned: i64 = get(&row, 5)?;
    if matched <= 0 {
        return Ok(None);
    }
    Ok(Some(HeldBack::new(
        u64::try_from(matched).unwrap_or(0),
        matched >= limit || scanned >= scan,
        open_append,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_forgotten_after_a_while() {
        let horizon = Horizon::default();
        {
            let mut state = horizon.state();
            state.foreign = Arc::new(vec![Xid8(7), Xid8(9)]);
            state.asked_at = Some(Instant::now());
        }
        assert_eq!(*horizon.foreign(), [Xid8(7), Xid8(9)]);
        horizon.state().asked_at = Instant::now().checked_sub(KEEP_FOR * 2);
        assert!(horizon.foreign().is_empty());
    }

    #[test]
    fn a_blocker_ages_while_it_stays_the_same() {
        let horizon = Horizon::default();
        assert_eq!(horizon.seen_blocking(Some(5)), Duration::ZERO);
        horizon.state().blocker = Some((5, Instant::now() - Duration::from_secs(3)));
        assert!(horizon.seen_blocking(Some(5)) >= Duration::from_secs(3));
        assert_eq!(
            horizon.seen_blocking(Some(6)),
            Duration::ZERO,
            "another one"
        );
        assert_eq!(horizon.seen_blocking(None), Duration::ZERO);
        assert_eq!(horizon.state().blocker, None);
    }
}
