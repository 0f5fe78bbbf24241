//! How conflicts and transient store failures are retried: the policy, and the loop that runs
//! one execution's attempts under it — loading the view, settling appends in doubt before
//! deciding again, catching the view up after a failure, and keeping it for the next command.

use crossfold_core::ErrorChain;
use std::time::Duration;

use tokio::time::Instant;

use crossfold_core::{Backoff, Codec, Command, EventStore, Jitter, ReadSet, StoreError, StreamId};

use crate::admission::{self, Admission};
use crate::attempt::{self, Envelope, Failure};
use crate::contention::{self, HotStreams, Turned};
use crate::context::ExecutionContext;
use crate::doubt::Doubts;
use crate::error::Error;
use crate::executed::Executed;
use crate::idempotency;
use crate::load::{self, Backend, Loader, Refresh, Working};
use crate::locks::{Guards, StreamLocks};
use crate::metrics::CommandMetrics;

/// Retry policy for conflicts and transient store errors: how many attempts, the [`Backoff`]
/// between them (by default exponential from 1 ms to 100 ms with full jitter), and whether
/// commands that lose races to other processes take turns instead. Business errors are never
/// retried.
///
/// **Turns** (on by default): a conflict against a state the store had just shown whole means
/// another writer — another process, or a command of this one when
/// [`serialize_in_process`](crate::ExecutorBuilder::serialize_in_process) is off — got there
/// first. Instead of backing off and racing again, the next attempt waits for its turn on the
/// streams that conflicted ([`EventStore::take_turn`](crossfold_core::EventStore::take_turn)),
/// catches its view up and appends while the writers that wait for their turn queue behind it,
/// in the order they asked. Such a stream stays *hot* for a second after the last sign of
/// contention, and commands of this executor that write it take their turn before their first
/// attempt (queuing for it in the store instead of in-process); a stream nobody contends for
/// cools down and its commands go back to one round trip.
/// A race lost while holding the turn on every stream that conflicted — to a writer that takes
/// no turn — does not use up an attempt (up to `max_attempts` such races). On a store without
/// turns (the memory store) nothing changes: conflicts back off as with turns off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a command may run in total (at least 1), not counting races lost while
    /// holding its turn.
    pub max_attempts: u32,
    /// The waits between attempts.
    pub backoff: Backoff,
    /// Whether commands that lose races to other writers take turns on the contended streams
    /// instead of backing off and racing again (default: true).
    pub take_turns: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(100))
                .jitter(Jitter::Full),
            take_turns: true,
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets the number of attempts.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Whether commands that lose races to other writers take turns on the contended streams
    /// (default: true); off, they back off and race again.
    pub fn take_turns(mut self, on: bool) -> Self {
        self.take_turns = on;
        self
    }

    /// Sets the waits between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the first wait, keeping the cap and the jitter.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.backoff = Backoff::new(delay, self.backoff.max()).jitter(self.backoff.jitter_kind());
        self
    }

    /// Sets the longest wait, keeping the first wait and the jitter.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.backoff = Backoff::new(self.backoff.first(), delay).jitter(self.backoff.jitter_kind());
        self
    }

    /// The wait after `attempt` failed attempts (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }
}

/// What the executions of one executor run with: the store, the codec, the loader with its
/// caches, the retry policy, the in-process stream locks, the admission control, and the
/// streams other writers contend for.
pub(crate) struct Runner<S, C> {
    store: S,
    codec: C,
    loader: Loader,
    policy: RetryPolicy,
    locks: Option<StreamLocks>,
    admission: Option<Admission>,
    hot: HotStreams,
}

impl<S, C> Runner<S, C> {
    pub(crate) fn new(
        store: S,
        codec: C,
        loader: Loader,
        policy: RetryPolicy,
        locks: Option<StreamLocks>,
        admission: Option<Admission>,
    ) -> Self {
        Self {
            store,
            codec,
            loader,
            policy,
            locks,
            admission,
            hot: HotStreams::new(1024),
        }
    }

    /// The admission control, if there is one.
    pub(crate) fn admission(&self) -> Option<&Admission> {
        self.admission.as_ref()
    }

    /// The retry loop of one execution, with nothing counted yet.
    pub(crate) fn retries(&self) -> Retries<'_, S, C> {
        Retries {
            runner: self,
            attempts: 0,
            waited: false,
            queued_since: None,
        }
    }
}

/// One execution's way through the retry loop. The counters live here rather than in the
/// loop's future so that they outlive it: a time limit drops the future, and the attempts made
/// until then, and whether it queued behind another command, still count.
pub(crate) struct Retries<'r, S, C> {
    runner: &'r Runner<S, C>,
    attempts: u32,
    waited: bool,
    queued_since: Option<Instant>,
}

/// What the retry loop of one execution counted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tally {
    /// How many times the command ran.
    pub(crate) attempts: u32,
    /// Whether it waited for a command of this process that declared a common stream.
    pub(crate) waited: bool,
    /// Since when it has been waiting for admission, if it still is.
    pub(crate) queued_since: Option<Instant>,
}

impl<S: EventStore, C: Codec> Retries<'_, S, C> {
    /// What the loop counted, so far or in all.
    pub(crate) fn tally(&self) -> Tally {
        Tally {
            attempts: self.attempts,
            waited: self.waited,
            queued_since: self.queued_since,
        }
    }

    /// Runs `command` until an attempt stands, a failure is final, or the policy gives up.
    /// `deadline` is when the execution's time limit strikes, if it has one.
    pub(crate) async fn run<Cmd: Command>(
        &mut self,
        command: &Cmd,
        context: &ExecutionContext,
        metrics: &CommandMetrics,
        deadline: Option<Instant>,
    ) -> Result<Executed, Error> {
        let marker = idempotency::marker_stream(context.idempotency_key.as_deref())?;
        let declared = ReadSet::of(command);
        let policy = self.runner.policy;
        // Streams other writers contend for: this command waits for its turn on them in the
        // store, with the writers of every process, rather than in this process's queue.
        let hot = if policy.take_turns {
            self.runner
                .hot
                .hot(declared.ids().iter().filter(|id| !command.expects_new(id)))
        } else {
            Vec::new()
        };
        // A stream the command expects to be new (named after a fresh id) is not shared with
        // other commands of this process; locking it would only add false collisions.
        let (runner, waited) = (self.runner, &mut self.waited);
        let declared_ids = declared.ids();
        // The in-process locks first, then the turn on hot streams (boxed: only contended
        // executions take one), each in one order, so that no two executions wait for each
        // other in a cycle. Like a lock, the turn is waited for without a place in admission.
        let locking = async move {
            let guards = match &runner.locks {
                Some(locks) => {
                    locks
                        .lock(
                            declared_ids
                                .iter()
                                .filter(|id| !command.expects_new(id) && !hot.contains(id)),
                            waited,
                        )
                        .await
                }
                None => Guards::None,
            };
            let turned = if hot.is_empty() {
                None
            } else {
                Box::pin(contention::take_turn(
                    &runner.store,
                    &runner.hot,
                    hot,
                    metrics,
                ))
                .await
            };
            (guards, turned)
        };
        // Admission (when the executor has a concurrency limit) comes before the locks, and the
        // place is kept through every attempt, so that an execution never queues again between
        // its read and its append. A refusal is final: nothing was read.
        let (mut place, (_guards, entry_turn)) = admission::enter(
            runner.admission.as_ref(),
            locking,
            deadline,
            &mut self.queued_since,
            metrics,
        )
        .await?;
        let envelope = Envelope::new(context, marker);
        // Boxed, and only once an append is in doubt: whatever lives across the loop's awaits
        // makes every execution's future larger.
        let mut doubts: Option<Box<Doubts>> = None;
        // One loop in this function rather than a function of its own, and the futures of
        // the paths that only faults take boxed: a larger future costs every execution its
        // copying (counted with callgrind), and nearly all executions meet no fault.
        let result: Result<Executed, Error> = 'run: {
            // Raised by races lost while holding the turn (see `RetryPolicy`), up to twice the
            // policy's attempts.
            let mut limit = policy.max_attempts;
            // The turn on contended streams, once taken; held until the outcome is known.
            let mut turned: Option<Box<Turned>> = entry_turn;
            // `None` means "fold again from the store, trusting no cache" (when the view cannot
            // be caught up); the first load may start from the caches.
            let mut loaded = Some(load::load(self.runner, command, &declared, true).await);
            let mut conflicts = 0u32;
            // Set by the arms below that wait before the next attempt, and catch the view up
            // first: the waiting happens here, where the arms' bindings are gone, so that it
            // does not enlarge the future of every execution. Under a turn a view taken from
            // the caches is caught up before deciding: others wrote the streams meanwhile.
            let (mut pause, mut catch_up) = (
                false,
                turned.is_some() && matches!(&loaded, Some(Ok(work)) if !work.verified),
            );
            loop {
                if pause {
                    pause = false;
                    tokio::time::sleep(policy.delay(self.attempts)).await;
                }
                if catch_up {
                    catch_up = false;
                    if let Some(Ok(work)) = loaded.take() {
                        loaded = match Box::pin(self.runner.catch_up(
                            command,
                            work,
                            doubts.as_deref_mut(),
                        ))
                        .await
                        {
                            Ok(next) => next,
                            Err(error) => break 'run Err(error),
                        };
                    }
                }
                self.attempts += 1;
                let fresh = match loaded.take() {
                    Some(Ok(work)) => Ok(work),
                    Some(Err(error)) => Err(error),
                    None => load::load(self.runner, command, &declared, false).await,
                };
                let mut work = match fresh {
                    Ok(work) => work,
                    Err(Error::Store { source: error, .. })
                        if error.is_transient() && self.attempts < limit =>
                    {
                        metrics.retries.increment(1);
                        tracing::debug!(error = %ErrorChain(&error), attempt = self.attempts, "store unavailable, retrying");
                        tokio::time::sleep(policy.delay(self.attempts)).await;
                        continue;
                    }
                    Err(error) => break 'run Err(error),
                };
                // Never decide again before finding out whether an earlier append of this
                // execution committed: deciding on a view that holds its events (unrecognised)
                // would apply the command twice.
                if let Some(open) = doubts.as_deref_mut() {
                    match Box::pin(open.settle_before_deciding(&self.runner.store, &mut work)).await
                    {
                        Ok(Some(events)) => {
                            tracing::debug!(
                                attempt = self.attempts,
                                "an append in doubt had committed"
                            );
                            // The view is a fold of the versions it shows, whoever wrote them: the
                            // next command may start from it (a cached view only has to be true,
                            // not recent). Without it, that command refolds whole streams.
                            self.runner.loader.keep::<Cmd>(&declared, work);
                            break 'run Ok(Executed {
                                events,
                                attempts: self.attempts,
                                conflicts,
                                replayed: false,
                            });
                        }
                        Ok(None) => {}
                        Err(error) if error.is_transient() && self.attempts < limit => {
                            metrics.retries.increment(1);
                            tracing::debug!(error = %ErrorChain(&error), attempt = self.attempts, "store unavailable, retrying");
                            loaded = Some(Ok(work));
                            pause = true;
                            continue;
                        }
                        Err(error) => {
                            self.runner.loader.keep::<Cmd>(&declared, work);
                            break 'run Err(Error::store(error, self.attempts));
                        }
                    }
                }
                let failure = match attempt::decide_and_append(
                    self.runner,
                    command,
                    &mut work,
                    &envelope,
                    self.attempts,
                    turned.as_deref().map(Turned::turn),
                )
                .await
                {
                    Ok(mut executed) => {
                        executed.conflicts = conflicts;
                        self.runner.loader.keep::<Cmd>(&declared, work);
                        break 'run Ok(executed);
                    }
                    Err(failure) => failure,
                };
                match failure {
                    Failure::Fatal(error) => {
                        self.runner.loader.keep::<Cmd>(&declared, work);
                        break 'run Err(error);
                    }
                    Failure::Replay(marker) => {
                        let mut replayed =
                            match idempotency::replay(&self.runner.store, &marker, self.attempts)
                                .await
                            {
                                Ok(replayed) => replayed,
                                Err(error) => break 'run Err(error),
                            };
                        replayed.conflicts = conflicts;
                        break 'run Ok(replayed);
                    }
                    Failure::Stale { rebuild } => {
                        // The decision was made on a state that turned out to be behind; it has
                        // been refreshed, so decide again (not a conflict: nothing was written).
                        if self.attempts >= limit {
                            if !rebuild {
                                self.runner.loader.keep::<Cmd>(&declared, work);
                            }
                            break 'run Err(Error::Contended {
                                attempts: self.attempts,
                            });
                        }
                        if !rebuild {
                            loaded = Some(Ok(work));
                        }
                    }
                    Failure::Conflict(found) => {
                        conflicts += 1;
                        metrics.conflicts.increment(1);
                        // Contended: lost against a state just confirmed, or refused for
                        // another writer's turn (which only a writer that takes turns too can
                        // get past).
                        let turn_refused = found.iter().any(|c| c.turn_held);
                        let contended = work.verified || turn_refused;
                        // Lost, under the turn on every stream that conflicted, to a writer that
                        // takes no turn: the turn keeps its place and the attempt is not used
                        // up (up to the policy's attempts again). Refused for a turn on a stream
                        // the turn covers, the turn is not held any more (its session ended, or
                        // a store wrapper appended without it): it is given back and taken again.
                        let under_turn = contended
                            && !turn_refused
                            && turned.as_deref().is_some_and(|turn| turn.covers(&found));
                        if under_turn && limit < policy.max_attempts.saturating_mul(2) {
                            limit += 1;
                        }
                        if self.attempts >= limit {
                            self.runner.loader.keep::<Cmd>(&declared, work);
                            break 'run Err(Error::store(
                                StoreError::Conflict(found),
                                self.attempts,
                            ));
                        }
                        metrics.retries.increment(1);
                        if !contended && policy.take_turns {
                            self.runner.hot.stale(found.iter().map(|c| &c.stream));
                        }
                        if contended && policy.take_turns {
                            let hot = &self.runner.hot;
                            hot.mark(found.iter().map(|c| &c.stream));
                            if !under_turn {
                                // Wait for the turn (widened to every stream that conflicted),
                                // then catch up under it and decide again. A turn held already
                                // is given back first: a caller takes its turns all at once,
                                // in one order.
                                let mut streams: Vec<StreamId> =
                                    found.iter().map(|c| c.stream.clone()).collect();
                                if let Some(held) = turned.take() {
                                    streams.extend_from_slice(held.streams());
                                }
                                // Waited for without a place in admission: the execution that
                                // holds the turn may need one to finish.
                                turned = match Box::pin(admission::wait_without_place(
                                    runner.admission.as_ref(),
                                    &mut place,
                                    contention::take_turn(&runner.store, hot, streams, metrics),
                                    deadline,
                                    &mut self.queued_since,
                                    metrics,
                                ))
                                .await
                                {
                                    Ok(turned) => turned,
                                    Err(error) => break 'run Err(error),
                                };
                                if turned.is_some() {
                                    loaded = Some(Ok(work));
                                    catch_up = true;
                                    continue;
                                }
                            }
                        }
                        match load::refresh(self.runner, command, &mut work, Some(&found)).await {
                            Ok(Refresh::Changed | Refresh::Unchanged) => loaded = Some(Ok(work)),
                            Ok(Refresh::Rebuild) => {}
                            // The view, behind as it is, is still a true fold: the next attempt
                            // conflicts again and catches up then.
                            Err(error) if error.is_transient() => loaded = Some(Ok(work)),
                            Err(error) => break 'run Err(error),
                        }
                        // A conflict against a state we had just confirmed means another process
                        // is writing the same streams: back off (unless holding the turn). A
                        // conflict against a cached or assumed state only means the cache was
                        // behind: retry at once.
                        if contended && turned.is_none() {
                            tokio::time::sleep(policy.delay(self.attempts)).await;
                        }
                    }
                    Failure::Transient(error) => {
                        if self.attempts >= limit {
                            self.runner.loader.keep::<Cmd>(&declared, work);
                            break 'run Err(Error::store(error, self.attempts));
                        }
                        metrics.retries.increment(1);
                        tracing::debug!(error = %ErrorChain(&error), attempt = self.attempts, "transient store error, retrying");
                        loaded = Some(Ok(work));
                        (pause, catch_up) = (true, true);
                    }
                    Failure::InDoubt(pair) => {
                        let (error, doubt) = *pair;
                        tracing::warn!(
                            error = %ErrorChain(&error),
                            attempt = self.attempts,
                            "an append failed without telling whether it committed; finding out"
                        );
                        let open = doubts.get_or_insert_with(Box::default);
                        open.add(doubt);
                        // Whatever the append did, the cached streams of this read set may not
                        // show it.
                        self.runner.loader.forget_streams(work.read_set.ids());
                        if self.attempts >= limit {
                            self.runner.loader.keep::<Cmd>(&declared, work);
                            break 'run Err(Error::OutcomeUnknown {
                                source: error,
                                attempts: self.attempts,
                            });
                        }
                        open.left_open_by(error);
                        metrics.retries.increment(1);
                        // Nothing is decided before `settle_before_deciding` has found out
                        // whether the append committed; catching the view up first often
                        // answers already.
                        loaded = Some(Ok(work));
                        (pause, catch_up) = (true, true);
                    }
                }
            }
        };
        match result {
            // A refusal is decided on a view in which the first stream of every append in
            // doubt was still at the version that append expected; the view differs from the
            // one that append was decided on (the same view would give the same decision), so
            // some stream it expected has moved on and it can never commit.
            Err(error) if !matches!(error, Error::Command(_)) && doubts.is_some() => match doubts {
                Some(open) => {
                    Box::pin((*open).give_up(&self.runner.store, error, self.attempts)).await
                }
                None => Err(error),
            },
            other => other,
        }
    }
}

impl<S: EventStore, C: Codec> Backend for Runner<S, C> {
    type Store = S;
    type Codec = C;

    fn store(&self) -> &S {
        &self.store
    }

    fn codec(&self) -> &C {
        &self.codec
    }

    fn loader(&self) -> &Loader {
        &self.loader
    }
}

impl<S: EventStore, C: Codec> Runner<S, C> {
    /// Catches the view up after a failed append or read: reads what changed since it, in one
    /// snapshot, rather than folding the streams' whole history again; the read doubles as a
    /// first look at the appends in doubt. If the store fails again, the view is kept as it
    /// was (the next append's version check catches up).
    async fn catch_up<Cmd: Command>(
        &self,
        command: &Cmd,
        mut work: Working<Cmd::State>,
        doubts: Option<&mut Doubts>,
    ) -> Result<Option<Result<Working<Cmd::State>, Error>>, Error> {
        match load::refresh(self, command, &mut work, None).await {
            Ok(Refresh::Rebuild) => Ok(None),
            Ok(Refresh::Changed | Refresh::Unchanged) => {
                if let Some(doubts) = doubts {
                    doubts.note_free(&work);
                }
                Ok(Some(Ok(work)))
            }
            Err(error) if error.is_transient() => Ok(Some(Ok(work))),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_waits_with_full_jitter_and_setters_keep_the_rest() {
        let p = RetryPolicy::default()
            .base_delay(Duration::from_millis(2))
            .max_delay(Duration::from_millis(50));
        assert_eq!(p.backoff.jitter_kind(), Jitter::Full);
        assert_eq!(p.backoff.ceiling(1), Duration::from_millis(2));
        assert_eq!(p.backoff.ceiling(10), Duration::from_millis(50));
        for attempt in 1..20 {
            assert!(p.delay(attempt) <= p.backoff.ceiling(attempt));
        }
    }

    #[test]
    fn at_least_one_attempt() {
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
    }
}
