//! # crossfold-testkit
//!
//! Everything for testing Crossfold code and Crossfold stores:
//!
//! * **Given/when/then for commands** ([`CommandTest`]): run a command's fold, discovery and
//!   decision on a history of events, without a store, and assert on what it decided.
//! * **The store contract suite** ([`store_contract_tests!`], functions in [`contract`]): every
//!   behaviour of [`EventStore`](crossfold_core::EventStore), run against any store.
//! * **proptest strategies** ([`strategies`]) for stream ids, events and append sequences, with
//!   a reference [`model`] of a store to check random sequences against.
//! * **Throwaway PostgreSQL clusters** ([`cluster::TestCluster`]): `initdb` + `pg_ctl` in a
//!   temporary directory on a free port, for tests that restart, crash or restore a server.
//! * **Concurrent execution** ([`concurrent`]): run command sequences from many tasks through
//!   real executors, with strategies for the sequences.
//! * **Fault injection** ([`FaultyStore`]): wraps any store and fails, delays or conflicts on
//!   chosen calls, for chaos tests of the executor.
//! * **Stored events still decode** ([`decoding::assert_every_event_decodes`]): after changing
//!   an event type, check a copy of production data against today's types and upcasters.
//!
//! ```
//! use crossfold_core::{
//!     Command, CommandError, DomainEvent, Emit, Fold, Recorded, StreamId, StreamRef,
//! };
//! use crossfold_testkit::CommandTest;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum DoorEvent { Opened, Closed }
//! impl DomainEvent for DoorEvent {
//!     fn event_type(&self) -> &'static str {
//!         match self { DoorEvent::Opened => "Opened", DoorEvent::Closed => "Closed" }
//!     }
//! }
//!
//! #[derive(Clone, Default)]
//! struct Door { open: bool }
//! impl Fold<DoorEvent> for Door {
//!     fn apply(&mut self, e: &Recorded<DoorEvent>) { self.open = e.event == DoorEvent::Opened; }
//! }
//!
//! struct Open { door: StreamId }
//! impl Command for Open {
//!     type Event = DoorEvent;
//!     type State = Door;
//!     type Streams = StreamId;
//!     fn streams(&self) -> StreamId { self.door.clone() }
//!     fn handle<'x>(&self, state: &Door, door: StreamRef<'x>, out: &mut Emit<'x, DoorEvent>)
//!         -> Result<(), CommandError> {
//!         if state.open {
//!             return Err(CommandError::rejected("already_open", "the door is open"));
//!         }
//!         out.append(door, DoorEvent::Opened);
//!         Ok(())
//!     }
//! }
//!
//! let door = StreamId::new("door-1")?;
//! CommandTest::given([(&door, DoorEvent::Opened), (&door, DoorEvent::Closed)])
//!     .when(Open { door: door.clone() })
//!     .then_expect([(&door, DoorEvent::Opened)]);
//! CommandTest::given([(&door, DoorEvent::Opened)])
//!     .when(Open { door: door.clone() })
//!     .then_rejected("already_open");
//! # Ok::<(), crossfold_core::ValidationError>(())
//! ```
//!
//! A store proves it keeps the contract with one line in an integration test file (each
//! behaviour becomes a `#[test]` named after it; the function is called once per test, so it
//! must return a fresh, empty store):
//!
//! ```
//! async fn fresh_store() -> crossfold_memory::MemoryStore {
//!     crossfold_memory::MemoryStore::new()
//! }
//! crossfold_testkit::store_contract_tests!(fresh_store);
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

pub mod checkpoint_contract;
pub mod cluster;
pub mod concurrent;
pub mod contract;
pub mod deadlines;
pub mod decoding;
mod faulty;
mod given;
pub mod model;
pub mod strategies;

pub use contract::block_on;
pub use faulty::{Fault, FaultKind, FaultyStore, InjectedFault, Injection, Operation};
pub use given::{CommandTest, Given, Then, ToStreamId};
