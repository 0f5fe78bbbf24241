//! # crossfold-core
//!
//! The vocabulary of Crossfold: identities ([`StreamId`], [`EventId`], [`Position`]), versions
//! and append conditions ([`StreamVersion`], [`ExpectedVersion`]), event envelopes
//! ([`RecordedEvent`], [`Recorded`]), commands ([`Command`] and its write tokens), codecs
//! ([`Json`], [`MessagePack`], [`Upcasters`]), the [`EventStore`] contract every store
//! implements, the errors of all of them, health checks ([`HealthCheck`]) and the names of the
//! metrics the stores and the executor record ([`STORE_METRICS`], [`COMMAND_METRICS`]), and
//! durable deadlines ([`DeadlineStore`], driven by a [`Clock`]; [`DEADLINE_METRICS`]).
//!
//! This crate does no I/O and depends on no async runtime; stores and the executor build on it.
//!
//! ```
//! use crossfold_core::{ExpectedVersion, StreamId, StreamVersion};
//!
//! let account = StreamId::new("account-42")?;
//! assert!(StreamId::new("").is_err());
//! assert!(ExpectedVersion::Exact(StreamVersion::new(3)).is_met_by(StreamVersion::new(3)));
//! assert!(!ExpectedVersion::NoStream.is_met_by(StreamVersion::new(1)));
//! # let _ = account;
//! # Ok::<(), crossfold_core::ValidationError>(())
//! ```

mod checkpoint;
mod clock;
mod codec;
mod command;
mod deadline;
mod error;
mod event;
mod health;
mod id;
mod metrics;
mod storable;
mod store;
mod subscription;
mod version;

pub use checkpoint::{
    CheckpointCommit, CheckpointError, CheckpointStore, ControlRequest, DeadLetter, DesiredState,
    Lease, ProjectionControl, ProjectionRecord, ProjectionState, ProjectionStatus, ReplayRequest,
};
pub use clock::{Clock, ManualClock, SystemClock, later};
pub use codec::{
    Codec, DomainEvent, Json, MessagePack, Upcasters, decode_payload, encode_event, encode_events,
};
pub use command::{Command, Emit, ReadSet, StreamRef, StreamSet, TokenSource};
pub use deadline::{
    ClaimedDeadline, Deadline, DeadlineCounts, DeadlineId, DeadlineOutcome, DeadlineRecord,
    DeadlineStatus, DeadlineStore,
};
pub use error::{
    BoxError, CodecError, CodecOperation, CommandError, StoreError, StreamConflict, ValidationError,
};
pub use event::{
    EventData, EventType, Metadata, Payload, PayloadFormat, Recorded, RecordedEvent, Timestamp,
};
pub use health::{HealthCheck, HealthReport, HealthStatus};
pub use id::{EventId, StreamId, TypedId};
pub use metrics::{
    CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL, COMMAND_ATTEMPTS, COMMAND_CONFLICTS_TOTAL,
    COMMAND_DURATION_SECONDS, COMMAND_METRICS, COMMAND_RETRIES_TOTAL, COMMANDS_TOTAL,
    DEADLINE_METRICS, DEADLINES_FIRED_TOTAL, DEADLINES_OVERDUE, DEADLINES_PENDING,
    MetricDescription, MetricKind, PROJECTION_ERRORS_TOTAL, PROJECTION_EVENTS_APPLIED_TOTAL,
    PROJECTION_LAG_EVENTS, PROJECTION_LAG_SECONDS, PROJECTION_METRICS, PROJECTION_STATE,
    STORE_APPENDED_EVENTS_TOTAL, STORE_ERRORS_TOTAL, STORE_METRICS,
    STORE_OPERATION_DURATION_SECONDS, StoreOperation,
};
pub use store::{
    AppendRequest, AppendStream, Appended, EventStore, LogFilter, StreamEvents, StreamRead,
};
pub use subscription::{Batches, EventBatch, Subscription, SubscriptionExt, SubscriptionOptions};
pub use version::{ExpectedVersion, Position, StreamVersion};
