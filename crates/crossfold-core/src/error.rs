//! Errors. Each failure a caller must tell apart is its own variant; underlying errors are kept
//! as `source`, never flattened into strings.

use std::borrow::Cow;
use std::fmt;

use crate::id::{EventId, StreamId};
use crate::validation::ValidationError;
use crate::version::{ExpectedVersion, StreamVersion};

/// A boxed error from a lower layer (a database driver, a serializer).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shows an error followed by its causes, each once: `store failed after 3 attempts: store
/// unavailable: connection refused: Connection refused (os error 111)`.
///
/// Crossfold's errors follow the convention of the standard library and sqlx: an error's own
/// message does not repeat its cause, which is reachable through
/// [`source`](std::error::Error::source). Logs, command-line tools and status reports print the
/// whole chain with this. A cause whose text the message already ends with (an error that does
/// repeat its cause) is not printed twice.
///
/// ```
/// use crossfold_core::{ErrorChain, StoreError};
///
/// let error = StoreError::Unavailable("connection refused".into());
/// assert_eq!(error.to_string(), "store unavailable");
/// assert_eq!(ErrorChain(&error).to_string(), "store unavailable: connection refused");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !text.is_empty() && !shown.ends_with(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            cause = error.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One stream whose version did not meet the append's condition, or whose turn another writer
/// held (see [`turn_held`](Self::turn_held)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConflict {
    /// The stream.
    pub stream: StreamId,
    /// What the append required.
    pub expected: ExpectedVersion,
    /// The stream's version when the append was attempted.
    pub actual: StreamVersion,
    /// Refused because another writer held its turn on the stream
    /// ([`EventStore::take_turn`](crate::EventStore::take_turn)) and this append was not made
    /// under it: the stream is contended, whatever its version. An append without a turn gives
    /// way to one waiting for or holding its turn, so that writers which take turns are not
    /// beaten forever by one that never loses a race and so never takes one.
    pub turn_held: bool,
}

impl StreamConflict {
    /// `stream` was at version `actual`, which did not meet `expected`.
    pub fn new(stream: StreamId, expected: ExpectedVersion, actual: StreamVersion) -> Self {
        Self {
            stream,
            expected,
            actual,
            turn_held: false,
        }
    }

    /// The refusal was for a turn another writer held on the stream, not (only) its version.
    pub fn turn_held(mut self) -> Self {
        self.turn_held = true;
        self
    }
}

impl fmt::Display for StreamConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (expected {}, actual version {}",
            self.stream, self.expected, self.actual
        )?;
        if self.turn_held {
            f.write_str(", another writer's turn")?;
        }
        f.write_str(")")
    }
}

fn list_conflicts(conflicts: &[StreamConflict]) -> String {
    conflicts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether an event was being encoded or decoded when a codec failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecOperation {
    /// Turning a typed event into a payload.
    Encode,
    /// Turning a stored payload into a typed event.
    Decode,
    /// Upgrading an old payload to a newer schema.
    Upcast,
}

impl fmt::Display for CodecOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecOperation::Encode => "encode",
            CodecOperation::Decode => "decode",
            CodecOperation::Upcast => "upcast",
        })
    }
}

/// An event that could not be encoded, decoded or upcast. Names the event so it can be found.
#[derive(Debug, thiserror::Error)]
#[error("cannot {operation} event {event_type:?}{}", self.location())]
pub struct CodecError {
    /// What was being done.
    pub operation: CodecOperation,
    /// The event's type name.
    pub event_type: String,
    /// The event's id, when it has one.
    pub event_id: Option<EventId>,
    /// The stream and version of a stored event.
    pub stream: Option<(StreamId, StreamVersion)>,
    /// The serializer's error.
    #[source]
    pub source: BoxError,
}

impl CodecError {
    /// A codec error about an event of type `event_type`.
    pub fn new(
        operation: CodecOperation,
        event_type: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            operation,
            event_type: event_type.into(),
            event_id: None,
            stream: None,
            source: source.into(),
        }
    }

    /// Adds where the event is stored.
    pub fn at(mut self, event_id: EventId, stream: StreamId, version: StreamVersion) -> Self {
        self.event_id = Some(event_id);
        self.stream = Some((stream, version));
        self
    }

    fn location(&self) -> String {
        match (&self.event_id, &self.stream) {
            (Some(id), Some((s, v))) => format!(" ({id} at {s}@{v})"),
            (Some(id), None) => format!(" ({id})"),
            _ => String::new(),
        }
    }
}

/// A failure of an [`EventStore`](crate::EventStore) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// One or more streams did not meet their expected version. Nothing was written.
    #[error("version conflict on {}", list_conflicts(.0))]
    Conflict(Vec<StreamConflict>),
    /// An event with this id is already stored. Nothing was written.
    #[error("event {0} is already stored")]
    DuplicateEvent(EventId),
    /// The request itself is malformed (for example a stream named twice). Nothing was written.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A stored event could not be read back.
    #[error(transparent)]
    Serialization(#[from] CodecError),
    /// The store could not be reached, or the connection was lost. Retrying may succeed.
    /// **On an append it may mean "maybe written"**: a connection lost after the request was
    /// sent can hide a commit (the executor checks before deciding again).
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// The store aborted the operation because of concurrent work (a serialization failure or a
    /// deadlock). Nothing was written; retrying may succeed.
    #[error("store aborted the operation because of concurrent work")]
    Contention(#[source] BoxError),
    /// The store did not answer within its configured time limit. **On an append it may mean
    /// "maybe written"** unless the store knows the append was rolled back: a limit enforced by
    /// the client can strike after the commit.
    #[error("store operation timed out")]
    Timeout(#[source] BoxError),
    /// The store failed in a way that retrying will not fix (for example a missing schema).
    #[error("store failed")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// Whether this is a version conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }

    /// Whether the store failed for a moment, so that the same call may succeed later: it was
    /// unreachable ([`Unavailable`](Self::Unavailable)), aborted for concurrent work
    /// ([`Contention`](Self::Contention)) or too slow ([`Timeout`](Self::Timeout)). A version
    /// conflict is not transient: the same append fails again; deciding again on the new
    /// versions is what helps ([`is_conflict`](Self::is_conflict)).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Contention(_) | StoreError::Timeout(_)
        )
    }

    /// The conflicting streams, if this is a conflict.
    pub fn conflicts(&self) -> &[StreamConflict] {
        match self {
            StoreError::Conflict(c) => c,
            _ => &[],
        }
    }

    /// Every value [`kind`](Self::kind) returns, in variant order.
    pub const KINDS: [&'static str; 8] = [
        "conflict",
        "duplicate",
        "invalid_request",
        "serialization",
        "unavailable",
        "contention",
        "timeout",
        "backend",
    ];

    /// The variant as a short snake_case name, one of [`KINDS`](Self::KINDS): the `kind` label
    /// of [`STORE_ERRORS_TOTAL`](crate::metrics::STORE_ERRORS_TOTAL), stable across releases.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// The place of [`kind`](Self::kind) in [`KINDS`](Self::KINDS), for stores that keep one
    /// metric handle per kind in an array.
    pub fn kind_index(&self) -> usize {
        match self {
            StoreError::Conflict(_) => 0,
            StoreError::DuplicateEvent(_) => 1,
            StoreError::InvalidRequest(_) => 2,
            StoreError::Serialization(_) => 3,
            StoreError::Unavailable(_) => 4,
            StoreError::Contention(_) => 5,
            StoreError::Timeout(_) => 6,
            StoreError::Backend(_) => 7,
        }
    }
}

/// Why a command's `handle` refused to produce events. Never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A business rule was violated (insufficient funds, order already shipped, ...).
    #[error("{rule}: {message}")]
    Rejected {
        /// A stable, machine-readable name of the rule (`"insufficient_funds"`).
        rule: Cow<'static, str>,
        /// A human-readable explanation.
        message: String,
    },
    /// A stream the command needs does not exist.
    #[error("stream {0} not found")]
    StreamNotFound(StreamId),
    /// The folded state is not one the command can act on (usually a bug or corrupt history).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// The command's input was invalid.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

impl CommandError {
    /// A business-rule rejection.
    pub fn rejected(rule: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        CommandError::Rejected {
            rule: rule.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_message_names_every_stream() {
        let err = StoreError::Conflict(vec![
            StreamConflict::new(
                StreamId::new("a").unwrap(),
                ExpectedVersion::Exact(StreamVersion::new(2)),
                StreamVersion::new(3),
            ),
            StreamConflict::new(
                StreamId::new("b").unwrap(),
                ExpectedVersion::NoStream,
                StreamVersion::new(1),
            ),
        ]);
        let text = err.to_string();
        assert!(
            text.contains("a (expected version 2, actual version 3)"),
            "{text}"
        );
        assert!(
            text.contains("b (expected no stream, actual version 1)"),
            "{text}"
        );
        assert!(err.is_conflict() && !err.is_transient());
    }

    #[test]
    fn classification() {
        let unavailable = StoreError::Unavailable("connection refused".into());
        assert!(unavailable.is_transient() && !unavailable.is_conflict());
        assert!(!StoreError::Backend("no such table".into()).is_transient());
        assert!(!StoreError::InvalidRequest("x".into()).is_transient());
    }

    #[test]
    fn messages_leave_their_cause_to_the_chain() {
        let unavailable = StoreError::Unavailable("connection refused".into());
        assert_eq!(unavailable.to_string(), "store unavailable");
        assert_eq!(
            ErrorChain(&unavailable).to_string(),
            "store unavailable: connection refused"
        );
        let codec = CodecError::new(
            CodecOperation::Decode,
            "Deposited",
            "missing field `amount`",
        );
        assert_eq!(codec.to_string(), "cannot decode event \"Deposited\"");
        assert_eq!(
            ErrorChain(&codec).to_string(),
            "cannot decode event \"Deposited\": missing field `amount`"
        );
        // A transparent wrapper shows its inner error once; a message that already ends with
        // its cause does not repeat it.
        let wrapped = StoreError::Serialization(codec);
        assert_eq!(
            ErrorChain(&wrapped).to_string(),
            "cannot decode event \"Deposited\": missing field `amount`"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner")]
        struct Repeats(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        assert_eq!(ErrorChain(&Repeats(Inner)).to_string(), "outer: inner");
    }

    #[test]
    fn kinds_name_each_variant_once() {
        let errors = [
            StoreError::Conflict(Vec::new()),
            StoreError::DuplicateEvent(EventId::generate()),
            StoreError::InvalidRequest("x".into()),
            StoreError::Serialization(CodecError::new(CodecOperation::Decode, "E", "bad")),
            StoreError::Unavailable("x".into()),
            StoreError::Contention("x".into()),
            StoreError::Timeout("x".into()),
            StoreError::Backend("x".into()),
        ];
        let kinds: Vec<&str> = errors.iter().map(StoreError::kind).collect();
        assert_eq!(kinds, StoreError::KINDS);
    }
}
