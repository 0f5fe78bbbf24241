//! Durable deadlines: "cancel the order if it is not paid within 15 minutes".
//!
//! A deadline is scheduled with an id derived from the event that caused it
//! ([`DeadlineId::for_event`]), so scheduling it again — a redelivered event, a replayed
//! process manager — changes nothing. A worker claims the deadlines that are due, fires each
//! by executing a command, and marks it fired. Two things make a deadline fire once:
//!
//! * **Claims are leases with a fencing token.** [`DeadlineStore::claim_due`] hands a due
//!   deadline to one caller at a time, until `now + lease`; claiming it again (after that caller
//!   died) increments its token, and [`DeadlineStore::complete`] only succeeds with the latest
//!   token. Two nodes polling at once never both claim it, provided their clocks agree to
//!   within the lease (claims are timed by the caller's [`Clock`](crate::Clock)); a node whose
//!   clock runs ahead by more than that may claim a live claim's deadline too, and the
//!   idempotent command below still applies it once.
//! * **The command is idempotent on the deadline.** A worker that executed the command and died
//!   before marking the deadline fired leaves it pending; the next claim executes the command
//!   again with the same idempotency key ([`DeadlineId::idempotency_key`]), and the executor
//!   returns the first outcome instead of writing twice.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::error::StoreError;
use crate::event::Timestamp;
use crate::id::EventId;
use crate::validation::ValidationError;

/// A deadline's id: 1–200 bytes of text without control characters or surrounding whitespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeadlineId(Arc<str>);

impl DeadlineId {
    /// The longest id accepted, in bytes (the idempotency key built from it must still make a
    /// valid stream id).
    pub const MAX_LEN: usize = 200;

    /// Validates `id`.
    pub fn new(id: impl AsRef<str>) -> Result<Self, ValidationError> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(ValidationError::new("deadline_id", "must not be empty"));
        }
        if id.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "deadline_id",
                format!(
                    "is {} bytes long; at most {} allowed",
                    id.len(),
                    Self::MAX_LEN
                ),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "deadline_id",
                "must not contain control characters",
            ));
        }
        if id.trim() != id {
            return Err(ValidationError::new(
                "deadline_id",
                "must not start or end with whitespace",
            ));
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id of the deadline named `name` that the event `event` caused: the same event always
    /// gives the same id, so scheduling from a redelivered event schedules nothing new.
    pub fn for_event(name: &str, event: EventId) -> Result<Self, ValidationError> {
        Self::new(format!("{name}/{event}"))
    }

    /// The text of the id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The idempotency key the command that fires this deadline runs with.
    pub fn idempotency_key(&self) -> String {
        format!("deadline/{}", self.0)
    }
}

impl fmt::Display for DeadlineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A deadline to schedule: what is due when, and what the worker needs to fire it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Deadline {
    /// Its id (see [`DeadlineId::for_event`]).
    pub id: DeadlineId,
    /// What kind of deadline it is (`"payment-timeout"`): the handler chooses the command by it.
    pub kind: String,
    /// When it is due.
    pub due_at: Timestamp,
    /// Whatever the handler needs to build the command (an order id, ...).
    pub payload: serde_json::Value,
    /// The correlation id the command that fires it carries on.
    pub correlation_id: Option<Uuid>,
    /// The id of the event that caused it; the firing command's causation id.
    pub causation_id: Option<Uuid>,
}

impl Deadline {
    /// A deadline with no payload and no causation.
    pub fn new(id: DeadlineId, kind: impl Into<String>, due_at: Timestamp) -> Self {
        Self {
            id,
            kind: kind.into(),
            due_at,
            payload: serde_json::Value::Null,
            correlation_id: None,
            causation_id: None,
        }
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the causation id (the triggering event) and the correlation id carried on.
    pub fn caused_by(mut self, causation_id: Uuid, correlation_id: Option<Uuid>) -> Self {
        self.causation_id = Some(causation_id);
        self.correlation_id = correlation_id;
        self
    }
}

/// Where a deadline is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadlineStatus {
    /// Scheduled, not fired yet (it may be claimed by a worker right now).
    Pending,
    /// Its command ran (or had already run).
    Fired,
    /// Its command was refused by a business rule; it will not be tried again.
    Refused,
    /// Cancelled before it fired.
    Cancelled,
}

impl DeadlineStatus {
    /// The status as stored (`pending`, `fired`, `refused`, `cancelled`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadlineStatus::Pending => "pending",
            DeadlineStatus::Fired => "fired",
            DeadlineStatus::Refused => "refused",
            DeadlineStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeadlineStatus::Pending),
            "fired" => Some(DeadlineStatus::Fired),
            "refused" => Some(DeadlineStatus::Refused),
            "cancelled" => Some(DeadlineStatus::Cancelled),
            _ => None,
        }
    }
}

impl fmt::Display for DeadlineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored deadline and its state, for status pages and tests.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DeadlineRecord {
    /// The deadline as scheduled.
    pub deadline: Deadline,
    /// Its status.
    pub status: DeadlineStatus,
    /// How many times it was claimed (more than once: a worker died or failed while firing it).
    pub claims: u64,
    /// When it was fired, refused or cancelled.
    pub finished_at: Option<Timestamp>,
    /// Why it was refused, if it was.
    pub note: Option<String>,
}

impl DeadlineRecord {
    /// A deadline just scheduled (stores fill in the rest as it goes on).
    pub fn pending(deadline: Deadline) -> Self {
        Self {
            deadline,
            status: DeadlineStatus::Pending,
            claims: 0,
            finished_at: None,
            note: None,
        }
    }
}

/// A due deadline handed to one worker until `claimed_until`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClaimedDeadline {
    /// The deadline.
    pub deadline: Deadline,
    /// The fencing token of this claim: [`DeadlineStore::complete`] succeeds only with the
    /// latest one.
    pub token: u64,
    /// Until when the claim holds; after that another worker may claim it.
    pub claimed_until: Timestamp,
}

impl ClaimedDeadline {
    /// A claim (for stores outside this workspace).
    pub fn new(deadline: Deadline, token: u64, claimed_until: Timestamp) -> Self {
        Self {
            deadline,
            token,
            claimed_until,
        }
    }
}

/// How a fired deadline ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadlineOutcome {
    /// The command ran (or had already run).
    Fired,
    /// The command was refused by a business rule; the text says why.
    Refused(String),
}

/// Pending and overdue deadlines at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadlineCounts {
    /// Scheduled and not yet fired, refused or cancelled.
    pub pending: u64,
    /// Pending and already due: a number that stays above zero means no worker is firing them.
    pub overdue: u64,
}

impl DeadlineCounts {
    /// Counts (for stores outside this workspace).
    pub const fn new(pending: u64, overdue: u64) -> Self {
        Self { pending, overdue }
    }
}

/// Durable storage for deadlines. The memory store and the PostgreSQL store implement it.
///
/// Times are always passed in (from a [`Clock`](crate::Clock)), never read from the store's
/// own clock, so tests drive time and every node agrees on what is due by its own clock.
pub trait DeadlineStore: Send + Sync {
    /// Schedules `deadline`. Returns `false`, changing nothing, if a deadline with its id
    /// already exists (whatever its status): scheduling is idempotent.
    fn schedule(&self, deadline: Deadline)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Cancels a pending deadline. Returns whether it was pending. A deadline claimed by a
    /// worker at this moment may still fire: cancel from the command the deadline would
    /// run, or make that command check, when that matters.
    fn cancel(&self, id: &DeadlineId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Claims up to `limit` pending deadlines due at `now` that no live claim holds, each
    /// until `now + lease`, earliest due first. A deadline is never held by two claims at once.
    fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<ClaimedDeadline>, StoreError>> + Send;

    /// Records how a claimed deadline ended. Returns `false`, changing nothing, when the claim
    /// was superseded (another worker claimed the deadline after this claim expired) or the
    /// deadline is no longer pending (cancelled, or completed by that other worker).
    fn complete(
        &self,
        claim: &ClaimedDeadline,
        outcome: &DeadlineOutcome,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The deadline with `id` and its state, if it exists.
    fn deadline(
        &self,
        id: &DeadlineId,
    ) -> impl Future<Output = Result<Option<DeadlineRecord>, StoreError>> + Send;

    /// Pending and overdue deadlines at `now`.
    fn deadline_counts(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<DeadlineCounts, StoreError>> + Send;
}

impl<T: DeadlineStore + ?Sized> DeadlineStore for Arc<T> {
    fn schedule(
        &self,
        deadline: Deadline,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).schedule(deadline)
    }
    fn cancel(&self, id: &DeadlineId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).cancel(id)
    }
    fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<ClaimedDeadline>, StoreError>> + Send {
        (**self).claim_due(now, limit, lease)
    }
    fn complete(
        &self,
        claim: &ClaimedDeadline,
        outcome: &DeadlineOutcome,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).complete(claim, outcome, at)
    }
    fn deadline(
        &self,
        id: &DeadlineId,
    ) -> impl Future<Output = Result<Option<DeadlineRecord>, StoreError>> + Send {
        (**self).deadline(id)
    }
    fn deadline_counts(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<DeadlineCounts, StoreError>> + Send {
        (**self).deadline_counts(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_and_derived_from_events() {
        assert!(DeadlineId::new("").is_err());
        assert!(DeadlineId::new(" x").is_err());
        assert!(DeadlineId::new("a\nb").is_err());
        assert!(DeadlineId::new("x".repeat(201)).is_err());
        let event = EventId::generate();
        let a = DeadlineId::for_event("payment-timeout", event).unwrap();
        let b = DeadlineId::for_event("payment-timeout", event).unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            DeadlineId::for_event("payment-timeout", EventId::generate()).unwrap()
        );
        assert_eq!(a.idempotency_key(), format!("deadline/{a}"));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            DeadlineStatus::Pending,
            DeadlineStatus::Fired,
            DeadlineStatus::Refused,
            DeadlineStatus::Cancelled,
        ] {
            assert_eq!(DeadlineStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeadlineStatus::parse("later"), None);
    }
}
