//! A store wrapper that injects faults: errors, delays and forced conflicts on chosen calls.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossfold_core::{
    AppendRequest, Appended, EventStore, HeldBack, LogFilter, Position, RecordedEvent, StoreError,
    StreamConflict, StreamEvents, StreamId, StreamRead, StreamTurn, StreamVersion,
};
use crossfold_memory::MemoryStore;

/// A call of the [`EventStore`] trait, as counted and targeted by [`FaultyStore`]. The provided
/// methods (`read_stream`, `stream_version`, ...) are reads of [`ReadStreams`](Self::ReadStreams).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `read_streams` (and the reads built on it).
    ReadStreams,
    /// `append`.
    Append,
    /// `read_all`.
    ReadAll,
    /// `head_position`.
    HeadPosition,
    /// `wait_for_events`.
    WaitForEvents,
}

impl Operation {
    const ALL: [Operation; 5] = [
        Operation::ReadStreams,
        Operation::Append,
        Operation::ReadAll,
        Operation::HeadPosition,
        Operation::WaitForEvents,
    ];

    fn index(self) -> usize {
        match self {
            Operation::ReadStreams => 0,
            Operation::Append => 1,
            Operation::ReadAll => 2,
            Operation::HeadPosition => 3,
            Operation::WaitForEvents => 4,
        }
    }
}

/// Which error an injected failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// [`StoreError::Unavailable`] (transient).
    Unavailable,
    /// [`StoreError::Contention`] (transient).
    Contention,
    /// [`StoreError::Timeout`] (transient).
    Timeout,
    /// [`StoreError::Backend`] (permanent).
    Backend,
    /// [`StoreError::Conflict`] on an append, naming the targeted stream (or every stream of
    /// the request) with its real current version. On any other call, where a conflict cannot
    /// happen, it is reported as [`StoreError::Contention`].
    Conflict,
}

/// The source of every error a [`FaultyStore`] injects, so a test can tell injected failures
/// from real ones (`error.source()` downcasts to it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("injected {kind:?} fault on {operation:?} call #{call}")]
pub struct InjectedFault {
    /// The call that failed.
    pub operation: Operation,
    /// Its number among calls of that operation (1-based).
    pub call: u64,
    /// The kind of failure.
    pub kind: FaultKind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    Always,
    Nth(u64),
    From(u64),
    Every(u64),
    Probability(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Fail(FaultKind),
    Delay(Duration),
}

/// A fault to inject: which calls it applies to, when it triggers, and what it does.
///
/// Build one with [`Fault::on`] (or [`Fault::on_any`]), narrow it down, and pick an action;
/// without an action it fails with [`FaultKind::Unavailable`]. Counting for
/// [`nth`](Self::nth), [`from_call`](Self::from_call) and [`every`](Self::every) is over the
/// calls this fault applies to (1-based), so `Fault::on(Operation::Append).for_stream(s).nth(2)`
/// is the second append that touches `s`.
///
/// ```
/// use std::time::Duration;
/// use crossfold_testkit::{Fault, FaultKind, FaultyStore, Operation};
///
/// let store = FaultyStore::in_memory()
///     .with(Fault::on(Operation::Append).nth(3).fail(FaultKind::Unavailable))
///     .with(Fault::on(Operation::ReadStreams).with_probability(0.1, 42).delay(Duration::from_millis(5)))
///     .with(Fault::on(Operation::Append).from_call(10).times(2).conflict());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    operation: Option<Operation>,
    stream: Option<StreamId>,
    trigger: Trigger,
    seed: u64,
    times: Option<u64>,
    action: Action,
    after_call: bool,
}

impl Fault {
    /// A fault on calls of `operation`, triggering on every such call until narrowed down.
    pub fn on(operation: Operation) -> Self {
        Self {
            operation: Some(operation),
            ..Self::on_any()
        }
    }

    /// A fault on calls of any operation.
    pub fn on_any() -> Self {
        Self {
            operation: None,
            stream: None,
            trigger: Trigger::Always,
            seed: 0,
            times: None,
            action: Action::Fail(FaultKind::Unavailable),
            after_call: false,
        }
    }

    /// Only calls that touch `stream`: appends and `read_streams` naming it, and `read_all`
    /// calls whose filter does not exclude it. `head_position` and `wait_for_events` touch no
    /// stream.
    pub fn for_stream(mut self, stream: StreamId) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Only the `n`-th matching call (1-based).
    pub fn nth(mut self, n: u64) -> Self {
        self.trigger = Trigger::Nth(n);
        self
    }

    /// The `n`-th matching call and every one after it.
    pub fn from_call(mut self, n: u64) -> Self {
        self.trigger = Trigger::From(n);
        self
    }

    /// Every `n`-th matching call (`n`, `2n`, ...).
    pub fn every(mut self, n: u64) -> Self {
        self.trigger = Trigger::Every(n.max(1));
        self
    }

    /// Each matching call with probability `p`, drawn from a generator seeded with `seed`, so a
    /// failing chaos test replays the same faults given the same sequence of calls.
    pub fn with_probability(mut self, p: f64, seed: u64) -> Self {
        self.trigger = Trigger::Probability(p.clamp(0.0, 1.0));
        self.seed = seed;
        self
    }

    /// Stops after injecting `n` times.
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Lets the call reach the wrapped store first and fails it afterwards: the append is
    /// written but the caller sees an error, as when a connection drops before the commit is
    /// acknowledged. Ignored by delays. Faithful to a real store with
    /// [`FaultKind::Unavailable`] and [`FaultKind::Timeout`], the errors that can hide a
    /// commit; a real store reports contention, conflicts and permanent failures only for
    /// appends that wrote nothing, so with those kinds it breaks the store contract on purpose.
    pub fn after_call(mut self) -> Self {
        self.after_call = true;
        self
    }

    /// Fails with an error of this kind.
    pub fn fail(mut self, kind: FaultKind) -> Self {
        self.action = Action::Fail(kind);
        self
    }

    /// Fails an append with a version conflict (see [`FaultKind::Conflict`]).
    pub fn conflict(self) -> Self {
        self.fail(FaultKind::Conflict)
    }

    /// Delays the call by `delay`, then lets it through (unless another fault fails it).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.action = Action::Delay(delay);
        self
    }
}

struct Active {
    fault: Fault,
    /// Its place among every fault added.
    index: usize,
    matched: u64,
    injected: u64,
    rng: fastrand::Rng,
}

impl Active {
    fn fires(&mut self, operation: Operation, touches: &dyn Fn(&StreamId) -> bool) -> bool {
        if self.fault.operation.is_some_and(|op| op != operation) {
            return false;
        }
        if let Some(stream) = &self.fault.stream
            && !touches(stream)
        {
            return false;
        }
        self.matched += 1;
        if self.fault.times.is_some_and(|n| self.injected >= n) {
            return false;
        }
        let fires = match self.fault.trigger {
            Trigger::Always => true,
            Trigger::Nth(n) => self.matched == n,
            Trigger::From(n) => self.matched >= n,
            Trigger::Every(n) => self.matched.is_multiple_of(n),
            Trigger::Probability(p) => self.rng.f64() < p,
        };
        if fires {
            self.injected += 1;
        }
        fires
    }
}

/// One fault injected into one call, as [`FaultyStore::log`] records it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Injection {
    /// The call.
    pub operation: Operation,
    /// Its number among calls of that operation (1-based).
    pub call: u64,
    /// Which fault fired: its place among the faults added (0-based, in the order of
    /// [`FaultyStore::faults`]).
    pub fault: usize,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Vec<Active>>,
    calls: [AtomicU64; 5],
    injected: AtomicU64,
    /// Every fault added so far with how often it fired (kept by [`FaultyStore::clear`]).
    fired: Mutex<Vec<(Fault, u64)>>,
    log: Mutex<Option<Vec<Injection>>>,
}

/// What to do to one call.
struct Plan {
    call: u64,
    delay: Duration,
    failure: Option<Failure>,
}

struct Failure {
    kind: FaultKind,
    after_call: bool,
    stream: Option<StreamId>,
}

/// Wraps any [`EventStore`] and injects faults into chosen calls, counting every call: for
/// chaos tests of code built on a store (retries, idempotency, subscriptions).
///
/// Faults can be added and cleared while the store is in use (clones share them), so a test can
/// break the store mid-run and heal it again. Without faults it passes every call through
/// unchanged.
pub struct FaultyStore<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for FaultyStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("faults", &self.faults().len())
            .field("injected", &self.injected())
            .finish()
    }
}

impl FaultyStore<MemoryStore> {
    /// A faulty store around a fresh [`MemoryStore`].
    pub fn in_memory() -> Self {
        Self::new(MemoryStore::new())
    }
}

impl<S> FaultyStore<S> {
    /// Wraps `inner`, with no faults yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            shared: Arc::default(),
        }
    }

    /// Adds a fault and returns the store (for building).
    pub fn with(self, fault: Fault) -> Self {
        self.inject(fault);
        self
    }

    /// Adds a fault. Faults are consulted in the order they were added; delays add up, and the
    /// first failure that fires wins.
    pub fn inject(&self, fault: Fault) {
        let rng = fastrand::Rng::with_seed(fault.seed);
        let mut faults = self.lock();
        let index = {
            let mut fired = lock(&self.shared.fired);
            fired.push((fault.clone(), 0));
            fired.len() - 1
        };
        faults.push(Active {
            fault,
            index,
            matched: 0,
            injected: 0,
            rng,
        });
    }

    /// Starts recording every injection (see [`log`](Self::log)), and returns the store.
    pub fn logged(self) -> Self {
        lock(&self.shared.log).get_or_insert_with(Vec::new);
        self
    }

    /// Every injection since [`logged`](Self::logged), in the order the faults fired: a
    /// reproducible run records the same log again.
    pub fn log(&self) -> Vec<Injection> {
        lock(&self.shared.log).clone().unwrap_or_default()
    }

    /// Every fault ever added (cleared ones too), with how many times it fired, in the order
    /// they were added.
    pub fn injected_by_fault(&self) -> Vec<(Fault, u64)> {
        lock(&self.shared.fired).clone()
    }

    /// Removes every fault; calls pass through again. Counts are kept.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The faults in place.
    pub fn faults(&self) -> Vec<Fault> {
        self.lock().iter().map(|a| a.fault.clone()).collect()
    }

    /// How many calls of `operation` were made (injected failures included).
    pub fn calls(&self, operation: Operation) -> u64 {
        self.shared.calls[operation.index()].load(Ordering::SeqCst)
    }

    /// How many calls were made in total.
    pub fn total_calls(&self) -> u64 {
        Operation::ALL.iter().map(|op| self.calls(*op)).sum()
    }

    /// How many faults were injected (failures and delays).
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// The wrapped store, for reading behind the faults' back.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Active>> {
        lock(&self.shared.faults)
    }

    fn plan(&self, operation: Operation, touches: &dyn Fn(&StreamId) -> bool) -> Plan {
        let call = self.shared.calls[operation.index()].fetch_add(1, Ordering::SeqCst) + 1;
        let mut plan = Plan {
            call,
            delay: Duration::ZERO,
            failure: None,
        };
        for active in self.lock().iter_mut() {
            if plan.failure.is_some() && matches!(active.fault.action, Action::Fail(_)) {
                continue;
            }
            if !active.fires(operation, touches) {
                continue;
            }
            self.shared.injected.fetch_add(1, Ordering::SeqCst);
            if let Some((_, n)) = lock(&self.shared.fired).get_mut(active.index) {
                *n += 1;
            }
            if let Some(log) = lock(&self.shared.log).as_mut() {
                log.push(Injection {
                    operation,
                    call,
                    fault: active.index,
                });
            }
            match active.fault.action {
                Action::Delay(d) => plan.delay = plan.delay.saturating_add(d),
                Action::Fail(kind) => {
                    plan.failure = Some(Failure {
                        kind,
                        after_call: active.fault.after_call,
                        stream: active.fault.stream.clone(),
                    });
                }
            }
        }
        plan
    }
}

/// A poisoned lock only means a panic elsewhere while counting; the counts are still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn injected_error(operation: Operation, call: u64, kind: FaultKind) -> StoreError {
    let source = Box::new(InjectedFault {
        operation,
        call,
        kind,
    });
    match kind {
        FaultKind::Unavailable => StoreError::Unavailable(source),
        FaultKind::Timeout => StoreError::Timeout(source),
        FaultKind::Backend => StoreError::Backend(source),
        FaultKind::Contention | FaultKind::Conflict => StoreError::Contention(source),
    }
}

impl<S: EventStore> FaultyStore<S> {
    /// Runs a call that has no streams to name in a conflict.
    async fn run<T>(
        &self,
        operation: Operation,
        plan: Plan,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        match plan.failure {
            None => call.await,
            Some(f) if !f.after_call => Err(injected_error(operation, plan.call, f.kind)),
            Some(f) => {
                let _ = call.await;
                Err(injected_error(operation, plan.call, f.kind))
            }
        }
    }

    /// An append (under `turn`, when given) with the faults planned for appends.
    async fn faulty_append(
        &self,
        turn: Option<&StreamTurn>,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        let plan = self.plan(Operation::Append, &|s| {
            request.streams.iter().any(|r| &r.stream == s)
        });
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        let inner = |request| async move {
            match turn {
                Some(turn) => self.inner.append_in_turn(turn, request).await,
                None => self.inner.append(request).await,
            }
        };
        let Some(failure) = plan.failure else {
            return inner(request).await;
        };
        let targets: Vec<_> = request
            .streams
            .iter()
            .filter(|r| failure.stream.as_ref().is_none_or(|s| *s == r.stream))
            .map(|r| (r.stream.clone(), r.expected))
            .collect();
        if failure.after_call {
            let _ = inner(request).await;
        }
        if failure.kind == FaultKind::Conflict {
            Err(self.forced_conflict(targets).await)
        } else {
            Err(injected_error(Operation::Append, plan.call, failure.kind))
        }
    }

    /// A conflict naming `streams` with their real current versions.
    async fn forced_conflict(
        &self,
        streams: Vec<(StreamId, crossfold_core::ExpectedVersion)>,
    ) -> StoreError {
        let reads: Vec<StreamRead> = streams
            .iter()
            .map(|(s, _)| StreamRead::version_only(s.clone()))
            .collect();
        let actual: Vec<StreamVersion> = match self.inner.read_streams(&reads).await {
            Ok(read) => read.into_iter().map(|r| r.version).collect(),
            Err(_) => Vec::new(),
        };
        StoreError::Conflict(
            streams
                .into_iter()
                .enumerate()
                .map(|(i, (stream, expected))| {
                    StreamConflict::new(
                        stream,
                        expected,
                        actual.get(i).copied().unwrap_or_default(),
                    )
                })
                .collect(),
        )
    }
}

impl<S: EventStore> EventStore for FaultyStore<S> {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        let plan = self.plan(Operation::ReadStreams, &|s| {
            reads.iter().any(|r| &r.stream == s)
        });
        self.run(Operation::ReadStreams, plan, self.inner.read_streams(reads))
            .await
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.faulty_append(None, request).await
    }

    /// An append fault targets it as it targets [`append`](EventStore::append).
    async fn append_in_turn(
        &self,
        turn: &StreamTurn,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        self.faulty_append(Some(turn), request).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let plan = self.plan(Operation::ReadAll, &|s| {
            filter
                .streams
                .as_ref()
                .is_none_or(|streams| streams.contains(s))
        });
        self.run(
            Operation::ReadAll,
            plan,
            self.inner.read_all(after, limit, filter),
        )
        .await
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let plan = self.plan(Operation::HeadPosition, &|_| false);
        self.run(Operation::HeadPosition, plan, self.inner.head_position())
            .await
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        let plan = self.plan(Operation::WaitForEvents, &|_| false);
        self.run(
            Operation::WaitForEvents,
            plan,
            self.inner.wait_for_events(after, timeout),
        )
        .await
    }

    /// Not a fault target (a status question, not a call of the contract): answered by the
    /// store within.
    async fn held_back(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Option<HeldBack>, StoreError> {
        self.inner.held_back(after, filter, limit).await
    }

    fn concurrency_limit(&self) -> Option<usize> {
        self.inner.concurrency_limit()
    }

    /// Not a fault target (turns order callers; they are not a call of the contract): handed
    /// out by the store within.
    async fn take_turn(&self, streams: &[StreamId]) -> Result<StreamTurn, StoreError> {
        self.inner.take_turn(streams).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{EventData, ExpectedVersion, Payload};
    use std::error::Error as _;

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    fn one(stream: &StreamId) -> AppendRequest {
        AppendRequest::new().stream(
            stream.clone(),
            ExpectedVersion::Any,
            vec![EventData::new("E", Payload::json("{}"))],
        )
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn nth_call_fails_once_with_the_chosen_kind() {
        rt().block_on(async {
            let store = FaultyStore::in_memory()
                .with(Fault::on(Operation::Append).nth(2).fail(FaultKind::Timeout));
            let s = sid("s");
            assert!(store.append(one(&s)).await.is_ok());
            let err = store.append(one(&s)).await.unwrap_err();
            assert!(matches!(err, StoreError::Timeout(_)));
            let injected = err
                .source()
                .unwrap()
                .downcast_ref::<InjectedFault>()
                .unwrap();
            assert_eq!(
                *injected,
                InjectedFault {
                    operation: Operation::Append,
                    call: 2,
                    kind: FaultKind::Timeout
                }
            );
            assert!(store.append(one(&s)).await.is_ok());
            assert_eq!(store.calls(Operation::Append), 3);
            assert_eq!(store.injected(), 1);
            assert_eq!(
                store.stream_version(&s).await.unwrap(),
                StreamVersion::new(2)
            );
        });
    }

    #[test]
    fn stream_faults_force_conflicts_with_real_versions() {
        rt().block_on(async {
            let store = FaultyStore::in_memory();
            let (hot, cold) = (sid("hot"), sid("cold"));
            store.append(one(&hot)).await.unwrap();
            store.inject(
                Fault::on(Operation::Append)
                    .for_stream(hot.clone())
                    .conflict(),
            );
            assert!(store.append(one(&cold)).await.is_ok());
            let err = store
                .append(one(&hot).check(cold.clone(), ExpectedVersion::Any))
                .await
                .unwrap_err();
            assert_eq!(
                err.conflicts(),
                &[StreamConflict::new(
                    hot.clone(),
                    ExpectedVersion::Any,
                    StreamVersion::new(1)
                )]
            );
            store.clear();
            assert!(store.append(one(&hot)).await.is_ok());
            // Reads of the stream were never affected.
            assert_eq!(store.calls(Operation::ReadStreams), 0);
        });
    }

    #[test]
    fn after_call_faults_write_but_report_failure() {
        rt().block_on(async {
            let store = FaultyStore::in_memory().with(
                Fault::on(Operation::Append)
                    .after_call()
                    .times(1)
                    .fail(FaultKind::Unavailable),
            );
            let s = sid("s");
            assert!(store.append(one(&s)).await.unwrap_err().is_transient());
            assert_eq!(
                store.inner().stream_version(&s).await.unwrap(),
                StreamVersion::new(1)
            );
            assert!(store.append(one(&s)).await.is_ok());
        });
    }

    #[test]
    fn seeded_probability_replays_the_same_faults() {
        let outcomes = |seed| {
            rt().block_on(async {
                let store = FaultyStore::in_memory().with(
                    Fault::on_any()
                        .with_probability(0.5, seed)
                        .fail(FaultKind::Contention),
                );
                let mut out = Vec::new();
                for _ in 0..64 {
                    out.push(store.head_position().await.is_ok());
                }
                out
            })
        };
        let first = outcomes(7);
        assert_eq!(first, outcomes(7));
        assert!(first.iter().any(|ok| *ok) && first.iter().any(|ok| !*ok));
    }

    #[test]
    fn the_log_and_the_counts_say_which_fault_fired_on_which_call() {
        let run = |seed| {
            rt().block_on(async {
                let store = FaultyStore::in_memory()
                    .with(
                        Fault::on(Operation::HeadPosition)
                            .with_probability(0.3, seed)
                            .fail(FaultKind::Timeout),
                    )
                    .with(Fault::on(Operation::HeadPosition).every(4))
                    .logged();
                for _ in 0..40 {
                    let _ = store.head_position().await;
                }
                (store.log(), store.injected_by_fault())
            })
        };
        let (log, counts) = run(3);
        assert_eq!(log, run(3).0, "the same seed replays the same injections");
        assert_ne!(log, run(4).0);
        // The first fault to fail a call wins; the second fires on the 4th, 8th, ... call
        // the first left alone.
        let first = log.iter().filter(|i| i.fault == 0).count() as u64;
        let second = log.iter().filter(|i| i.fault == 1).count() as u64;
        assert_eq!((counts[0].1, counts[1].1), (first, second));
        assert!(first > 0 && second > 0);
        assert!(log.windows(2).all(|w| w[0].call < w[1].call));
        assert_eq!(counts[0].0.operation, Some(Operation::HeadPosition));
    }

    #[test]
    fn every_and_from_call_triggers() {
        rt().block_on(async {
            let store = FaultyStore::in_memory()
                .with(
                    Fault::on(Operation::ReadAll)
                        .every(3)
                        .fail(FaultKind::Backend),
                )
                .with(Fault::on(Operation::HeadPosition).from_call(2).times(2));
            let mut read_all = Vec::new();
            for _ in 0..6 {
                read_all.push(
                    store
                        .read_all(Position::START, 1, &LogFilter::all())
                        .await
                        .is_ok(),
                );
            }
            assert_eq!(read_all, [true, true, false, true, true, false]);
            let mut heads = Vec::new();
            for _ in 0..5 {
                heads.push(store.head_position().await.is_ok());
            }
            assert_eq!(heads, [true, false, false, true, true]);
            assert_eq!(store.total_calls(), 11);
        });
    }

    #[test]
    fn delays_slow_calls_down_without_failing_them() {
        rt().block_on(async {
            let store = FaultyStore::in_memory()
                .with(Fault::on(Operation::ReadStreams).delay(Duration::from_millis(20)));
            let started = tokio::time::Instant::now();
            assert!(store.stream_version(&sid("s")).await.is_ok());
            assert!(started.elapsed() >= Duration::from_millis(20));
            assert_eq!(store.injected(), 1);
        });
    }
}
