//! # crossfold-executor
//!
//! Runs [`Command`](crossfold_core::Command)s against any
//! [`EventStore`](crossfold_core::EventStore): authorize, read the declared streams in one call
//! (or start from a cached state), merge their events by event id and fold them, discover
//! further streams, decide, and append the new events to several streams atomically with the
//! version of **every** stream read. Conflicts and transient store errors are retried with
//! exponential backoff and jitter; business errors never are.
//!
//! ```
//! use crossfold_core::{
//!     Command, CommandError, DomainEvent, Emit, Fold, Recorded, StreamId, StreamRef,
//! };
//! use crossfold_executor::Executor;
//! use crossfold_memory::MemoryStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Noted(String);
//! impl DomainEvent for Noted {
//!     fn event_type(&self) -> &'static str { "Noted" }
//! }
//!
//! /// How many notes a journal holds.
//! #[derive(Clone, Default)]
//! struct Notes(usize);
//! impl Fold<Noted> for Notes {
//!     fn apply(&mut self, _: &Recorded<Noted>) { self.0 += 1; }
//! }
//!
//! struct Note { journal: StreamId, text: String }
//! impl Command for Note {
//!     type Event = Noted;
//!     type State = Notes;
//!     type Streams = StreamId;
//!     fn streams(&self) -> StreamId { self.journal.clone() }
//!     fn handle<'x>(&self, notes: &Notes, journal: StreamRef<'x>, out: &mut Emit<'x, Noted>)
//!         -> Result<(), CommandError>
//!     {
//!         if notes.0 >= 2 {
//!             return Err(CommandError::rejected("journal_full", "two notes at most"));
//!         }
//!         out.append(journal, Noted(self.text.clone()));
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let executor = Executor::new(MemoryStore::new());
//! let journal = StreamId::new("journal-1").unwrap();
//! for text in ["one", "two"] {
//!     executor.execute(Note { journal: journal.clone(), text: text.into() }).await.unwrap();
//! }
//! let refused = executor.execute(Note { journal, text: "three".into() }).await.unwrap_err();
//! assert_eq!(refused.rule(), Some("journal_full"));
//! # });
//! ```
//!
//! ## Errors
//!
//! [`Error`] wraps what went wrong where it went wrong: the command's refusal as its
//! [`CommandError`](crossfold_core::CommandError), the store's failure as its
//! [`StoreError`](crossfold_core::StoreError) (with the number of attempts made), and the
//! executor's own cases (authorization, timeouts, admission refused under overload, discovery
//! that does not settle, an append whose outcome could not be found out). Each error's message says what failed and leaves its
//! cause to [`source`](std::error::Error::source) (print the whole chain with
//! [`ErrorChain`](crossfold_core::ErrorChain)); [`Error::is_retryable`],
//! [`Error::is_transient`] and [`Error::is_conflict`] classify it, and
//! [`Error::may_have_written`] says whether the command may have been applied all the same
//! (only [`Error::OutcomeUnknown`] and [`Error::Timeout`]; see [`Error`] for how the executor
//! finds out whether an append that failed in doubt committed).
//!
//! ## Admission control
//!
//! A store serves a limited number of calls at once (a PostgreSQL pool's connections) and says
//! how many ([`EventStore::concurrency_limit`](crossfold_core::EventStore::concurrency_limit)).
//! The executor runs at most that many executions at once and queues the others in arrival
//! order; an admitted execution keeps its place through all its attempts, so it never waits
//! behind the queue again between its read and its append. The queue is bounded
//! ([`ExecutorBuilder::admission_queue_depth`]) and so is the wait
//! ([`ExecutorBuilder::admission_timeout`], and the execution's own time limit): an execution
//! that cannot be admitted fails with [`Error::Overloaded`], having read and written nothing,
//! and is not retried by the executor. [`ExecutorBuilder::concurrency_limit`] sets another
//! limit, [`ExecutorBuilder::no_concurrency_limit`] turns admission off, and
//! [`Executor::admission`] reports the queue.
//!
//! ## Design notes: why the optional parts of a command stay on `Command`
//!
//! `Command` has two required methods (`streams`, `handle`); everything else has a default
//! that costs nothing when unused. How the state is folded is not on `Command` at all: `apply`
//! and the `PER_STREAM`/`merge` cache hint belong to the state's
//! [`Fold`](crossfold_core::Fold), so commands over one state share them and the executor reads
//! `PER_STREAM` from the state's type. Some of the command's own defaults are about how the
//! executor runs it rather than what it decides — `expects_new` is a cache hint,
//! `required_permission` feeds the [`Authorizer`] — and a tower-like design would move them out
//! of the trait. They stay, for three reasons:
//!
//! * Rust has no specialization: an executor generic over `C: Command` cannot ask whether `C`
//!   also implements an opt-in trait (a `FreshStreams`, say). Opt-in traits would need a
//!   separate `execute_*` method per combination of capabilities, or a registry keyed by type
//!   that turns a compile-time property into a run-time lookup on the hot path. The same holds
//!   for the state: `PER_STREAM` is an associated const of `Fold` with a default, not an opt-in
//!   `PerStream` trait.
//! * They are properties of the command *type* that the executor needs before it reads
//!   anything (which streams to skip, whether to lock), so they must be known statically to
//!   cost nothing; an associated const and inlined empty defaults are free.
//! * A command's author is the one who knows them (which of its streams are fresh, which
//!   permission it needs), so they belong beside `handle`; whoever writes a state's fold knows
//!   whether the state is per stream, so `PER_STREAM` sits beside `Fold::apply`, where
//!   `CommandTest` checks the claim on every scenario.
//!
//! What is a policy of the *caller* is not on the command: retries, time limits, caches'
//! sizes, the authorizer and the codec are [`ExecutorBuilder`] options, and who is asking and why
//! travels in the [`ExecutionContext`]. So does the idempotency key
//! ([`ExecutionContext::idempotency_key`]): it names a request (a payment, the message a process
//! manager handles, a deadline that fires), not a property of the command, so the caller gives it
//! per execution and any command can run under one.

// An execution goes one way: `execute` (span, metrics, authorization, time limit) → `retry`
// (the loop over attempts) → `attempt`, `load`, `doubt`, `idempotency` → the store.
mod admission;
mod attempt;
mod cache;
mod contention;
mod context;
mod deadlines;
mod doubt;
mod error;
mod execute;
mod executed;
mod idempotency;
mod load;
mod locks;
mod metrics;
mod retry;
mod snapshots;

pub use admission::AdmissionStatus;
pub use context::{Actor, ActorPermissions, Authorizer, Denied, ExecutionContext};
pub use deadlines::{DeadlineHandler, DeadlineWorker, Firing, PollReport};
pub use error::Error;
pub use execute::{Executor, ExecutorBuilder};
pub use executed::Executed;
pub use retry::RetryPolicy;
pub use snapshots::Snapshots;
