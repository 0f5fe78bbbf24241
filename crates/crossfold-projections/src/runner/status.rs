//! What a projection's driver and its watchdog share: the status as this process sees it, and
//! the watchdog that computes lag, rate, stalls and waits from it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossfold_core::checkpoint::{
    Lease, Leases, ProjectionRecord, ProjectionState, ProjectionStatus,
};
use crossfold_core::metrics::{
    PROJECTION_ERRORS_TOTAL, PROJECTION_EVENTS_APPLIED_TOTAL, PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS, PROJECTION_STATE,
};
use crossfold_core::{ErrorChain, EventStore, HeldBack, LogFilter, Position, Timestamp};
use tokio::sync::watch;

use super::options::RunnerOptions;

/// One projection as this runner sees it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunnerStatus {
    /// The projection.
    pub name: String,
    /// Whether this process holds its lease (runs it).
    pub owned: bool,
    /// Its committed checkpoint (as of this process's last commit or read).
    pub position: Position,
    /// The generation applied to.
    pub generation: u64,
    /// The generation readers should read.
    pub serving_generation: u64,
    /// Its status (as last computed, with stalls).
    pub status: ProjectionStatus,
}

/// What the task and the watchdog of one projection share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) name: String,
    pub(super) filter: LogFilter,
    pub(super) degraded_lag: Duration,
    local: Mutex<Local>,
}

#[derive(Debug)]
struct Local {
    state: ProjectionState,
    lease: Option<Lease>,
    position: Position,
    generation: u64,
    serving_generation: u64,
    last_advance: Instant,
    last_caught_up: Instant,
    events_applied: u64,
    retries: u32,
    last_error: Option<String>,
    error_position: Option<Position>,
    status: ProjectionStatus,
}

impl Shared {
    pub(super) fn new(name: String, filter: LogFilter, degraded_lag: Duration) -> Self {
        let now = Instant::now();
        Self {
            name,
            filter,
            degraded_lag,
            local: Mutex::new(Local {
                state: ProjectionState::Idle,
                lease: None,
                position: Position::START,
                generation: 1,
                serving_generation: 1,
                last_advance: now,
                last_caught_up: now,
                events_applied: 0,
                retries: 0,
                last_error: None,
                error_position: None,
                status: ProjectionStatus::default(),
            }),
        }
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn snapshot(&self) -> RunnerStatus {
        let local = self.local();
        // Lag and rate come from the last status computation; the rest is current.
        let mut status = local.status.clone();
        // The watchdog's findings stand until its next look, unless the driver stopped
        // running meanwhile (a failure, a pause).
        let found = matches!(
            status.state,
            ProjectionState::Stalled | ProjectionState::Waiting
        ) && running(local.state);
        if !found {
            status.state = local.state;
            status.last_error = local.last_error.clone();
            status.waiting_for = None;
        }
        status.error_position = local.error_position;
        status.retries = local.retries;
        status.events_applied = local.events_applied;
        RunnerStatus {
            name: self.name.clone(),
            owned: local.lease.is_some(),
            position: local.position,
            generation: local.generation,
            serving_generation: local.serving_generation,
            status,
        }
    }

    /// The state shown now (the watchdog may show it stalled on top).
    pub(super) fn state(&self) -> ProjectionState {
        self.local().state
    }

    pub(super) fn set_state(&self, state: ProjectionState) {
        let mut local = self.local();
        local.state = state;
        if state == ProjectionState::Live {
            local.last_caught_up = Instant::now();
        }
        // The status shown is merged in `snapshot`: the watchdog's finding (stalled, waiting)
        // stands while the driver runs. Writing the driver's state into it here erased that
        // finding each time the driver said it was live again, until the watchdog's next look.
    }

    /// This process took the lease.
    pub(super) fn hold(&self, lease: &Lease) {
        self.local().lease = Some(lease.clone());
    }

    /// This process no longer holds the lease: the projection is idle here.
    pub(super) fn let_go(&self) {
        let mut local = self.local();
        local.lease = None;
        local.state = ProjectionState::Idle;
        local.status.state = ProjectionState::Idle;
    }

    pub(super) fn record(&self, record: &ProjectionRecord) {
        let mut local = self.local();
        if record.position != local.position {
            local.last_advance = Instant::now();
        }
        local.position = record.position;
        local.generation = record.generation;
        local.serving_generation = record.serving_generation;
    }

    pub(super) fn error(&self, kind: &'static str, error: &dyn std::fmt::Display) {
        metrics::counter!(PROJECTION_ERRORS_TOTAL, "projection" => self.name.clone(), "kind" => kind)
            .increment(1);
        let mut local = self.local();
        local.last_error = Some(error.to_string());
        if kind == "transient" {
            local.retries = local.retries.saturating_add(1);
        }
    }

    /// The projection failed at the event at `position`.
    pub(super) fn failed_at(&self, position: Position) {
        self.local().error_position = Some(position);
    }

    /// A failed projection runs again: its failure is no longer shown.
    pub(super) fn clear_failure(&self) {
        let mut local = self.local();
        local.error_position = None;
        local.last_error = None;
    }

    pub(super) fn applied(&self, events: u64) {
        metrics::counter!(PROJECTION_EVENTS_APPLIED_TOTAL, "projection" => self.name.clone())
            .increment(events);
        let mut local = self.local();
        local.events_applied = local.events_applied.saturating_add(events);
        local.last_advance = Instant::now();
        local.retries = 0;
        local.last_error = None;
        local.error_position = None;
    }
}

/// Whether a driver in `state` is reading events (catching up, live or rebuilding): the states
/// in which the watchdog looks for lag, stalls and waits, and its findings stand.
fn running(state: ProjectionState) -> bool {
    matches!(
        state,
        ProjectionState::CatchingUp | ProjectionState::Live | ProjectionState::Rebuilding
    )
}

/// Computes one projection's status now and then: lag, rate, stalls; reports it to the store
/// and records the metrics.
pub(super) async fn watchdog<S, C>(
    store: S,
    checkpoints: C,
    options: RunnerOptions,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: EventStore,
    C: Leases,
{
    let mut last_applied = 0u64;
    let mut last_tick = Instant::now();
    let name = shared.name.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.status_interval) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        let (lease, position, state) = {
            let local = shared.local();
            (local.lease.clone(), local.position, local.state)
        };
        let Some(lease) = lease else {
            last_applied = shared.local().events_applied;
            continue;
        };
        let running = running(state);
        let limit = options.lag_count_limit.max(1);
        let lag = if running {
            store
                .read_all(position, limit, &shared.filter)
                .await
                .map(|events| events.len())
                .ok()
        } else {
            None
        };
        // Committed events it cannot read yet, behind an open append: only worth asking when
        // it has read everything it can (and the count has room for them).
        let held = match lag {
            Some(visible) if running && visible < limit => store
                .held_back(position, &shared.filter, limit - visible)
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        let status = {
            let mut local = shared.local();
            let now = Instant::now();
            let elapsed = now.duration_since(last_tick).as_secs_f64().max(1e-9);
            let applied = local.events_applied;
            // The store cannot be read (an outage): the last count stands, so that a
            // projection held up by the outage is still seen behind, and stalls.
            let lag_events = lag.unwrap_or_else(|| {
                if running {
                    usize::try_from(local.status.lag_events).unwrap_or(usize::MAX)
                } else {
                    0
                }
            });
            let mut status_state = local.state;
            let mut last_error = local.last_error.clone();
            let mut waiting_for = None;
            // Stalled is for events it can read and does not apply: what an open append holds
            // back is the append's doing (`waiting`).
            if running && lag_events > 0 && local.last_advance.elapsed() > options.stall_after {
                status_state = ProjectionState::Stalled;
                last_error = Some(format!(
                    "no progress for {:.0?} while events exist past the checkpoint{}",
                    local.last_advance.elapsed(),
                    local
                        .last_error
                        .as_deref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                ));
            }
            if running && lag_events == 0 && lag.is_some() {
                local.last_caught_up = now;
            }
            let mut lag_seconds = if state == ProjectionState::Live && lag_events == 0 {
                0.0
            } else {
                local.last_caught_up.elapsed().as_secs_f64()
            };
            let mut held_events = 0;
            let mut held_capped = false;
            if let Some(held) = held.filter(|h| h.events > 0)
                && status_state != ProjectionState::Stalled
            {
                let HeldBack {
                    events,
                    events_capped,
                    open_append,
                    ..
                } = held;
                held_events = events;
                held_capped = events_capped;
                // Everything it can read is applied: behind by no more than the append that
                // holds the rest has been open.
                let open = open_append.as_ref().map_or(0.0, |a| a.open_seconds);
                if lag_events == 0 {
                    lag_seconds = open;
                }
                if open >= options.waiting_after.as_secs_f64() {
                    status_state = ProjectionState::Waiting;
                    last_error = None;
                    waiting_for = open_append;
                }
            }
            let mut status = ProjectionStatus::default();
            status.state = status_state;
            status.lag_events = (lag_events as u64).saturating_add(held_events);
            status.lag_events_capped = lag_events >= limit || held_capped;
            status.lag_seconds = lag_seconds;
            status.waiting_for = waiting_for;
            status.events_per_second = applied.saturating_sub(last_applied) as f64 / elapsed;
            status.events_applied = applied;
            status.retries = local.retries;
            status.last_error = last_error;
            status.error_position = local.error_position;
            status.reported_at = Some(Timestamp::now());
            local.status = status.clone();
            last_applied = applied;
            last_tick = now;
            status
        };
        metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => name.clone())
            .set(status.lag_events as f64);
        metrics::gauge!(PROJECTION_LAG_SECONDS, "projection" => name.clone())
            .set(status.lag_seconds);
        for s in ProjectionState::ALL {
            metrics::gauge!(PROJECTION_STATE, "projection" => name.clone(), "state" => s.as_str())
                .set(if s == status.state { 1.0 } else { 0.0 });
        }
        if let Err(e) = checkpoints.report(&lease, &status).await {
            tracing::debug!(projection = %name, error = %ErrorChain(&e), "crossfold: cannot report projection status");
        }
    }
}
