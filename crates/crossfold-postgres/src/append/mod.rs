//! The append path, whole: a request is encoded into the array arguments of the store's append
//! function ([`encode`]), sent in one call through a prepared statement (one round trip), and
//! the function's answer read back into the recorded events — or its refusal explained
//! ([`refusal`]): a conflict, a duplicate event id, a stream row set back below its events.
//! With group commit on ([`group`]), concurrent appends share one call and one commit.

mod encode;
mod group;
mod refusal;

use std::sync::Arc;

use crossfold_core::{AppendRequest, Appended, StoreError};
use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;

use crate::db::Db;
use crate::error::{classify, in_class};
use crate::notify::Wakeup;
use encode::{Encoded, Written};
use group::GroupCommit;

/// How a store sends its appends: each in a call of its own, or — with group commit — those
/// that arrive while earlier ones are in flight together, in one call and one commit.
pub(crate) struct Appender {
    group: Option<Arc<GroupCommit>>,
}

impl Appender {
    /// Appends through `db`'s pool; grouped when `group_commit` is set, with at most
    /// `max_calls` calls in flight.
    pub(crate) fn new(db: &Arc<Db>, group_commit: bool, max_calls: usize) -> Self {
        Self {
            group: group_commit
                .then(|| GroupCommit::new(db, max_calls))
                .flatten(),
        }
    }

    /// Whether group commit is on.
    pub(crate) fn grouped(&self) -> bool {
        self.group.is_some()
    }

    /// Appends waiting for a group call (0 without group commit).
    pub(crate) fn waiting(&self) -> usize {
        self.group.as_ref().map_or(0, |group| group.waiting())
    }

    /// Appends `request` atomically — on `turn`, the session that holds the caller's turn on
    /// its streams, when given one (never grouped: the turn's session is what lets it
    /// through) — and once events are committed, wakes readers through `wakeup`.
    pub(crate) async fn append(
        &self,
        db: &Db,
        wakeup: &Wakeup,
        turn: Option<&Object>,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        request.validate()?;
        if request.streams.is_empty() {
            return Ok(Appended::default());
        }
        let appended = match (turn, &self.group) {
            (Some(client), _) => call_on(db, client, &request)
                .await
                .map_err(|(error, _)| error)?
                .record(request)?,
            (None, Some(group)) => group.append(request).await?,
            (None, None) => alone(db, request).await?,
        };
        if !appended.is_empty() {
            wakeup.appended();
        }
        Ok(appended)
    }

    /// Appends each of `requests` atomically, all in one call of the group function (applied
    /// in the order given), whether group commit is on or not: one outcome per request, in
    /// order.
    pub(crate) async fn append_together(
        &self,
        db: &Db,
        wakeup: &Wakeup,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Appended, StoreError>> {
        let mut results: Vec<Option<Result<Appended, StoreError>>> = Vec::new();
        let mut valid = Vec::new();
        for request in requests {
            match request.validate() {
                Ok(()) if request.streams.is_empty() => {
                    results.push(Some(Ok(Appended::default())));
                }
                Ok(()) => {
                    results.push(None);
                    valid.push(request);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut grouped = group::call_group(db, valid).await.into_iter();
        let results: Vec<Result<Appended, StoreError>> = results
            .into_iter()
            .map(|r| {
                r.or_else(|| grouped.next())
                    .unwrap_or_else(|| Err(crate::error::corrupt("a group lost an outcome")))
            })
            .collect();
        if results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|a| !a.is_empty()))
        {
            wakeup.appended();
        }
        results
    }
}

/// One append in a call of its own.
async fn alone(db: &Db, request: AppendRequest) -> Result<Appended, StoreError> {
    let written = call(db, &request).await?;
    written.record(request)
}

/// One call of the append function on a connection of the pool: what it wrote, or why it
/// refused.
async fn call(db: &Db, request: &AppendRequest) -> Result<Written, StoreError> {
    let client = db.client().await?;
    call_on(db, &client, request)
        .await
        .map_err(|(error, lost)| {
            if lost {
                discard(client);
            }
            error
        })
}

/// One call of the append function on `client`: what it wrote, or why it refused and whether
/// the connection is lost.
async fn call_on(
    db: &Db,
    client: &Object,
    request: &AppendRequest,
) -> Result<Written, (StoreError, bool)> {
    let encoded = Encoded::new(request).map_err(|e| (e, false))?;
    let metadata = encoded.metadata_params();
    let single = encoded.single_params(&metadata);
    let sql = &db.sql;
    let statement = client
        .prepare_cached(if single.is_some() {
            &sql.append_one
        } else {
            &sql.append
        })
        .await
        .map_err(|e| (classify(e), false))?;
    let result = match &single {
        Some(params) => client.query_one(&statement, params).await,
        None => {
            client
                .query_one(&statement, &encoded.params(&metadata))
                .await
        }
    };
    match result {
        Ok(row) => encoded
            .written(&row, single.is_some())
            .map_err(|e| (e, false)),
        Err(e) if connection_lost(&e) => Err((classify(e), true)),
        Err(e) => Err((
            refusal::explain(e, request, encoded.event_ids(), client, sql).await,
            false,
        )),
    }
}

/// Whether the connection a call failed on is gone: the server ended it (it was terminated,
/// or is shutting down) or it broke. The pool would otherwise hand it to the next caller,
/// whose call would fail too before the pool noticed.
fn connection_lost(error: &tokio_postgres::Error) -> bool {
    error.is_closed()
        || error.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || in_class(code, &SqlState::CONNECTION_EXCEPTION)
        })
}

/// Takes a lost connection out of the pool instead of returning it.
fn discard(client: Object) {
    drop(Object::take(client));
}
