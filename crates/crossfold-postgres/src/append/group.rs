//! Group commit: concurrent appends share one call of the group function (migration 0008) —
//! one round trip, one transaction, one WAL flush — while each keeps its own all-or-nothing
//! outcome (each runs in a subtransaction of its own there).
//!
//! * **No timers.** An append that finds fewer calls in flight than the limit
//!   ([`PgConfig::group_commit_calls`](crate::PgConfig::group_commit_calls)) and nobody waiting
//!   is sent at once, alone, through the plain append function: a lone append never waits for
//!   company. One that finds the calls busy queues. When a call returns, what queued meanwhile
//!   goes as the next group (leader and followers), on a task of its own, so the caller whose
//!   call returned gets its answer at once. By default the limit is what the pool serves
//!   commands, so appends only gather when they would otherwise wait for a connection; a lower
//!   limit gathers them sooner, at the cost of running a group's appends one after the other
//!   in one backend.
//! * **Any appends go together**, in arrival order: the group function locks every stream row
//!   of the group first, in ascending order like a single append, so groups and appends do not
//!   deadlock over them, and two appends of a group may even share a stream (the second then
//!   sees the first's events, as if it came after it).
//! * **Outcomes.** A request the group function refused (version conflict, event id already
//!   stored) is explained alone, exactly as a refused append, and wrote nothing; the others
//!   committed. A call that fails in a way that leaves its outcome unknown (the connection was
//!   lost, a time limit struck) leaves every request of the group in doubt, with the same
//!   error kind a lone append gets, so the executor settles each as it settles any append in
//!   doubt. A call the server refused as a whole (nothing committed: contention, an invalid
//!   payload, ...) is sent again as separate appends, so each gets its own outcome.
//! * A caller that stops waiting (its future is dropped) before its request is sent is left
//!   out of the next group; once sent, its request commits or not with the group.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crossfold_core::{AppendRequest, Appended, StoreError};
use futures_util::future::join_all;
use metrics::{Histogram, histogram};
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;

use super::encode::{Encoded, GroupEncoded, Written};
use super::refusal::{Refusal, explain_refusal};
use super::{alone, connection_lost, discard};
use crate::db::Db;
use crate::error::{classify, corrupt};
use crate::metrics::GROUP_COMMIT_APPENDS;
use crate::types::{Xid8, get};

/// The most appends in one call: the group function's limit. Each request that writes takes a
/// subtransaction id, and a backend holding more than 64 overflows its cache in shared memory,
/// which slows every snapshot on the server.
pub(super) const MAX_GROUP: usize = 64;

/// A store's group commit: the appends waiting for a call, and the calls in flight.
pub(super) struct GroupCommit {
    /// The store's pool and statements, shared with the store (tasks own a reference).
    db: Arc<Db>,
    /// Where calls for queued appends run.
    runtime: tokio::runtime::Handle,
    /// Calls in flight at most, lone appends and groups together.
    max_calls: usize,
    state: Mutex<State>,
    /// The schema has no group function yet (not migrated to it): appends go alone.
    missing: AtomicBool,
    /// Appends per call, bound to the recorder in scope at the first call.
    sizes: OnceLock<Histogram>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Calls in flight.
    calls: usize,
}

/// An append waiting for a call.
struct Queued {
    request: AppendRequest,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

impl GroupCommit {
    /// Group commit over `db`'s pool with at most `max_calls` calls in flight; `None` outside a
    /// Tokio runtime.
    pub(super) fn new(db: &Arc<Db>, max_calls: usize) -> Option<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(Arc::new(Self {
            db: db.clone(),
            runtime,
            max_calls: max_calls.max(1),
            state: Mutex::new(State::default()),
            missing: AtomicBool::new(false),
            sizes: OnceLock::new(),
        }))
    }

    /// Records a call of `appends` appends.
    fn record_call(&self, appends: usize) {
        self.sizes
            .get_or_init(|| histogram!(GROUP_COMMIT_APPENDS, "schema" => self.db.schema.clone()))
            .record(appends as f64);
    }

    /// Appends waiting for a call.
    pub(super) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across anything that can panic mid-update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a validated, non-empty `request`: at once and alone if a call is free and
    /// nobody waits, otherwise with the next group.
    pub(super) async fn append(
        self: &Arc<Self>,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        if self.missing.load(Ordering::Relaxed) {
            return alone(&self.db, request).await;
        }
        let turn = {
            let mut state = self.lock();
            if state.calls < self.max_calls && state.queue.is_empty() {
                state.calls += 1;
                Turn::Now(request)
            } else {
                let (reply, answer) = oneshot::channel();
                state.queue.push_back(Queued { request, reply });
                Turn::Wait(answer)
            }
        };
        let answer = match turn {
            Turn::Now(request) => {
                // Still counted as a call until the slot is dropped, which hands what queued
                // meanwhile to a group, also when this future is dropped mid-call.
                let _slot = Slot(Some(self.clone()));
                self.record_call(1);
                return alone(&self.db, request).await;
            }
            Turn::Wait(answer) => answer,
        };
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the task sending this append's group stopped (the runtime is shutting down); \
                 its outcome is unknown"
                    .into(),
            ))
        })
    }

    /// A call finished: the next group goes on a task of its own, or the call is free again.
    fn hand_on(self: &Arc<Self>) {
        let group = {
            let mut state = self.lock();
            let group = take_group(&mut state.queue);
            if group.is_empty() {
                state.calls = state.calls.saturating_sub(1);
            }
            group
        };
        if !group.is_empty() {
            let slot = Slot(Some(self.clone()));
            let this = self.clone();
            drop(self.runtime.spawn(this.drive(group, slot)));
        }
    }

    /// Sends `group`, then each group that queued meanwhile, until none is waiting.
    async fn drive(self: Arc<Self>, mut group: Vec<Queued>, mut slot: Slot) {
        loop {
            self.send(group).await;
            let next = {
                let mut state = self.lock();
                let next = take_group(&mut state.queue);
                if next.is_empty() {
                    state.calls = state.calls.saturating_sub(1);
                    slot.0 = None;
                }
                next
            };
            if next.is_empty() {
                return;
            }
            group = next;
        }
    }

    /// One call for `group`, and each request's outcome to its caller.
    async fn send(&self, group: Vec<Queued>) {
        let (requests, replies): (Vec<AppendRequest>, Vec<_>) =
            group.into_iter().map(|q| (q.request, q.reply)).unzip();
        self.record_call(requests.len());
        let results = match <[AppendRequest; 1]>::try_from(requests) {
            Ok([request]) => vec![alone(&self.db, request).await],
            Err(requests) => {
                let (results, missing) = call_group_reporting(&self.db, requests).await;
                if missing && !self.missing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        schema = %self.db.schema,
                        "crossfold: group commit is on but the schema has no group function \
                         (migration 8 is not applied); appends go alone"
                    );
                }
                results
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that stopped waiting does not want its answer.
            let _ = reply.send(result);
        }
    }
}

/// Whether an append goes at once, or waits for a group.
enum Turn {
    Now(AppendRequest),
    Wait(oneshot::Receiver<Result<Appended, StoreError>>),
}

/// One call in flight, counted in [`State::calls`]; dropped, it hands on to what queued.
struct Slot(Option<Arc<GroupCommit>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            group.hand_on();
        }
    }
}

/// The next group from the front of `queue`: at most [`MAX_GROUP`] appends, in arrival order;
/// appends whose callers stopped waiting are dropped unsent. Empty when nobody waits.
fn take_group(queue: &mut VecDeque<Queued>) -> Vec<Queued> {
    let mut group = Vec::with_capacity(queue.len().min(MAX_GROUP));
    while group.len() < MAX_GROUP {
        let Some(queued) = queue.pop_front() else {
            break;
        };
        if !queued.reply.is_closed() {
            group.push(queued);
        }
    }
    group
}

/// What the group function did with each request.
enum Answer {
    /// Every request's own outcome.
    Each(Vec<Result<Written, StoreError>>),
    /// The call failed; every request shares this error (`Unavailable` or `Timeout`: its
    /// outcome is unknown).
    Shared(StoreError),
    /// The call wrote nothing; the requests go again, each alone. `missing`: because the
    /// schema has no group function.
    Alone { missing: bool },
}

/// Appends each of `requests` in calls of the group function of at most [`MAX_GROUP`] each:
/// one outcome per request, in order.
pub(super) async fn call_group(
    db: &Db,
    requests: Vec<AppendRequest>,
) -> Vec<Result<Appended, StoreError>> {
    let mut results = Vec::with_capacity(requests.len());
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        let chunk: Vec<AppendRequest> = requests.by_ref().take(MAX_GROUP).collect();
        results.extend(call_group_reporting(db, chunk).await.0);
    }
    results
}

/// One call of the group function for `requests` (at most [`MAX_GROUP`]): each request's
/// outcome, and whether the schema lacks the function.
async fn call_group_reporting(
    db: &Db,
    requests: Vec<AppendRequest>,
) -> (Vec<Result<Appended, StoreError>>, bool) {
    let n = requests.len();
    match ask(db, &requests).await {
        Answer::Each(written) => (
            requests
                .into_iter()
                .zip(written)
                .map(|(request, written)| written.and_then(|w| w.record(request)))
                .collect(),
            false,
        ),
        Answer::Shared(error) => {
            let error = Arc::new(error);
            ((0..n).map(|_| Err(shared(&error, n))).collect(), false)
        }
        Answer::Alone { missing } => (
            join_all(requests.into_iter().map(|request| alone(db, request))).await,
            missing,
        ),
    }
}

/// Sends `requests` in one call of the group function.
async fn ask(db: &Db, requests: &[AppendRequest]) -> Answer {
    let mut encoded = Vec::with_capacity(requests.len());
    for request in requests {
        match Encoded::new(request) {
            Ok(e) => encoded.push(e),
            // Refused before anything is sent: each goes alone and is refused the same way.
            Err(_) => return Answer::Alone { missing: false },
        }
    }
    let group = match GroupEncoded::new(&encoded) {
        Ok(group) => group,
        Err(_) => return Answer::Alone { missing: false },
    };
    let client = match db.client().await {
        Ok(client) => client,
        Err(e) => return Answer::Shared(e),
    };
    let prepared = match client.prepare_cached(&db.sql.append_group).await {
        Ok(prepared) => prepared,
        // The statement names the group function: the schema has none.
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {
            return Answer::Alone { missing: true };
        }
        Err(e) => return failed(e),
    };
    let rows = match client.query(&prepared, &group.params()).await {
        Ok(rows) => rows,
        Err(e) => {
            if connection_lost(&e) {
                discard(client);
            }
            return failed(e);
        }
    };
    if rows.len() != requests.len() {
        return Answer::Shared(corrupt(format!(
            "the group function returned {} outcomes for {} appends",
            rows.len(),
            requests.len()
        )));
    }
    let mut each = Vec::with_capacity(rows.len());
    for (i, ((row, request), encoded)) in rows.iter().zip(requests).zip(&encoded).enumerate() {
        let outcome = async {
            let index: i32 = get(row, 0)?;
            if usize::try_from(index).ok() != Some(i + 1) {
                return Err(corrupt(format!(
                    "the group function returned outcome {index} in place {}",
                    i + 1
                )));
            }
            let refused: Option<&str> = get(row, 4)?;
            let Some(code) = refused else {
                let transaction: Option<Xid8> = get(row, 1)?;
                let versions: Vec<i64> = get(row, 2)?;
                let sequences: Vec<i64> = get(row, 3)?;
                return encoded.written_from(transaction, &versions, &sequences);
            };
            let code = SqlState::from_code(code);
            let message: Option<&str> = get(row, 5)?;
            let refusal = Refusal {
                code: &code,
                message: message.unwrap_or_default(),
                detail: get(row, 6)?,
                constraint: get(row, 7)?,
            };
            let explained =
                explain_refusal(&refusal, request, encoded.event_ids(), &client, &db.sql).await;
            Err(explained.unwrap_or_else(|| {
                StoreError::Backend(
                    format!(
                        "the append was refused with SQLSTATE {}: {}",
                        code.code(),
                        refusal.message
                    )
                    .into(),
                )
            }))
        }
        .await;
        each.push(outcome);
    }
    Answer::Each(each)
}

/// What to do after the group call failed with `error`.
fn failed(error: tokio_postgres::Error) -> Answer {
    match classify(error) {
        // The call may have committed: every request of the group is in doubt.
        error @ (StoreError::Unavailable(_) | StoreError::Timeout(_)) => Answer::Shared(error),
        // The server answered with an error: the call's transaction rolled back, nothing of
        // it is written. Each request goes again alone and gets its own outcome.
        _ => Answer::Alone { missing: false },
    }
}

/// A failed group call, as the error of one of its `appends` requests.
#[derive(Debug, thiserror::Error)]
#[error("the call of the group of {appends} appends this one was sent in failed")]
struct GroupFailed {
    appends: usize,
    #[source]
    cause: Arc<StoreError>,
}

/// `error`, the group's, for one of its `appends` requests: of the same kind, so that it is
/// retried or settled as the group's error would be.
fn shared(error: &Arc<StoreError>, appends: usize) -> StoreError {
    let failed = Box::new(GroupFailed {
        appends,
        cause: error.clone(),
    });
    match **error {
        StoreError::Unavailable(_) => StoreError::Unavailable(failed),
        StoreError::Timeout(_) => StoreError::Timeout(failed),
        StoreError::Contention(_) => StoreError::Contention(failed),
        _ => StoreError::Backend(failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{EventData, ExpectedVersion, Payload, StreamId};

    fn queued(stream: &str) -> (Queued, oneshot::Receiver<Result<Appended, StoreError>>) {
        let request = AppendRequest::new().stream(
            StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            vec![EventData::new("E", Payload::json(&b"{}"[..]))],
        );
        let (reply, answer) = oneshot::channel();
        (Queued { request, reply }, answer)
    }

    fn names(group: &[Queued]) -> Vec<&str> {
        group
            .iter()
            .map(|q| q.request.streams[0].stream.as_str())
            .collect()
    }

    #[test]
    fn a_group_takes_the_oldest_appends_and_leaves_out_those_nobody_waits_for() {
        let mut queue = VecDeque::new();
        let mut answers = Vec::new();
        for stream in ["m", "c", "gone", "a", "m"] {
            let (q, answer) = queued(stream);
            queue.push_back(q);
            if stream != "gone" {
                answers.push(answer);
            }
        }
        assert_eq!(names(&take_group(&mut queue)), ["m", "c", "a", "m"]);
        assert!(queue.is_empty());
        assert!(take_group(&mut queue).is_empty());
    }

    #[test]
    fn a_group_holds_at_most_the_limit() {
        let mut queue = VecDeque::new();
        let mut answers = Vec::new();
        for i in 0..MAX_GROUP + 5 {
            let (q, answer) = queued(&format!("s-{i:03}"));
            queue.push_back(q);
            answers.push(answer);
        }
        let first = take_group(&mut queue);
        assert_eq!(first.len(), MAX_GROUP);
        assert_eq!(names(&first)[0], "s-000");
        assert_eq!(
            names(&take_group(&mut queue)),
            ["s-064", "s-065", "s-066", "s-067", "s-068"]
        );
    }

    #[test]
    fn a_shared_error_keeps_its_kind() {
        let lost = Arc::new(StoreError::Unavailable("connection lost".into()));
        let one = shared(&lost, 3);
        assert!(matches!(one, StoreError::Unavailable(_)));
        let chain = crossfold_core::ErrorChain(&one).to_string();
        assert!(
            chain.contains("group of 3 appends") && chain.contains("connection lost"),
            "{chain}"
        );
        let late = Arc::new(StoreError::Timeout("statement timeout".into()));
        assert!(matches!(shared(&late, 2), StoreError::Timeout(_)));
    }
}
