//! # Crossfold
//!
//! Event sourcing without long-lived aggregates. A command declares the streams it reads, folds
//! their merged events into a state of its own, decides, and appends events to several streams
//! **atomically**, with optimistic concurrency on every stream it read.
//!
//! This crate is the facade: it re-exports each of Crossfold's crates as a module —
//! [`core`] (the vocabulary: ids, events, commands, the store contract), [`executor`], and with
//! the `memory` feature (on by default) `memory` — and gathers the names most programs need in
//! [`prelude`]. The `postgres`, `monitoring` and `projections` features add the PostgreSQL
//! store, the Prometheus exporter and health endpoints, and read models fed from the log
//! (`crossfold::projections`, guide in `docs/projections.md`). Every item has one path here:
//! `crossfold::core::StreamId`, `crossfold::executor::Executor`,
//! `crossfold::core::checkpoint::CheckpointStore`. Each part is also its own crate
//! (`crossfold-core`, `crossfold-executor`, `crossfold-memory`, ...) for users who want only
//! one of them.
//!
//! ```
//! use crossfold::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(tag = "type")]
//! enum SeatEvent { Reserved { by: String } }
//! impl DomainEvent for SeatEvent {
//!     fn event_type(&self) -> &'static str { "Reserved" }
//! }
//!
//! /// Reserve a seat, unless someone already has.
//! struct Reserve { seat: StreamId, by: String }
//! impl Command for Reserve {
//!     type Event = SeatEvent;
//!     type State = Option<String>;
//!     type Streams = StreamId;
//!     fn streams(&self) -> StreamId { self.seat.clone() }
//!     fn apply(holder: &mut Option<String>, e: &Recorded<SeatEvent>) {
//!         let SeatEvent::Reserved { by } = &e.event;
//!         *holder = Some(by.clone());
//!     }
//!     fn handle<'x>(&self, holder: &Option<String>, seat: StreamRef<'x>, out: &mut Emit<'x, SeatEvent>)
//!         -> Result<(), CommandError>
//!     {
//!         if let Some(h) = holder {
//!             return Err(CommandError::rejected("seat_taken", format!("held by {h}")));
//!         }
//!         out.append(seat, SeatEvent::Reserved { by: self.by.clone() });
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let executor = Executor::new(MemoryStore::new());
//! let seat = StreamId::new("seat-12A").unwrap();
//! executor.execute(Reserve { seat: seat.clone(), by: "ada".into() }).await.unwrap();
//! let err = executor.execute(Reserve { seat, by: "bob".into() }).await.unwrap_err();
//! assert_eq!(err.rule(), Some("seat_taken"));
//! # });
//! ```

pub use crossfold_core as core;
pub use crossfold_executor as executor;
#[cfg(feature = "memory")]
pub use crossfold_memory as memory;
#[cfg(feature = "monitoring")]
pub use crossfold_monitoring as monitoring;
#[cfg(feature = "postgres")]
pub use crossfold_postgres as postgres;
#[cfg(feature = "projections")]
pub use crossfold_projections as projections;

/// The names most programs need: `use crossfold::prelude::*;`.
pub mod prelude {
    pub use crossfold_core::{
        Command, CommandError, DomainEvent, Emit, ErrorChain, EventStore, ExpectedVersion,
        Recorded, StreamId, StreamRef, StreamVersion, SubscriptionExt, ValidationError,
    };
    pub use crossfold_executor::{Error, ExecutionContext, Executor};
    #[cfg(feature = "memory")]
    pub use crossfold_memory::MemoryStore;
}
