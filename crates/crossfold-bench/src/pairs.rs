//! A torture check of the executor's consistency: is every decision made on a state that
//! existed?
//!
//! Streams come in pairs (`left-N`, `right-N`) that are only ever flipped together, in one
//! atomic append, so at every committed point of the log the two agree. Commands that read a
//! pair refuse with [`CommandError::InvalidState`] when they see the two disagree. Such a
//! refusal can only come from a state folded from the two streams at different points of the
//! log — a state that never existed — so the check counts them, and any count above zero is a
//! failure of the executor (or of the store's multi-stream read).
//!
//! The commands mix the ways a command's view can be put together: both streams declared
//! ([`Flip`], [`Mark`]), the second stream found by discovery ([`MarkDiscovering`]), each with a
//! per-combination state or with per-stream parts (`PER_STREAM`). Marks write to one stream of
//! the pair, so a conflict names one stream while the other may have moved too. Several
//! executors (separate caches, like separate processes) share the store, and many tasks share
//! each executor.
//!
//! ```
//! use crossfold_bench::pairs::{PairsOptions, run_pairs};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut options = PairsOptions::new(2_000);
//! options.per_stream = true;
//! let report = run_pairs(crossfold_memory::MemoryStore::new(), &options).await.unwrap();
//! assert_eq!(report.impossible_refusals, 0, "{:?}", report.first_impossible);
//! assert_eq!(report.executions, 2_000);
//! # });
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, ErrorChain, EventStore, Json, Recorded, StoreError,
    StreamId, StreamRef, StreamVersion, Upcasters,
};
use crossfold_executor::{Error, Executor, RetryPolicy};
use serde::{Deserialize, Serialize};

/// Events of a pair's streams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PairEvent {
    /// The stream's flag was set to `to` (always written to both streams of a pair at once).
    Flipped {
        /// The new value.
        to: bool,
    },
    /// A command saw the pair agree and marked one stream (the flag is unchanged).
    Marked,
}

impl DomainEvent for PairEvent {
    fn event_type(&self) -> &'static str {
        match self {
            PairEvent::Flipped { .. } => "Flipped",
            PairEvent::Marked => "Marked",
        }
    }
}

/// The flag of each stream read (absent: never flipped, `false`).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    flags: Vec<(StreamId, bool)>,
}

impl Flags {
    fn fold(&mut self, event: &Recorded<PairEvent>) {
        let PairEvent::Flipped { to } = event.event else {
            return;
        };
        match self.flags.iter_mut().find(|(s, _)| *s == event.stream_id) {
            Some((_, flag)) => *flag = to,
            None => self.flags.push((event.stream_id.clone(), to)),
        }
    }

    /// Parts folded from single streams combine by union: each event sets its own stream's flag.
    fn merge(&mut self, part: &Flags) {
        for (stream, flag) in &part.flags {
            match self.flags.iter_mut().find(|(s, _)| s == stream) {
                Some((_, f)) => *f = *flag,
                None => self.flags.push((stream.clone(), *flag)),
            }
        }
    }

    fn of(&self, stream: &StreamId) -> bool {
        self.flags
            .iter()
            .find(|(s, _)| s == stream)
            .is_some_and(|(_, f)| *f)
    }

    /// The pair's common flag, or the refusal that a state which never existed earns.
    fn agreed(&self, left: &StreamId, right: &StreamId) -> Result<bool, CommandError> {
        let (l, r) = (self.of(left), self.of(right));
        if l == r {
            Ok(l)
        } else {
            Err(CommandError::InvalidState(format!(
                "{left} says {l}, {right} says {r}"
            )))
        }
    }
}

/// The streams of pair `n`.
pub fn pair_streams(n: usize) -> Result<(StreamId, StreamId), crossfold_core::ValidationError> {
    Ok((
        StreamId::new(format!("left-{n}"))?,
        StreamId::new(format!("right-{n}"))?,
    ))
}

/// Flips both streams of a pair in one append (refusing if they disagree).
pub struct Flip<const PER_STREAM: bool> {
    /// The pair's first stream.
    pub left: StreamId,
    /// The pair's second stream.
    pub right: StreamId,
}

impl<const P: bool> Command for Flip<P> {
    type Event = PairEvent;
    type State = Flags;
    type Streams = [StreamId; 2];
    const PER_STREAM: bool = P;

    fn streams(&self) -> [StreamId; 2] {
        [self.left.clone(), self.right.clone()]
    }

    fn apply(state: &mut Flags, event: &Recorded<PairEvent>) {
        state.fold(event);
    }

    fn merge(state: &mut Flags, part: &Flags) {
        state.merge(part);
    }

    fn handle<'x>(
        &self,
        state: &Flags,
        [left, right]: [StreamRef<'x>; 2],
        out: &mut Emit<'x, PairEvent>,
    ) -> Result<(), CommandError> {
        let to = !state.agreed(&self.left, &self.right)?;
        out.append(left, PairEvent::Flipped { to });
        out.append(right, PairEvent::Flipped { to });
        Ok(())
    }
}

/// Reads both streams of a pair and, if they agree, marks one of them (refusing if they
/// disagree).
pub struct Mark<const PER_STREAM: bool> {
    /// The pair's first stream.
    pub left: StreamId,
    /// The pair's second stream.
    pub right: StreamId,
    /// Whether the mark goes on the left stream (else the right one).
    pub on_left: bool,
}

impl<const P: bool> Command for Mark<P> {
    type Event = PairEvent;
    type State = Flags;
    type Streams = [StreamId; 2];
    const PER_STREAM: bool = P;

    fn streams(&self) -> [StreamId; 2] {
        [self.left.clone(), self.right.clone()]
    }

    fn apply(state: &mut Flags, event: &Recorded<PairEvent>) {
        state.fold(event);
    }

    fn merge(state: &mut Flags, part: &Flags) {
        state.merge(part);
    }

    fn handle<'x>(
        &self,
        state: &Flags,
        [left, right]: [StreamRef<'x>; 2],
        out: &mut Emit<'x, PairEvent>,
    ) -> Result<(), CommandError> {
        state.agreed(&self.left, &self.right)?;
        out.append(if self.on_left { left } else { right }, PairEvent::Marked);
        Ok(())
    }
}

/// Declares only the left stream, finds the right one by discovery, and marks the left one if
/// the two agree (refusing if they disagree).
pub struct MarkDiscovering<const PER_STREAM: bool> {
    /// The pair's first stream (declared).
    pub left: StreamId,
    /// The pair's second stream (discovered).
    pub right: StreamId,
}

impl<const P: bool> Command for MarkDiscovering<P> {
    type Event = PairEvent;
    type State = Flags;
    type Streams = StreamId;
    const PER_STREAM: bool = P;

    fn streams(&self) -> StreamId {
        self.left.clone()
    }

    fn discover(&self, _: &Flags) -> Vec<StreamId> {
        vec![self.right.clone()]
    }

    fn apply(state: &mut Flags, event: &Recorded<PairEvent>) {
        state.fold(event);
    }

    fn merge(state: &mut Flags, part: &Flags) {
        state.merge(part);
    }

    fn handle<'x>(
        &self,
        state: &Flags,
        left: StreamRef<'x>,
        out: &mut Emit<'x, PairEvent>,
    ) -> Result<(), CommandError> {
        state.agreed(&self.left, &self.right)?;
        out.append(left, PairEvent::Marked);
        Ok(())
    }
}

/// How to run the check.
#[derive(Clone, Debug)]
pub struct PairsOptions {
    /// Commands to execute in all.
    pub executions: u64,
    /// Pairs of streams (few pairs: much contention).
    pub pairs: usize,
    /// Tasks executing commands concurrently.
    pub tasks: usize,
    /// Executors (each with its own caches) the tasks are spread over.
    pub executors: usize,
    /// Whether the commands keep per-stream parts (`PER_STREAM`) instead of one state per
    /// combination of streams.
    pub per_stream: bool,
    /// Seeds the tasks' choices of pairs and commands.
    pub seed: u64,
}

impl PairsOptions {
    /// `executions` commands on 8 pairs from 16 tasks over 4 executors.
    pub fn new(executions: u64) -> Self {
        Self {
            executions,
            pairs: 8,
            tasks: 16,
            executors: 4,
            per_stream: false,
            seed: 1,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct PairsReport {
    /// Commands executed.
    pub executions: u64,
    /// Executions that wrote.
    pub written: u64,
    /// Executions that refused because the two streams of a pair disagreed: decisions made on a
    /// state that never existed. Must be 0.
    pub impossible_refusals: u64,
    /// The first such refusal's message.
    pub first_impossible: Option<String>,
    /// Executions that gave up because the streams kept changing (the retry policy ran out).
    pub gave_up: u64,
    /// Any other error (must be 0).
    pub errors: u64,
    /// The first other error.
    pub first_error: Option<String>,
    /// Pairs whose streams disagree in the store after the run, or whose flips differ in
    /// number (must be empty).
    pub broken_pairs: Vec<String>,
    /// Time taken by the executions.
    pub elapsed: Duration,
}

impl PairsReport {
    /// Whether the run found nothing wrong.
    pub fn passed(&self) -> bool {
        self.impossible_refusals == 0 && self.errors == 0 && self.broken_pairs.is_empty()
    }
}

#[derive(Default)]
struct Tally {
    executions: AtomicU64,
    written: AtomicU64,
    impossible: AtomicU64,
    gave_up: AtomicU64,
    errors: AtomicU64,
    first_impossible: std::sync::Mutex<Option<String>>,
    first_error: std::sync::Mutex<Option<String>>,
}

fn remember(slot: &std::sync::Mutex<Option<String>>, text: String) {
    let mut slot = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.get_or_insert(text);
}

/// Runs the check against `store` (which should be empty: the pairs' streams start absent).
pub async fn run_pairs<S: EventStore + Clone + 'static>(
    store: S,
    options: &PairsOptions,
) -> Result<PairsReport, StoreError> {
    if options.per_stream {
        run_with::<S, true>(store, options).await
    } else {
        run_with::<S, false>(store, options).await
    }
}

async fn run_with<S: EventStore + Clone + 'static, const P: bool>(
    store: S,
    options: &PairsOptions,
) -> Result<PairsReport, StoreError> {
    let pairs: Vec<(StreamId, StreamId)> = (0..options.pairs.max(1))
        .map(pair_streams)
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::InvalidRequest(ErrorChain(&e).to_string()))?;
    let pairs = Arc::new(pairs);
    // Quick retries: contention is the point here, and a retry that waits long only slows the
    // run down without changing what is checked.
    let retry = RetryPolicy::default()
        .max_attempts(100)
        .base_delay(Duration::from_micros(50))
        .max_delay(Duration::from_millis(2));
    let executors: Vec<Executor<S>> = (0..options.executors.max(1))
        .map(|_| Executor::builder(store.clone()).retry(retry).build())
        .collect();
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..options.tasks.max(1) {
        let executor = executors[t % executors.len()].clone();
        let (pairs, tally, next) = (pairs.clone(), tally.clone(), next.clone());
        let total = options.executions;
        let mut rng = fastrand::Rng::with_seed(options.seed.wrapping_add(t as u64));
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let (left, right) = pairs[rng.usize(..pairs.len())].clone();
                let result = match rng.u8(..4) {
                    0 => executor.execute(Flip::<P> { left, right }).await,
                    1 => executor.execute(MarkDiscovering::<P> { left, right }).await,
                    _ => {
                        let on_left = rng.bool();
                        executor
                            .execute(Mark::<P> {
                                left,
                                right,
                                on_left,
                            })
                            .await
                    }
                };
                tally.executions.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(done) => {
                        if !done.events.is_empty() {
                            tally.written.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(Error::Command(CommandError::InvalidState(message))) => {
                        tally.impossible.fetch_add(1, Ordering::Relaxed);
                        remember(&tally.first_impossible, message);
                    }
                    Err(e) if e.is_conflict() || e.is_contended() => {
                        tally.gave_up.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        remember(&tally.first_error, ErrorChain(&e).to_string());
                    }
                }
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            remember(
                &tally.first_error,
                format!("a task failed: {}", ErrorChain(&e)),
            );
        }
    }
    let elapsed = started.elapsed();
    let broken_pairs = check_pairs(&store, &pairs).await?;
    let take = |slot: &std::sync::Mutex<Option<String>>| {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    };
    Ok(PairsReport {
        executions: tally.executions.load(Ordering::Relaxed),
        written: tally.written.load(Ordering::Relaxed),
        impossible_refusals: tally.impossible.load(Ordering::Relaxed),
        first_impossible: take(&tally.first_impossible),
        gave_up: tally.gave_up.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        first_error: take(&tally.first_error),
        broken_pairs,
        elapsed,
    })
}

/// Reads every pair back: the two streams must hold the same flips and end on the same flag.
async fn check_pairs<S: EventStore>(
    store: &S,
    pairs: &[(StreamId, StreamId)],
) -> Result<Vec<String>, StoreError> {
    let upcasters = Upcasters::new();
    let mut broken = Vec::new();
    for (left, right) in pairs {
        let mut flips = Vec::new();
        for stream in [left, right] {
            let read = store
                .read_stream(stream, StreamVersion::EMPTY, usize::MAX)
                .await?;
            let mut seen = Vec::new();
            for raw in &read.events {
                let event: Recorded<PairEvent> = upcasters.decode(&Json, raw)?;
                if let PairEvent::Flipped { to } = event.event {
                    seen.push(to);
                }
            }
            flips.push(seen);
        }
        if flips[0] != flips[1] {
            broken.push(format!(
                "{left} and {right} hold different flips ({} and {})",
                flips[0].len(),
                flips[1].len()
            ));
        }
    }
    Ok(broken)
}
