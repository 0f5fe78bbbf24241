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
//! use crossfold_core::{Command, CommandError, DomainEvent, Emit, Recorded, StreamId, StreamRef};
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
//! struct Note { journal: StreamId, text: String }
//! impl Command for Note {
//!     type Event = Noted;
//!     type State = usize;
//!     type Streams = StreamId;
//!     fn streams(&self) -> StreamId { self.journal.clone() }
//!     fn apply(count: &mut usize, _: &Recorded<Noted>) { *count += 1; }
//!     fn handle<'x>(&self, count: &usize, journal: StreamRef<'x>, out: &mut Emit<'x, Noted>)
//!         -> Result<(), CommandError>
//!     {
//!         if *count >= 2 {
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

mod cache;
mod context;
mod executor;
mod locks;
mod metrics;
mod retry;
mod view;

pub use context::{Actor, ActorPermissions, Authorizer, Denied, ExecutionContext};
pub use executor::{Executed, Executor, ExecutorBuilder};
pub use metrics::{
    CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL, COMMAND_ATTEMPTS, COMMAND_CONFLICTS_TOTAL,
    COMMAND_DURATION_SECONDS, COMMAND_RETRIES_TOTAL, COMMANDS_TOTAL, describe_metrics,
};
pub use retry::RetryPolicy;
