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
//! * **Concurrent execution** ([`concurrent`]): run command sequences from many tasks through
//!   real executors, with strategies for the sequences.
//! * **Fault injection** ([`FaultyStore`]): wraps any store and fails, delays or conflicts on
//!   chosen calls, for chaos tests of the executor.
//!
//! ```
//! use crossfold_core::{Command, CommandError, DomainEvent, Emit, Recorded, StreamId, StreamRef};
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
//! struct Open { door: StreamId }
//! impl Command for Open {
//!     type Event = DoorEvent;
//!     type State = bool; // is it open?
//!     type Streams = StreamId;
//!     fn streams(&self) -> StreamId { self.door.clone() }
//!     fn apply(open: &mut bool, e: &Recorded<DoorEvent>) { *open = e.event == DoorEvent::Opened; }
//!     fn handle<'x>(&self, open: &bool, door: StreamRef<'x>, out: &mut Emit<'x, DoorEvent>)
//!         -> Result<(), CommandError> {
//!         if *open {
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

pub mod concurrent;
pub mod contract;
mod faulty;
mod given;
pub mod model;
pub mod strategies;

pub use contract::block_on;
pub use faulty::{Fault, FaultKind, FaultyStore, InjectedFault, Operation};
pub use given::{CommandTest, Given, Then, ToStreamId};

/// Generates one `#[test]` per behaviour of the store contract suite (see [`contract`]),
/// each running on its own multi-thread Tokio runtime against a store from `$make`.
///
/// `$make` is the path of an `async fn` (no arguments) returning a fresh, empty store; it is
/// called inside the runtime, once per test, so a store that needs a connection or a new
/// database schema can create it there. The calling crate needs no Tokio dependency of its
/// own. Invoke it in a test file of its own: the generated tests take the behaviours' names
/// (listed in [`contract::BEHAVIOURS`]).
///
/// ```
/// // In `tests/store_contract.rs` of a store's crate:
/// async fn fresh_store() -> crossfold_memory::MemoryStore {
///     // A database-backed store would connect and create a fresh schema here.
///     crossfold_memory::MemoryStore::new()
/// }
/// crossfold_testkit::store_contract_tests!(fresh_store);
/// ```
#[macro_export]
macro_rules! store_contract_tests {
    ($make:path) => {
        $crate::__with_behaviours!(__contract_tests[$make]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ([$make:path] $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::block_on(async {
                    let store = $make().await;
                    $crate::contract::$name(store).await
                })
            }
        )*
    };
}

/// Calls `$callback!([$args] behaviour, behaviour, ...)` with the name of every behaviour of
/// the contract suite: the one list both the test macro and [`contract::BEHAVIOURS`] use.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_behaviours {
    ($callback:ident [$($args:tt)*]) => {
        $crate::$callback!([$($args)*]
            absent_stream_reads_as_empty,
            appended_events_read_back_with_every_field,
            multi_stream_append_is_atomic,
            check_only_append_writes_nothing,
            expected_any_always_appends,
            expected_no_stream_requires_an_empty_stream,
            expected_stream_exists_requires_events,
            expected_exact_requires_that_version,
            read_only_streams_are_checked,
            conflict_writes_nothing_and_names_every_stream,
            conflict_on_a_read_only_stream_writes_nothing,
            duplicate_event_id_is_rejected_and_nothing_written,
            invalid_request_is_rejected_and_nothing_written,
            read_stream_paginates,
            read_streams_answers_in_request_order,
            read_all_paginates,
            read_all_filters_by_stream_and_type,
            head_position_is_the_last_event,
            stream_version_and_existence,
            global_order_is_append_order,
            wait_for_events_returns_on_events_or_timeout,
            subscription_catches_up_from_the_start,
            subscription_resumes_from_a_saved_position,
            subscription_delivers_live_events,
            filtered_subscriptions_deliver_only_matching_events,
            subscription_sees_every_event_once_under_concurrent_appends,
            racing_exact_appends_on_one_stream_let_exactly_one_win,
            contending_writers_with_retries_lose_nothing,
            parallel_appends_to_different_streams_all_succeed,
            concurrent_multi_stream_appends_are_all_or_nothing,
            large_append_is_written_whole,
        );
    };
}
