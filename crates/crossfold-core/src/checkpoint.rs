//! Where projections keep their place: checkpoints committed with the read model's own writes,
//! leases that let one process at a time run a projection, and the control state through which
//! another process pauses, resumes or rebuilds it.
//!
//! A store has three jobs, one trait each:
//!
//! * [`UnitOfWork`] hands out a *unit of work* ([`UnitOfWork::Unit`]) for each batch a
//!   projection applies: the handler writes its read model through it, and
//!   [`commit`](UnitOfWork::commit) stores the new checkpoint in the same unit — for PostgreSQL
//!   one transaction — so after a crash at any point the read model has applied every event
//!   exactly once. The commit checks the [`Lease`]'s fencing token: a process that lost its
//!   lease (paused by the garbage collector, cut off by the network) cannot commit over the
//!   process that took the projection over.
//! * [`Leases`] lets one process at a time run a projection: acquire, renew, release, and the
//!   owner's status reports.
//! * [`ProjectionControl`] is what an operator's tool needs: list projections, read their
//!   status, and ask for a pause, resume, stop, reset or rebuild. Requests are stored; the
//!   process running the projection picks them up within its control interval.
//!
//! [`CheckpointStore`] names the three together: what a projection runner is generic over.
//!
//! This module does no I/O: the memory and PostgreSQL stores implement it.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{BoxError, StoreError};
use crate::event::{EventType, RecordedEvent, Timestamp};
use crate::id::{EventId, StreamId};
use crate::store::OpenAppend;
use crate::validation::ValidationError;
use crate::version::{Position, StreamVersion};

/// What a projection is doing, as its runner reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProjectionState {
    /// Known but not running anywhere (no runner holds its lease).
    #[default]
    Idle,
    /// Applying events that were in the log before it started, or fell behind.
    CatchingUp,
    /// Caught up: applying new events as they commit.
    Live,
    /// Paused by a control request; its lease is kept, nothing is applied.
    Paused,
    /// Stopped by a control request; nothing is applied until it is resumed.
    Stopped,
    /// Replaying the log into a new generation of its read model.
    Rebuilding,
    /// Stopped by an event its handler could not apply; the error and position are kept.
    Failed,
    /// Events exist past its checkpoint but it has not advanced for longer than the runner's
    /// stall threshold.
    Stalled,
    /// Applied everything it can read, while committed events it must apply wait behind an
    /// append that has been open for a while ([`ProjectionStatus::waiting_for`]): the log
    /// delivers nothing that committed after that append started until it ends.
    Waiting,
}

impl ProjectionState {
    /// Every state, in declaration order.
    pub const ALL: [ProjectionState; 9] = [
        ProjectionState::Idle,
        ProjectionState::CatchingUp,
        ProjectionState::Live,
        ProjectionState::Paused,
        ProjectionState::Stopped,
        ProjectionState::Rebuilding,
        ProjectionState::Failed,
        ProjectionState::Stalled,
        ProjectionState::Waiting,
    ];

    /// The state as a short snake_case name (stored, printed, used as a metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProjectionState::Idle => "idle",
            ProjectionState::CatchingUp => "catching_up",
            ProjectionState::Live => "live",
            ProjectionState::Paused => "paused",
            ProjectionState::Stopped => "stopped",
            ProjectionState::Rebuilding => "rebuilding",
            ProjectionState::Failed => "failed",
            ProjectionState::Stalled => "stalled",
            ProjectionState::Waiting => "waiting",
        }
    }

    /// A number for the state gauge: the place in [`ALL`](Self::ALL).
    pub const fn index(self) -> u8 {
        match self {
            ProjectionState::Idle => 0,
            ProjectionState::CatchingUp => 1,
            ProjectionState::Live => 2,
            ProjectionState::Paused => 3,
            ProjectionState::Stopped => 4,
            ProjectionState::Rebuilding => 5,
            ProjectionState::Failed => 6,
            ProjectionState::Stalled => 7,
            ProjectionState::Waiting => 8,
        }
    }
}

impl fmt::Display for ProjectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProjectionState {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ValidationError::new("projection state", format!("unknown: {s:?}")))
    }
}

/// What an operator asked a projection to do; stored until its runner acts on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DesiredState {
    /// Run (the default; also what `resume` asks for, which also retries a failed projection).
    #[default]
    Running,
    /// Keep the lease but apply nothing.
    Paused,
    /// Apply nothing until resumed.
    Stopped,
}

impl DesiredState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Paused => "paused",
            DesiredState::Stopped => "stopped",
        }
    }
}

impl FromStr for DesiredState {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            DesiredState::Running,
            DesiredState::Paused,
            DesiredState::Stopped,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
        .ok_or_else(|| ValidationError::new("desired state", format!("unknown: {s:?}")))
    }
}

/// A replay the runner owes a projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplayRequest {
    /// Clear the read model in place (the handler's `reset`) and replay from the start, in the
    /// same generation: readers see the model rebuild.
    Reset,
    /// Build a new generation from the start while readers keep reading the serving one, then
    /// switch (blue/green).
    Rebuild,
}

impl ReplayRequest {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReplayRequest::Reset => "reset",
            ReplayRequest::Rebuild => "rebuild",
        }
    }
}

impl FromStr for ReplayRequest {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reset" => Ok(ReplayRequest::Reset),
            "rebuild" => Ok(ReplayRequest::Rebuild),
            _ => Err(ValidationError::new(
                "replay request",
                format!("unknown: {s:?}"),
            )),
        }
    }
}

/// An operator's request, through [`ProjectionControl::request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlRequest {
    /// Stop applying, keep the lease.
    Pause,
    /// Run again; a failed projection retries the event it failed on.
    Resume,
    /// Stop applying until resumed.
    Stop,
    /// Clear the read model in place and replay ([`ReplayRequest::Reset`]).
    Reset,
    /// Build a new generation and switch to it when it has caught up
    /// ([`ReplayRequest::Rebuild`]).
    Rebuild,
}

impl FromStr for ControlRequest {
    type Err = ValidationError;
    /// `pause`, `resume`, `stop`, `reset` or `rebuild` (as an operator's command names them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pause" => Ok(ControlRequest::Pause),
            "resume" => Ok(ControlRequest::Resume),
            "stop" => Ok(ControlRequest::Stop),
            "reset" => Ok(ControlRequest::Reset),
            "rebuild" => Ok(ControlRequest::Rebuild),
            _ => Err(ValidationError::new(
                "control request",
                format!("{s:?} is not pause, resume, stop, reset or rebuild"),
            )),
        }
    }
}

impl ControlRequest {
    /// The desired state the request sets, if it sets one.
    pub const fn desired(self) -> Option<DesiredState> {
        match self {
            ControlRequest::Pause => Some(DesiredState::Paused),
            ControlRequest::Resume => Some(DesiredState::Running),
            ControlRequest::Stop => Some(DesiredState::Stopped),
            ControlRequest::Reset | ControlRequest::Rebuild => None,
        }
    }

    /// The replay the request asks for, if it asks for one.
    pub const fn replay(self) -> Option<ReplayRequest> {
        match self {
            ControlRequest::Reset => Some(ReplayRequest::Reset),
            ControlRequest::Rebuild => Some(ReplayRequest::Rebuild),
            _ => None,
        }
    }
}

/// A projection's last status, as its runner last reported it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// What it is doing.
    pub state: ProjectionState,
    /// Matching events past its checkpoint, counted up to the runner's limit (see
    /// `lag_events_capped`): those it can read and those committed but held back by an open
    /// append (see `waiting_for`).
    pub lag_events: u64,
    /// Whether more events than `lag_events` are past the checkpoint.
    pub lag_events_capped: bool,
    /// How long since it was last caught up (zero while live).
    pub lag_seconds: f64,
    /// Events applied per second over the last report interval.
    pub events_per_second: f64,
    /// Events applied by the runner that reported (since it took the lease).
    pub events_applied: u64,
    /// Transient failures retried in a row (zero after a success).
    pub retries: u32,
    /// The last error, if it is failed, stalled or retrying.
    pub last_error: Option<String>,
    /// The position of the event it failed on, if it is failed.
    pub error_position: Option<Position>,
    /// When the runner reported this.
    pub reported_at: Option<Timestamp>,
    /// The open append that holds back committed events it must apply, when it is
    /// [`Waiting`](ProjectionState::Waiting).
    pub waiting_for: Option<OpenAppend>,
}

/// Everything a checkpoint store knows about one projection.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProjectionRecord {
    /// The projection's name.
    pub name: String,
    /// Its checkpoint: every matching event at or before it is applied to the generation being
    /// built.
    pub position: Position,
    /// The generation its runner applies events to (bumped by a rebuild).
    pub generation: u64,
    /// The generation readers should read: equal to `generation` except during a blue/green
    /// rebuild, when it is the previous one until the new one has caught up.
    pub serving_generation: u64,
    /// What an operator asked for.
    pub desired: DesiredState,
    /// A replay asked for and not yet started.
    pub replay: Option<ReplayRequest>,
    /// Incremented by every control request, so a runner notices a `resume` even when the
    /// desired state was already `running`.
    pub control_seq: u64,
    /// Who holds the lease, if anyone does.
    pub lease_owner: Option<String>,
    /// When the lease runs out if not renewed.
    pub lease_expires_at: Option<Timestamp>,
    /// The current fencing token (incremented each time the lease changes hands).
    pub lease_token: u64,
    /// The status its runner last reported.
    pub status: ProjectionStatus,
    /// Events set aside in dead-letter mode.
    pub dead_letters: u64,
}

impl ProjectionRecord {
    /// A projection that has never run: position zero, generation 1, running.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            position: Position::START,
            generation: 1,
            serving_generation: 1,
            desired: DesiredState::Running,
            replay: None,
            control_seq: 0,
            lease_owner: None,
            lease_expires_at: None,
            lease_token: 0,
            status: ProjectionStatus::default(),
            dead_letters: 0,
        }
    }

    /// Applies an operator's request to the stored control state (stores call this so every
    /// store answers a request the same way).
    pub fn apply_request(&mut self, request: ControlRequest) {
        self.control_seq = self.control_seq.saturating_add(1);
        if let Some(desired) = request.desired() {
            self.desired = desired;
        }
        if let Some(replay) = request.replay() {
            self.replay = Some(replay);
        }
    }
}

/// The right to run one projection, until `expires` unless renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The projection.
    pub name: String,
    /// The process holding it.
    pub owner: String,
    /// The fencing token: a commit with an older token is refused.
    pub token: u64,
}

impl Lease {
    /// A lease (stores build it).
    pub fn new(name: impl Into<String>, owner: impl Into<String>, token: u64) -> Self {
        Self {
            name: name.into(),
            owner: owner.into(),
            token,
        }
    }
}

/// An event a projection could not apply, set aside in dead-letter mode.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The projection.
    pub projection: String,
    /// The event's position.
    pub position: Position,
    /// The event's id.
    pub event_id: EventId,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in the stream.
    pub stream_version: StreamVersion,
    /// Its type.
    pub event_type: EventType,
    /// Why it could not be applied.
    pub error: String,
}

impl DeadLetter {
    /// A dead letter as a store keeps it.
    pub fn stored(
        projection: impl Into<String>,
        position: Position,
        event_id: EventId,
        stream_id: StreamId,
        stream_version: StreamVersion,
        event_type: EventType,
        error: impl Into<String>,
    ) -> Self {
        Self {
            projection: projection.into(),
            position,
            event_id,
            stream_id,
            stream_version,
            event_type,
            error: error.into(),
        }
    }

    /// A dead letter for `event`.
    pub fn new(
        projection: impl Into<String>,
        event: &RecordedEvent,
        error: impl Into<String>,
    ) -> Self {
        Self {
            projection: projection.into(),
            position: event.position,
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_type: event.event_type.clone(),
            error: error.into(),
        }
    }
}

/// What a unit of work commits besides the read model's writes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CheckpointCommit {
    /// The new checkpoint.
    pub position: Position,
    /// The generation the writes belong to.
    pub generation: u64,
    /// The generation readers should read after this commit.
    pub serving_generation: u64,
    /// The replay this commit starts (clears the stored request), if any.
    pub clears_replay: bool,
    /// Events set aside in this unit.
    pub dead_letters: Vec<DeadLetter>,
}

impl CheckpointCommit {
    /// A commit moving the checkpoint of `generation` (which is also serving) to `position`.
    pub fn new(position: Position, generation: u64, serving_generation: u64) -> Self {
        Self {
            position,
            generation,
            serving_generation,
            clears_replay: false,
            dead_letters: Vec::new(),
        }
    }
}

/// A failure of a checkpoint store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The lease's fencing token is no longer current: another process owns the projection.
    /// Nothing was committed.
    #[error("projection {name:?}: lease token {token} is stale (another process took it over)")]
    Fenced {
        /// The projection.
        name: String,
        /// The stale token.
        token: u64,
    },
    /// No projection of that name is known to the store.
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    /// The store failed (see [`StoreError::is_transient`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CheckpointError {
    /// Whether retrying later may succeed (an outage, a timeout, contention).
    pub fn is_transient(&self) -> bool {
        match self {
            CheckpointError::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// A backend failure from a lower layer.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        CheckpointError::Store(StoreError::Backend(error.into()))
    }
}

/// Reading and steering projections from anywhere: what an operator's tool needs, with no
/// lease. Every [`CheckpointStore`] is one; the PostgreSQL one can be opened with only a URL and
/// a schema.
pub trait ProjectionControl: Send + Sync {
    /// Every projection the store knows, by name.
    fn list(&self) -> impl Future<Output = Result<Vec<ProjectionRecord>, CheckpointError>> + Send;

    /// One projection (`None` if unknown). By default it reads them all and picks one; stores
    /// override it with a direct read.
    fn get(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ProjectionRecord>, CheckpointError>> + Send {
        let all = self.list();
        async move { Ok(all.await?.into_iter().find(|r| r.name == name)) }
    }

    /// Stores a request for the projection's runner and returns the record as updated.
    /// Creates the projection's record if it has none, so a projection can be paused before it
    /// first runs.
    fn request(
        &self,
        name: &str,
        request: ControlRequest,
    ) -> impl Future<Output = Result<ProjectionRecord, CheckpointError>> + Send;

    /// The events set aside for the projection, in log order.
    fn dead_letters(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, CheckpointError>> + Send;
}

/// The right to run a projection, one process at a time: what its owner does outside the unit
/// of work.
///
/// Implementations must guarantee (the contract suite in `crossfold-testkit` checks it) that at
/// most one unexpired lease exists per projection, and that acquiring one increments the
/// fencing token, so that [`UnitOfWork::commit`] can refuse the previous holder.
pub trait Leases: Send + Sync {
    /// Takes the projection's lease for `owner` if no one else holds an unexpired one (creating
    /// its record if needed), for `ttl`, with a new token. An owner holding it already takes it
    /// again — a restarted process with a stable name need not wait for its old lease to
    /// expire — and the old token is fenced. `None`: someone else holds it.
    fn acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, CheckpointError>> + Send;

    /// Extends a lease by `ttl` and returns the projection's record (with the control
    /// requests stored since). `None`: the lease was lost.
    fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<ProjectionRecord>, CheckpointError>> + Send;

    /// Gives a lease up so another process can take the projection at once.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), CheckpointError>> + Send;

    /// Stores the owner's status report (ignored, without error, if the lease is stale).
    fn report(
        &self,
        lease: &Lease,
        status: &ProjectionStatus,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send;
}

/// Checkpoints committed with a read model's writes: a unit of work per batch.
///
/// Implementations must guarantee (the contract suite in `crossfold-testkit` checks it):
/// * a [`commit`](Self::commit) with a token other than the projection's current one is
///   refused with [`CheckpointError::Fenced`], and then neither the checkpoint nor the unit's
///   writes take effect;
/// * a unit dropped without commit leaves nothing behind.
pub trait UnitOfWork: Send + Sync {
    /// What a projection's handler writes its read model through; committed with the
    /// checkpoint.
    type Unit: Send;

    /// Starts a unit of work for a batch of the lease's projection.
    fn begin(
        &self,
        lease: &Lease,
    ) -> impl Future<Output = Result<Self::Unit, CheckpointError>> + Send;

    /// Commits the unit's writes with the checkpoint, if the lease's token is still current.
    fn commit(
        &self,
        lease: &Lease,
        unit: Self::Unit,
        commit: CheckpointCommit,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send;
}

/// Everything a projection runner needs of one store: [`UnitOfWork`], [`Leases`] and
/// [`ProjectionControl`], cheap to clone. Implemented for every type that has the three; a
/// store implements those.
pub trait CheckpointStore: UnitOfWork + Leases + ProjectionControl + Clone + 'static {}

impl<T> CheckpointStore for T where T: UnitOfWork + Leases + ProjectionControl + Clone + 'static {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for (i, state) in ProjectionState::ALL.into_iter().enumerate() {
            assert_eq!(state.as_str().parse::<ProjectionState>().unwrap(), state);
            assert_eq!(usize::from(state.index()), i);
        }
        let unknown = "running".parse::<ProjectionState>().unwrap_err();
        assert_eq!(unknown.reason, "unknown: \"running\"");
        for d in [
            DesiredState::Running,
            DesiredState::Paused,
            DesiredState::Stopped,
        ] {
            assert_eq!(d.as_str().parse::<DesiredState>().unwrap(), d);
        }
        for r in [ReplayRequest::Reset, ReplayRequest::Rebuild] {
            assert_eq!(r.as_str().parse::<ReplayRequest>().unwrap(), r);
        }
        assert_eq!(
            "rebuild".parse::<ControlRequest>().unwrap(),
            ControlRequest::Rebuild
        );
        assert_eq!(
            "pause".parse::<ControlRequest>().unwrap(),
            ControlRequest::Pause
        );
        let unknown = "drop".parse::<ControlRequest>().unwrap_err();
        assert!(unknown.reason.contains("\"drop\""), "{unknown}");
    }

    #[test]
    fn requests_change_the_control_state_and_count() {
        let mut record = ProjectionRecord::new("p");
        record.apply_request(ControlRequest::Pause);
        assert_eq!(record.desired, DesiredState::Paused);
        record.apply_request(ControlRequest::Rebuild);
        assert_eq!(record.replay, Some(ReplayRequest::Rebuild));
        record.apply_request(ControlRequest::Resume);
        assert_eq!(record.desired, DesiredState::Running);
        assert_eq!(record.control_seq, 3);
    }

    #[test]
    fn only_store_failures_can_be_transient() {
        let fenced = CheckpointError::Fenced {
            name: "p".into(),
            token: 1,
        };
        assert!(!fenced.is_transient());
        assert!(CheckpointError::Store(StoreError::Unavailable("down".into())).is_transient());
        assert!(!CheckpointError::backend("bad").is_transient());
    }
}
