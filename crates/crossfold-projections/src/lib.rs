//! # crossfold-projections
//!
//! Crossfold's read side: [`Projection`]s feed read models from the event log, each with its
//! own checkpoint, run side by side by a [`ProjectionRunner`].
//!
//! * **Exactly once into the read model's database.** A projection's handler gets a unit of
//!   work of the [`CheckpointStore`](crossfold_core::checkpoint::CheckpointStore) (with PostgreSQL, the
//!   transaction) and the checkpoint commits in it, so after a crash at any point every event
//!   is applied exactly once. Effects outside that unit happen at least once.
//! * **Typed, filtered, batched.** A projection names the events it wants
//!   ([`LogFilter`](crossfold_core::LogFilter): all, streams, categories, event types), gets
//!   them decoded (after its upcasters) in log order, in batches.
//! * **Control from anywhere.** Pause, resume, stop, reset and rebuild are requests stored
//!   with the checkpoint ([`ProjectionControl`](crossfold_core::checkpoint::ProjectionControl)), so another
//!   process — an operator's command line — can steer a running projection. A rebuild builds a
//!   new generation while readers keep reading the serving one, and switches when it has
//!   caught up.
//! * **Status, health and metrics** per projection: state (catching up, live, paused,
//!   stopped, rebuilding, failed, stalled), position, lag in events and seconds, events per
//!   second, last error and retries; [`ProjectionHealth`] for a health registry and the
//!   metrics of [`PROJECTION_METRICS`](crossfold_core::metrics::PROJECTION_METRICS).
//! * **Errors.** Transient failures retry with backoff, also through a database outage; an
//!   event the handler rejects fails its projection (others go on) or, with
//!   [`OnError::DeadLetter`], is set aside with its error.
//! * **Many processes.** Each projection runs in the process holding its lease; a lease
//!   expires when its owner dies and another process takes over; a commit carries the lease's
//!   fencing token, so a process that lost its lease cannot commit.
//!
//! The repository's `docs/projections.md` is the guide.

mod process;
mod projection;
mod runner;

pub use process::{Process, ProcessManager, ProcessManagerProjection, command_failure};
pub use projection::{ApplyContext, HandlerError, OnError, Projection, ProjectionOptions};
pub use runner::{ProjectionHealth, ProjectionRunner, RunnerOptions, RunnerStatus};
