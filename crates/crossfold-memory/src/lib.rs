//! # crossfold-memory
//!
//! [`MemoryStore`], Crossfold's in-memory [`EventStore`](crossfold_core::EventStore): the
//! embedded default to start with and to test against. It keeps the guarantees of the
//! PostgreSQL store — atomic multi-stream appends with optimistic concurrency on every stream,
//! gap-free versions, a commit-safe global log, prompt wake-ups for live subscriptions — and is
//! fast enough to serve as the benchmark baseline. Its appends count their events and their
//! failures in the store metrics (`store="memory"`); it does not time its calls (see
//! [`MemoryStore`] for why).
//!
//! ```
//! use crossfold_core::{
//!     AppendRequest, EventData, EventStore, ExpectedVersion, Payload, StreamId, StreamVersion,
//! };
//! use crossfold_memory::MemoryStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let account = StreamId::new("account-42")?;
//! let opened = EventData::new("AccountOpened", Payload::json(r#"{"owner":"ada"}"#));
//!
//! store
//!     .append(AppendRequest::new().stream(account.clone(), ExpectedVersion::NoStream, vec![opened]))
//!     .await?;
//!
//! // A second writer that still believes the stream is new is refused.
//! let late = EventData::new("AccountOpened", Payload::json(r#"{"owner":"bob"}"#));
//! let refused = store
//!     .append(AppendRequest::new().stream(account.clone(), ExpectedVersion::NoStream, vec![late]))
//!     .await;
//! assert!(refused.is_err_and(|e| e.is_conflict()));
//! assert_eq!(store.stream_version(&account).await?, StreamVersion::new(1));
//! # Ok(())
//! # }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(demo())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        reason = "tests report failures by panicking"
    )
)]

mod checkpoints;
mod chunked;
mod deadlines;
mod ids;
mod log;
mod metrics;
mod snapshots;
mod store;
mod streams;

pub use checkpoints::{MemoryCheckpoints, MemoryUnit};
pub use deadlines::MemoryDeadlineStore;
pub use store::MemoryStore;
