//! Firing durable deadlines: a worker claims the due ones from a
//! [`DeadlineStore`](crossfold_core::deadline::DeadlineStore) and executes a command for each, under an
//! idempotency key derived from the deadline, so a deadline fires once even when a worker
//! dies between the command and marking it fired, or two nodes poll at once.

use crossfold_core::ErrorChain;
use std::future::Future;
use std::time::Duration;

use crossfold_core::deadline::{Deadline, DeadlineCounts, DeadlineOutcome, DeadlineStore};
use crossfold_core::metrics::{DEADLINES_FIRED_TOTAL, DEADLINES_OVERDUE, DEADLINES_PENDING};
use crossfold_core::{Clock, Codec, Command, EventStore, StoreError};
use metrics::{counter, gauge};

use crate::context::ExecutionContext;
use crate::error::Error;
use crate::execute::Executor;
use crate::executed::Executed;

/// What to do when a deadline is due: build its command from the deadline and run it through
/// [`Firing::execute`].
///
/// ```
/// use crossfold_core::{Codec, EventStore};
/// use crossfold_executor::{DeadlineHandler, Error, Executed, Firing};
/// # use crossfold_core::{Command, CommandError, DomainEvent, Emit, StreamId, StreamRef};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Expired;
/// # impl DomainEvent for Expired { fn event_type(&self) -> &'static str { "Expired" } }
/// # struct Expire { order: StreamId }
/// # impl Command for Expire {
/// #     type Event = Expired; type State = (); type Streams = StreamId;
/// #     fn streams(&self) -> StreamId { self.order.clone() }
/// #     fn handle<'x>(&self, _: &(), s: StreamRef<'x>, out: &mut Emit<'x, Expired>) -> Result<(), CommandError> {
/// #         out.append(s, Expired); Ok(())
/// #     }
/// # }
///
/// struct ExpireOrders;
/// impl<S: EventStore, C: Codec> DeadlineHandler<S, C> for ExpireOrders {
///     async fn fire(&self, firing: Firing<'_, S, C>) -> Result<Executed, Error> {
///         let order = firing.deadline().payload["order"].as_str().unwrap_or_default();
///         let order = StreamId::new(order).map_err(|e| Error::Command(e.into()))?;
///         firing.execute(Expire { order }).await
///     }
/// }
/// ```
pub trait DeadlineHandler<S: EventStore, C: Codec>: Send + Sync {
    /// Fires `firing`'s deadline. A business refusal marks the deadline refused; a transient
    /// error (or one that leaves the outcome unknown) leaves it pending for a later claim,
    /// which runs it again under the same idempotency key.
    fn fire(
        &self,
        firing: Firing<'_, S, C>,
    ) -> impl Future<Output = Result<Executed, Error>> + Send;
}

/// One deadline being fired: the deadline, and an [`execute`](Self::execute) that runs a
/// command with the deadline's idempotency key, its causation id and its correlation id.
pub struct Firing<'a, S, C> {
    executor: &'a Executor<S, C>,
    deadline: &'a Deadline,
    context: ExecutionContext,
}

impl<'a, S: EventStore, C: Codec> Firing<'a, S, C> {
    /// The deadline that is due.
    pub fn deadline(&self) -> &'a Deadline {
        self.deadline
    }

    /// The context the command runs in: the deadline's idempotency key, causation and
    /// correlation.
    pub fn context(&self) -> &ExecutionContext {
        &self.context
    }

    /// Executes `command` under the deadline's idempotency key: if an earlier firing already
    /// ran it, the earlier outcome is returned ([`Executed::replayed`]) and nothing is written.
    pub async fn execute<Cmd: Command>(&self, command: Cmd) -> Result<Executed, Error> {
        self.executor.execute_with(command, &self.context).await
    }
}

/// What one poll did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollReport {
    /// Deadlines claimed.
    pub claimed: usize,
    /// Fired: their command ran (or had already run under the same key).
    pub fired: usize,
    /// Of those fired, how many had already run (a re-fire after a crash).
    pub replayed: usize,
    /// Refused by a business rule (or failing for good); not tried again.
    pub refused: usize,
    /// Finished meanwhile by another worker's later claim, or cancelled.
    pub superseded: usize,
    /// Failed transiently; left pending for a later claim.
    pub failed: usize,
    /// Pending and overdue deadlines after the poll.
    pub counts: DeadlineCounts,
}

/// Claims due deadlines and fires them. Dropping a worker (or its process dying) at any point
/// loses nothing: a deadline it claimed and did not mark is claimed again by any worker once
/// the lease has passed, and its command, already applied or not, is applied once.
pub struct DeadlineWorker<S, C, D, K, H> {
    executor: Executor<S, C>,
    deadlines: D,
    clock: K,
    handler: H,
    lease: Duration,
    batch: usize,
    poll_interval: Duration,
}

impl<S, C, D, K, H> DeadlineWorker<S, C, D, K, H>
where
    S: EventStore,
    C: Codec,
    D: DeadlineStore,
    K: Clock,
    H: DeadlineHandler<S, C>,
{
    /// A worker firing the deadlines of `deadlines` with `handler` through `executor`, telling
    /// time by `clock`. Defaults: a 30 s lease, 100 deadlines per poll, a poll every second.
    pub fn new(executor: Executor<S, C>, deadlines: D, clock: K, handler: H) -> Self {
        Self {
            executor,
            deadlines,
            clock,
            handler,
            lease: Duration::from_secs(30),
            batch: 100,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// How long a claim holds: longer than firing one batch takes, or another worker fires
    /// the same deadlines meanwhile (harmless, since the command is idempotent, but wasted).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How many deadlines one poll claims at most.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// How long [`run`](Self::run) sleeps between polls that found nothing more to do.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The deadline store.
    pub fn deadlines(&self) -> &D {
        &self.deadlines
    }

    /// Claims the deadlines due now and fires them. Returns an error only when the deadline
    /// store fails; the deadlines claimed and not yet marked are then fired by a later claim.
    pub async fn poll_once(&self) -> Result<PollReport, StoreError> {
        let now = self.clock.now();
        let claims = self
            .deadlines
            .claim_due(now, self.batch, self.lease)
            .await?;
        let mut report = PollReport {
            claimed: claims.len(),
            ..PollReport::default()
        };
        for claim in &claims {
            let deadline = &claim.deadline;
            let mut context =
                ExecutionContext::new().idempotency_key(deadline.id.idempotency_key());
            context.causation_id = deadline.causation_id;
            context.correlation_id = deadline.correlation_id;
            let firing = Firing {
                executor: &self.executor,
                deadline,
                context,
            };
            let outcome = match self.handler.fire(firing).await {
                Ok(executed) => {
                    if executed.replayed {
                        report.replayed += 1;
                    }
                    DeadlineOutcome::Fired
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(deadline = %deadline.id, error = %ErrorChain(&error), "deadline failed; a later claim fires it");
                    report.failed += 1;
                    counter!(DEADLINES_FIRED_TOTAL, "outcome" => "error").increment(1);
                    continue;
                }
                Err(error) => DeadlineOutcome::Refused(ErrorChain(&error).to_string()),
            };
            let done = self
                .deadlines
                .complete(claim, &outcome, self.clock.now())
                .await?;
            let label = match (&outcome, done) {
                (_, false) => {
                    report.superseded += 1;
                    "superseded"
                }
                (DeadlineOutcome::Refused(why), true) => {
                    tracing::info!(deadline = %deadline.id, reason = %why, "deadline refused");
                    report.refused += 1;
                    "refused"
                }
                (_, true) => {
                    report.fired += 1;
                    "fired"
                }
            };
            counter!(DEADLINES_FIRED_TOTAL, "outcome" => label).increment(1);
        }
        report.counts = self.deadlines.deadline_counts(self.clock.now()).await?;
        gauge!(DEADLINES_PENDING).set(report.counts.pending as f64);
        gauge!(DEADLINES_OVERDUE).set(report.counts.overdue as f64);
        Ok(report)
    }

    /// Polls until `shutdown` completes: at once again after a full batch, otherwise after the
    /// poll interval. Store failures are logged and the worker keeps going.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let pause = match self.poll_once().await {
                Ok(report) if report.claimed >= self.batch => Duration::ZERO,
                Ok(_) => self.poll_interval,
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), "deadline poll failed");
                    self.poll_interval
                }
            };
            if tokio::time::timeout(pause, &mut shutdown).await.is_ok() {
                return;
            }
        }
    }
}
