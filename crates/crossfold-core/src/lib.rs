//! # crossfold-core
//!
//! The vocabulary of Crossfold: identities ([`StreamId`], [`EventId`], [`Position`]), versions
//! and append conditions ([`StreamVersion`], [`ExpectedVersion`]), event envelopes
//! ([`RecordedEvent`], [`Recorded`]), commands ([`Command`] and its write tokens) and the
//! states they fold ([`Fold`]), codecs ([`Json`], [`MessagePack`], [`Upcasters`]), the
//! [`EventStore`] contract every store implements and its [`Subscription`]s, the errors of all
//! of them, health checks ([`HealthCheck`]), and the [`Backoff`] every retry loop waits by.
//!
//! Three modules hold what only some programs need:
//!
//! * [`checkpoint`] — where projections keep their place: checkpoints, leases, control.
//! * [`deadline`] — durable deadlines for process managers, driven by a [`Clock`].
//! * [`metrics`] — the names and descriptions of every metric Crossfold records.
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

mod backoff;
pub mod check;
pub mod checkpoint;
mod clock;
mod codec;
mod command;
pub mod deadline;
mod error;
mod event;
mod fold;
mod health;
mod id;
pub mod metrics;
mod snapshot;
mod storable;
mod store;
mod subscription;
mod turn;
mod validation;
mod version;

pub use backoff::{Backoff, Delays, Jitter};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{
    Codec, DomainEvent, Json, MessagePack, Upcasters, decode_payload, encode_event, encode_events,
};
pub use command::{Command, Emit, ReadSet, StreamRef, StreamSet, TokenSource};
pub use error::{
    BoxError, CodecError, CodecOperation, CommandError, ErrorChain, StoreError, StreamConflict,
};
pub use event::{
    EventData, EventType, Metadata, Payload, PayloadFormat, Recorded, RecordedEvent, Timestamp,
};
pub use fold::Fold;
pub use health::{HealthCheck, HealthReport, HealthStatus};
pub use id::{EventId, StreamId, TypedId};
pub use snapshot::{
    MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_NAME, MAX_STATE_VERSION, Snapshot, SnapshotPolicy,
    SnapshotState, SnapshotStore, SnapshotSummary,
};
pub use store::{
    AppendRequest, AppendStream, Appended, EventStore, HeldBack, LogFilter, OpenAppend,
    StreamEvents, StreamRead,
};
pub use subscription::{Batches, EventBatch, Subscription, SubscriptionExt, SubscriptionOptions};
pub use turn::StreamTurn;
pub use validation::ValidationError;
pub use version::{ExpectedVersion, Position, StreamVersion};
