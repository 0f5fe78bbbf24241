//! The checkpoint store contract suite: every behaviour of a [`CheckpointStore`] — its
//! [`UnitOfWork`](crossfold_core::checkpoint::UnitOfWork),
//! [`Leases`](crossfold_core::checkpoint::Leases) and
//! [`ProjectionControl`](crossfold_core::checkpoint::ProjectionControl) — as one public async
//! function each, run against a fresh store.
//!
//! Stores run them through [`checkpoint_contract_tests!`](crate::checkpoint_contract_tests),
//! which turns each behaviour into its own `#[test]`; all of them are named in
//! [`CHECKPOINT_BEHAVIOURS`]. The functions panic (with a message naming what differed) when
//! the store misbehaves. What the suite cannot check generically — that a refused commit also
//! rolls back the read model's writes made through the unit — each store's own tests check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the contract suite is test code: a failed expectation is reported by panicking"
)]

use std::time::Duration;

use crossfold_core::checkpoint::{
    CheckpointCommit, CheckpointError, CheckpointStore, ControlRequest, DeadLetter, DesiredState,
    Lease, ProjectionState, ProjectionStatus, ReplayRequest,
};
use crossfold_core::{EventData, EventId, Payload, Position, StreamId, StreamVersion};

const TTL: Duration = Duration::from_secs(30);

async fn lease<C: CheckpointStore>(store: &C, name: &str, owner: &str, ttl: Duration) -> Lease {
    store
        .acquire(name, owner, ttl)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{owner} could not take the free lease of {name}"))
}

async fn commit<C: CheckpointStore>(
    store: &C,
    lease: &Lease,
    commit: CheckpointCommit,
) -> Result<(), CheckpointError> {
    let unit = store.begin(lease).await?;
    store.commit(lease, unit, commit).await
}

async fn position_of<C: CheckpointStore>(store: &C, name: &str) -> Position {
    store.get(name).await.unwrap().unwrap().position
}

fn letter(projection: &str, commit: u64, error: &str) -> DeadLetter {
    let event = EventData::new("Deposited", Payload::json(&b"{}"[..])).record(
        StreamId::new("account-1").unwrap(),
        StreamVersion::new(commit),
        Position::new(commit, 1),
    );
    let mut letter = DeadLetter::new(projection, &event, error);
    letter.event_id = EventId::generate();
    letter
}

/// A projection no one has run is unknown; its first lease creates it at the start of the
/// log, generation 1, running.
pub async fn a_new_projection_starts_at_the_beginning<C: CheckpointStore>(store: C) {
    assert!(store.get("fresh").await.unwrap().is_none());
    assert!(store.list().await.unwrap().is_empty());
    let lease = lease(&store, "fresh", "a", TTL).await;
    let record = store.get("fresh").await.unwrap().unwrap();
    assert_eq!(record.name, "fresh");
    assert_eq!(record.position, Position::START);
    assert_eq!((record.generation, record.serving_generation), (1, 1));
    assert_eq!(record.desired, DesiredState::Running);
    assert_eq!(record.replay, None);
    assert_eq!(record.lease_owner.as_deref(), Some("a"));
    assert_eq!(record.lease_token, lease.token);
    assert!(record.lease_expires_at.is_some());
    assert_eq!(record.dead_letters, 0);
}

/// While a lease is held and unexpired nobody else gets it; each projection has its own; its
/// owner, restarted, takes it back with a new token.
pub async fn only_one_owner_holds_a_lease<C: CheckpointStore>(store: C) {
    let a = lease(&store, "p", "a", TTL).await;
    assert_eq!(store.acquire("p", "b", TTL).await.unwrap(), None);
    assert_eq!(store.acquire("p", "a2", TTL).await.unwrap(), None);
    let other = lease(&store, "q", "b", TTL).await;
    assert_eq!(other.name, "q");
    assert!(store.renew(&a, TTL).await.unwrap().is_some());
    assert_eq!(store.acquire("p", "b", TTL).await.unwrap(), None);
    // The same owner, restarted, takes it back at once; its earlier incarnation is fenced.
    let again = lease(&store, "p", "a", TTL).await;
    assert!(again.token > a.token);
    assert!(store.renew(&a, TTL).await.unwrap().is_none());
    assert!(matches!(
        commit(&store, &a, CheckpointCommit::new(Position::new(1, 1), 1, 1)).await,
        Err(CheckpointError::Fenced { .. })
    ));
}

/// A lease not renewed in time goes to the next process with a higher token; the old owner
/// can neither renew it nor commit, and its refused commit changes nothing.
pub async fn an_expired_lease_goes_to_another_owner_who_fences_the_old_one<C: CheckpointStore>(
    store: C,
) {
    let old = lease(&store, "p", "a", Duration::from_millis(200)).await;
    commit(
        &store,
        &old,
        CheckpointCommit::new(Position::new(5, 1), 1, 1),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get("p").await.unwrap().unwrap().lease_owner, None);
    let new = lease(&store, "p", "b", TTL).await;
    assert!(new.token > old.token, "{new:?} after {old:?}");
    assert!(store.renew(&old, TTL).await.unwrap().is_none());
    let mut stale = CheckpointCommit::new(Position::new(9, 1), 1, 1);
    stale.dead_letters.push(letter("p", 9, "stale"));
    match commit(&store, &old, stale).await {
        Err(CheckpointError::Fenced { name, token }) => {
            assert_eq!((name.as_str(), token), ("p", old.token));
        }
        other => panic!("a stale owner's commit returned {other:?}"),
    }
    assert_eq!(position_of(&store, "p").await, Position::new(5, 1));
    assert!(store.dead_letters("p").await.unwrap().is_empty());
    commit(
        &store,
        &new,
        CheckpointCommit::new(Position::new(7, 2), 1, 1),
    )
    .await
    .unwrap();
    assert_eq!(position_of(&store, "p").await, Position::new(7, 2));
}

/// A released lease can be taken at once, and the releasing owner is fenced.
pub async fn a_released_lease_is_free_at_once<C: CheckpointStore>(store: C) {
    let a = lease(&store, "p", "a", TTL).await;
    store.release(&a).await.unwrap();
    assert_eq!(store.get("p").await.unwrap().unwrap().lease_owner, None);
    let b = lease(&store, "p", "b", TTL).await;
    assert!(b.token > a.token);
    // Releasing a lease one no longer holds leaves the new owner's alone.
    store.release(&a).await.unwrap();
    assert_eq!(
        store
            .get("p")
            .await
            .unwrap()
            .unwrap()
            .lease_owner
            .as_deref(),
        Some("b")
    );
    assert!(matches!(
        commit(&store, &a, CheckpointCommit::new(Position::new(1, 1), 1, 1)).await,
        Err(CheckpointError::Fenced { .. })
    ));
}

/// A commit stores position and generations; a unit dropped without commit changes nothing.
pub async fn commits_store_position_and_generations<C: CheckpointStore>(store: C) {
    let a = lease(&store, "p", "a", TTL).await;
    commit(&store, &a, CheckpointCommit::new(Position::new(3, 4), 2, 1))
        .await
        .unwrap();
    let record = store.get("p").await.unwrap().unwrap();
    assert_eq!(record.position, Position::new(3, 4));
    assert_eq!((record.generation, record.serving_generation), (2, 1));
    let unit = store.begin(&a).await.unwrap();
    drop(unit);
    assert_eq!(position_of(&store, "p").await, Position::new(3, 4));
    // Positions beyond 32 bits on both halves survive.
    let far = Position::new(u64::from(u32::MAX) * 7, u64::from(u32::MAX) + 3);
    commit(&store, &a, CheckpointCommit::new(far, 2, 2))
        .await
        .unwrap();
    assert_eq!(position_of(&store, "p").await, far);
}

/// Requests change the stored control state (creating the record if needed) and reach the
/// owner through its next renewal; a commit that starts the replay clears it.
pub async fn control_requests_reach_the_owner<C: CheckpointStore>(store: C) {
    let paused = store.request("early", ControlRequest::Pause).await.unwrap();
    assert_eq!(paused.desired, DesiredState::Paused);
    assert_eq!(paused.position, Position::START);
    let a = lease(&store, "p", "a", TTL).await;
    let before = store.renew(&a, TTL).await.unwrap().unwrap().control_seq;
    store.request("p", ControlRequest::Pause).await.unwrap();
    let seen = store.renew(&a, TTL).await.unwrap().unwrap();
    assert_eq!(seen.desired, DesiredState::Paused);
    assert!(seen.control_seq > before);
    store.request("p", ControlRequest::Rebuild).await.unwrap();
    store.request("p", ControlRequest::Resume).await.unwrap();
    let seen = store.renew(&a, TTL).await.unwrap().unwrap();
    assert_eq!(seen.desired, DesiredState::Running);
    assert_eq!(seen.replay, Some(ReplayRequest::Rebuild));
    let mut start = CheckpointCommit::new(Position::START, 2, 1);
    start.clears_replay = true;
    commit(&store, &a, start).await.unwrap();
    let after = store.renew(&a, TTL).await.unwrap().unwrap();
    assert_eq!(after.replay, None);
    assert_eq!(after.generation, 2);
    store.request("p", ControlRequest::Stop).await.unwrap();
    assert_eq!(
        store.get("p").await.unwrap().unwrap().desired,
        DesiredState::Stopped
    );
    store.request("p", ControlRequest::Reset).await.unwrap();
    assert_eq!(
        store.get("p").await.unwrap().unwrap().replay,
        Some(ReplayRequest::Reset)
    );
    let names: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["early", "p"]);
}

/// Dead letters commit with the checkpoint and read back in log order.
pub async fn dead_letters_commit_with_the_checkpoint<C: CheckpointStore>(store: C) {
    let a = lease(&store, "p", "a", TTL).await;
    let mut first = CheckpointCommit::new(Position::new(8, 1), 1, 1);
    first.dead_letters.push(letter("p", 8, "second"));
    first.dead_letters.push(letter("p", 4, "first"));
    commit(&store, &a, first.clone()).await.unwrap();
    let letters = store.dead_letters("p").await.unwrap();
    let errors: Vec<&str> = letters.iter().map(|l| l.error.as_str()).collect();
    assert_eq!(errors, ["first", "second"]);
    assert_eq!(letters[1], first.dead_letters[0]);
    assert_eq!(store.get("p").await.unwrap().unwrap().dead_letters, 2);
    assert!(store.dead_letters("other").await.unwrap().is_empty());
}

/// The owner's status reports are kept; a stale owner's are ignored without error.
pub async fn status_reports_of_the_owner_are_kept<C: CheckpointStore>(store: C) {
    let a = lease(&store, "p", "a", Duration::from_millis(100)).await;
    let mut status = ProjectionStatus::default();
    status.state = ProjectionState::Failed;
    status.last_error = Some("cannot apply".into());
    status.error_position = Some(Position::new(3, 1));
    status.lag_events = 12;
    status.events_applied = 40;
    store.report(&a, &status).await.unwrap();
    let stored = store.get("p").await.unwrap().unwrap().status;
    assert_eq!(stored, status);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let b = lease(&store, "p", "b", TTL).await;
    let mut live = ProjectionStatus::default();
    live.state = ProjectionState::Live;
    store.report(&b, &live).await.unwrap();
    store.report(&a, &status).await.unwrap();
    assert_eq!(
        store.get("p").await.unwrap().unwrap().status.state,
        ProjectionState::Live
    );
}

/// Calls `$callback!([$args] behaviour, ...)` with every behaviour of the suite: the one list
/// the test macro and [`CHECKPOINT_BEHAVIOURS`] use.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_checkpoint_behaviours {
    ($callback:ident [$($args:tt)*]) => {
        $crate::$callback!([$($args)*]
            a_new_projection_starts_at_the_beginning,
            only_one_owner_holds_a_lease,
            an_expired_lease_goes_to_another_owner_who_fences_the_old_one,
            a_released_lease_is_free_at_once,
            commits_store_position_and_generations,
            control_requests_reach_the_owner,
            dead_letters_commit_with_the_checkpoint,
            status_reports_of_the_owner_are_kept,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_names {
    ([] $($name:ident),* $(,)?) => {
        /// The name of every behaviour of the checkpoint contract suite.
        pub const CHECKPOINT_BEHAVIOURS: &[&str] = &[$(stringify!($name)),*];
    };
}

__with_checkpoint_behaviours!(__checkpoint_names[]);

/// Generates one `#[test]` per behaviour of the checkpoint contract suite. `$make` is an async
/// function returning a fresh store and a value to keep alive while the test runs (a schema
/// guard; `()` for memory).
///
/// ```
/// async fn fresh() -> (crossfold_memory::MemoryCheckpoints, ()) {
///     (crossfold_memory::MemoryCheckpoints::new(), ())
/// }
/// crossfold_testkit::checkpoint_contract_tests!(fresh);
/// ```
#[macro_export]
macro_rules! checkpoint_contract_tests {
    ($make:path) => {
        $crate::__with_checkpoint_behaviours!(__checkpoint_tests[$make]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_tests {
    ([$make:path] $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::block_on(async {
                    let (store, _keep) = $make().await;
                    $crate::checkpoint_contract::$name(store).await
                })
            }
        )*
    };
}
