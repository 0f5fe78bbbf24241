//! Running a workload: set up the data, drive operations from concurrent tasks, measure.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{
    AppendRequest, Codec, CommandError, ErrorChain, EventData, EventId, EventStore, EventType,
    ExpectedVersion, Json, Metadata, Position, StoreError, StreamId, StreamRead, StreamVersion,
    SubscriptionExt, SubscriptionOptions, Timestamp,
};
use crossfold_executor::{Error, Executed, Executor};
use hdrhistogram::Histogram;

use crate::bank::{self, BankEvent, Deposit, Open, Split, Transfer};
use crate::counter::{NumberInvoice, counter_stream};
use crate::report::{LoadReport, Measured};
use crate::verify::{Expectation, verify};
use crate::{LoadError, LoadOptions, Workload, memory};

/// Opening balance of every account, in cents.
const INITIAL_BALANCE: i64 = 1_000_000;
/// Events per account stream for the read and catch-up workloads.
const READ_STREAM_EVENTS: u64 = 10;
/// Events per account stream for W8.
const LONG_STREAM_EVENTS: u64 = 10_000;

/// What one operation did.
#[derive(Default)]
struct Outcome {
    rejected: bool,
    failed: bool,
    error: Option<String>,
    conflicts: u32,
    retries: u32,
    /// Events written or read.
    events: u64,
    /// Events a successful write reported written (for verification).
    written: u64,
    deposited: i64,
}

impl Outcome {
    fn from_command(result: Result<Executed, Error>, deposit: i64) -> Self {
        match result {
            Ok(done) => Outcome {
                conflicts: done.conflicts,
                retries: done.attempts.saturating_sub(1),
                events: done.events.len() as u64,
                written: done.events.len() as u64,
                deposited: if done.events.is_empty() { 0 } else { deposit },
                ..Outcome::default()
            },
            Err(Error::Command(CommandError::Rejected { .. })) => Outcome {
                rejected: true,
                ..Outcome::default()
            },
            Err(Error::Store {
                source: StoreError::Conflict(_),
                attempts,
            }) => Outcome {
                failed: true,
                conflicts: attempts,
                retries: attempts.saturating_sub(1),
                ..Outcome::default()
            },
            Err(e) => Outcome {
                error: Some(ErrorChain(&e).to_string()),
                ..Outcome::default()
            },
        }
    }
}

/// Counters of one task (merged at the end).
struct Stats {
    latency: Histogram<u64>,
    ops: u64,
    events: u64,
    conflicts: u64,
    retries: u64,
    failed: u64,
    rejected: u64,
    errors: u64,
    first_error: Option<String>,
    per_second: Vec<u64>,
    /// Money deposited by successful operations, warm-up included (for verification).
    deposited: i64,
    /// Events successful writes reported written, warm-up included (for verification).
    written: u64,
}

impl Stats {
    fn new(histogram: &Histogram<u64>, seconds: usize) -> Self {
        Self {
            latency: histogram.clone(),
            ops: 0,
            events: 0,
            conflicts: 0,
            retries: 0,
            failed: 0,
            rejected: 0,
            errors: 0,
            first_error: None,
            per_second: vec![0; seconds + 1],
            deposited: 0,
            written: 0,
        }
    }

    fn merge(&mut self, other: Stats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.events += other.events;
        self.conflicts += other.conflicts;
        self.retries += other.retries;
        self.failed += other.failed;
        self.rejected += other.rejected;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (a, b) in self.per_second.iter_mut().zip(other.per_second) {
            *a += b;
        }
        self.deposited += other.deposited;
        self.written += other.written;
    }

    fn record(&mut self, outcome: &Outcome, latency: Duration, second: Option<usize>) {
        self.deposited += outcome.deposited;
        self.written += outcome.written;
        let Some(second) = second else {
            return;
        };
        self.latency
            .saturating_record(latency.as_micros().max(1) as u64);
        self.ops += 1;
        self.events += outcome.events;
        self.conflicts += u64::from(outcome.conflicts);
        self.retries += u64::from(outcome.retries);
        self.failed += u64::from(outcome.failed);
        self.rejected += u64::from(outcome.rejected);
        if let Some(error) = &outcome.error {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(error.clone());
            }
        }
        if let Some(slot) = self.per_second.get_mut(second) {
            *slot += 1;
        }
    }
}

/// An empty latency histogram: microseconds, up to an hour, 3 significant digits.
fn new_histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| LoadError::Setup(format!("histogram: {}", ErrorChain(&e)).into()))
}

/// When measuring starts and ends.
#[derive(Clone, Copy)]
struct Clock {
    measure_from: Instant,
    end: Instant,
}

impl Clock {
    fn new(options: &LoadOptions) -> Self {
        let now = Instant::now();
        let measure_from = now + options.warmup;
        Self {
            measure_from,
            end: measure_from + options.duration,
        }
    }

    /// The measured second `at` falls in, or `None` during the warm-up.
    fn second(&self, at: Instant) -> Option<usize> {
        at.checked_duration_since(self.measure_from)
            .map(|d| d.as_secs() as usize)
    }
}

/// One task's operation generator.
struct Task<S> {
    workload: Workload,
    executor: Executor<S>,
    store: S,
    rng: fastrand::Rng,
    accounts: Arc<Vec<StreamId>>,
    counter_stream: StreamId,
    id: usize,
    counter: u64,
    batch_payload: Arc<Vec<EventData>>,
}

impl<S: EventStore + Clone + 'static> Task<S> {
    fn pick(&mut self) -> StreamId {
        let i = self.rng.usize(..self.accounts.len());
        self.accounts[i].clone()
    }

    fn pick_distinct<const N: usize>(&mut self) -> [StreamId; N] {
        let n = self.accounts.len();
        let mut chosen = [0usize; N];
        for k in 0..N {
            loop {
                let i = self.rng.usize(..n);
                if !chosen[..k].contains(&i) {
                    chosen[k] = i;
                    break;
                }
            }
        }
        chosen.map(|i| self.accounts[i].clone())
    }

    async fn op(&mut self) -> Outcome {
        match self.workload {
            Workload::Deposit | Workload::LongStreams | Workload::Live => {
                let account = self.pick();
                let result = self
                    .executor
                    .execute(Deposit {
                        account,
                        amount: 100,
                    })
                    .await;
                Outcome::from_command(result, 100)
            }
            Workload::Transfer | Workload::Contended => {
                let [from, to] = self.pick_distinct::<2>();
                let transfer = match StreamId::new(format!("transfer-{}", EventId::generate())) {
                    Ok(s) => s,
                    Err(e) => {
                        return Outcome {
                            error: Some(ErrorChain(&e).to_string()),
                            ..Outcome::default()
                        };
                    }
                };
                let amount = self.rng.i64(1..=100);
                let result = self
                    .executor
                    .execute(Transfer {
                        from,
                        to,
                        transfer,
                        amount,
                    })
                    .await;
                Outcome::from_command(result, 0)
            }
            Workload::Split => {
                let [from, a, b, c, d] = self.pick_distinct::<5>();
                let result = self
                    .executor
                    .execute(Split {
                        from,
                        to: [a, b, c, d],
                        amount: self.rng.i64(1..=25),
                    })
                    .await;
                Outcome::from_command(result, 0)
            }
            Workload::BatchAppend => {
                self.counter += 1;
                let stream = match StreamId::new(format!("batch-{}-{}", self.id, self.counter)) {
                    Ok(s) => s,
                    Err(e) => {
                        return Outcome {
                            error: Some(ErrorChain(&e).to_string()),
                            ..Outcome::default()
                        };
                    }
                };
                let events: Vec<EventData> = self
                    .batch_payload
                    .iter()
                    .map(|e| EventData {
                        event_id: EventId::generate(),
                        ..e.clone()
                    })
                    .collect();
                let n = events.len() as u64;
                let request =
                    AppendRequest::new().stream(stream, ExpectedVersion::NoStream, events);
                match self.store.append(request).await {
                    Ok(_) => Outcome {
                        events: n,
                        written: n,
                        ..Outcome::default()
                    },
                    Err(e) => Outcome {
                        failed: e.is_conflict(),
                        error: (!e.is_conflict()).then(|| ErrorChain(&e).to_string()),
                        ..Outcome::default()
                    },
                }
            }
            Workload::ReadOne | Workload::ReadThree => {
                let reads: Vec<StreamRead> = if self.workload == Workload::ReadOne {
                    vec![StreamRead::all(self.pick())]
                } else {
                    self.pick_distinct::<3>().map(StreamRead::all).into()
                };
                match self.store.read_streams(&reads).await {
                    Ok(streams) => Outcome {
                        events: streams.iter().map(|s| s.events.len() as u64).sum(),
                        ..Outcome::default()
                    },
                    Err(e) => Outcome {
                        error: Some(ErrorChain(&e).to_string()),
                        ..Outcome::default()
                    },
                }
            }
            Workload::CatchUp => self.catch_up().await,
            Workload::HotCounter => {
                let invoice = match StreamId::new(format!("invoice-{}", EventId::generate())) {
                    Ok(s) => s,
                    Err(e) => {
                        return Outcome {
                            error: Some(ErrorChain(&e).to_string()),
                            ..Outcome::default()
                        };
                    }
                };
                let result = self
                    .executor
                    .execute(NumberInvoice {
                        counter: self.counter_stream.clone(),
                        invoice,
                    })
                    .await;
                Outcome::from_command(result, 0)
            }
        }
    }

    /// One full pass over the log through a subscription.
    async fn catch_up(&mut self) -> Outcome {
        let mut subscription = self
            .store
            .subscribe(SubscriptionOptions::all().batch_size(2_000));
        let mut events = 0u64;
        loop {
            match subscription.read_available().await {
                Ok(batch) if batch.events.is_empty() => break,
                Ok(batch) => events += batch.events.len() as u64,
                Err(e) => {
                    return Outcome {
                        error: Some(ErrorChain(&e).to_string()),
                        ..Outcome::default()
                    };
                }
            }
        }
        Outcome {
            events,
            ..Outcome::default()
        }
    }
}

/// Runs one workload against `store` and verifies the data afterwards. The store should be
/// empty (a fresh schema or a new memory store): verification reads the whole log.
pub async fn run<S>(store: S, options: &LoadOptions) -> Result<LoadReport, LoadError>
where
    S: EventStore + Clone + 'static,
{
    let workload = options.workload;
    let executor = Executor::builder(store.clone())
        .serialize_in_process(options.serialize_in_process)
        .build();
    let account_count = workload.accounts(options.accounts);
    let accounts: Arc<Vec<StreamId>> = Arc::new(
        (0..account_count)
            .map(bank::account_stream)
            .collect::<Result<_, _>>()
            .map_err(|e| LoadError::Setup(e.into()))?,
    );
    let counter = counter_stream(1).map_err(|e| LoadError::Setup(e.into()))?;
    let setup_started = Instant::now();
    let prepared = setup(&executor, &store, workload, &accounts, options.concurrency).await?;
    let setup_time = setup_started.elapsed();

    let concurrency = match workload {
        Workload::CatchUp => 1,
        _ => options.concurrency.max(1),
    };
    let clock = Clock::new(options);
    let seconds = options.duration.as_secs() as usize;
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let batch_payload = Arc::new(batch_events()?);
    let low_memory = LowMemory::watch(done.clone());
    let histogram = new_histogram()?;

    let subscriber = (workload == Workload::Live).then(|| {
        let store = store.clone();
        tokio::spawn(follow_live(store, clock, histogram.clone()))
    });
    let reporter = options.progress.then(|| {
        tokio::spawn(report_progress(
            workload,
            clock,
            progress.clone(),
            done.clone(),
        ))
    });

    let mut handles = Vec::with_capacity(concurrency);
    for id in 0..concurrency {
        let mut task = Task {
            workload,
            executor: executor.clone(),
            store: store.clone(),
            rng: fastrand::Rng::with_seed(options.seed.wrapping_add(id as u64)),
            accounts: accounts.clone(),
            counter_stream: counter.clone(),
            id,
            counter: 0,
            batch_payload: batch_payload.clone(),
        };
        let progress = progress.clone();
        let histogram = histogram.clone();
        let low_memory = low_memory.clone();
        handles.push(tokio::spawn(async move {
            let mut stats = Stats::new(&histogram, seconds);
            loop {
                let started = Instant::now();
                if started >= clock.end || low_memory.stopped() {
                    break;
                }
                let outcome = task.op().await;
                let latency = started.elapsed();
                // Operations on an in-memory store never wait; without this a task would keep
                // its worker and starve the others (and the progress line).
                tokio::task::consume_budget().await;
                stats.record(&outcome, latency, clock.second(started));
                progress.fetch_add(1, Ordering::Relaxed);
            }
            stats
        }));
    }
    let mut total = Stats::new(&histogram, seconds);
    for handle in handles {
        match handle.await {
            Ok(stats) => total.merge(stats),
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("task failed: {}", ErrorChain(&e)));
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let stopped_at = low_memory.stopped_at();
    let measured = stopped_at
        .unwrap_or(clock.end)
        .min(clock.end)
        .saturating_duration_since(clock.measure_from);
    let stopped_early = stopped_at.map(|_| {
        format!(
            "stopped after {:.1} of {} measured seconds: the machine was running out of memory",
            measured.as_secs_f64(),
            options.duration.as_secs()
        )
    });
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    let delivery = match subscriber {
        Some(handle) => match handle.await {
            Ok(Ok(delivery)) => Some(delivery),
            Ok(Err(e)) => {
                total.errors += 1;
                total.first_error.get_or_insert(e);
                None
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("subscriber failed: {}", ErrorChain(&e)));
                None
            }
        },
        None => None,
    };

    let verification = verify(
        &store,
        &Expectation {
            accounts: &accounts,
            total_money: prepared.money + total.deposited,
            events_written: prepared.events + total.written,
            batch_streams: workload == Workload::BatchAppend,
            numbered: workload == Workload::HotCounter,
        },
    )
    .await
    .map_err(LoadError::Verify)?;

    Ok(LoadReport::new(
        options,
        concurrency,
        setup_time,
        Measured {
            latency: delivery.as_ref().unwrap_or(&total.latency),
            command_latency: &total.latency,
            ops: total.ops,
            events: total.events,
            conflicts: total.conflicts,
            retries: total.retries,
            failed: total.failed,
            rejected: total.rejected,
            errors: total.errors,
            first_error: total.first_error,
            per_second: &total.per_second
                [..total.per_second.len().min(measured.as_secs() as usize + 1)],
            delivered: delivery.as_ref().map(Histogram::len),
            measured,
            stopped_early,
        },
        verification,
    ))
}

/// What setting a workload up wrote.
#[derive(Clone, Copy, Default)]
struct Prepared {
    /// Money put in the accounts.
    money: i64,
    /// Events written.
    events: u64,
}

/// Prepares the data a workload needs.
async fn setup<S: EventStore + Clone + 'static>(
    executor: &Executor<S>,
    store: &S,
    workload: Workload,
    accounts: &Arc<Vec<StreamId>>,
    concurrency: usize,
) -> Result<Prepared, LoadError> {
    match workload {
        // The counter starts empty: its first command creates it.
        Workload::BatchAppend | Workload::HotCounter => Ok(Prepared::default()),
        Workload::ReadOne | Workload::ReadThree | Workload::CatchUp => {
            fill_streams(store, accounts, READ_STREAM_EVENTS, concurrency).await
        }
        Workload::LongStreams => {
            fill_streams(store, accounts, LONG_STREAM_EVENTS, concurrency).await
        }
        _ => {
            let workers = concurrency.clamp(1, 32);
            let mut handles = Vec::new();
            for w in 0..workers {
                let executor = executor.clone();
                let accounts = accounts.clone();
                handles.push(tokio::spawn(async move {
                    for account in accounts.iter().skip(w).step_by(workers) {
                        executor
                            .execute(Open {
                                account: account.clone(),
                                initial: INITIAL_BALANCE,
                            })
                            .await?;
                    }
                    Ok::<(), Error>(())
                }));
            }
            for handle in handles {
                handle
                    .await
                    .map_err(|e| LoadError::Setup(e.into()))?
                    .map_err(|e| LoadError::Setup(e.into()))?;
            }
            Ok(Prepared {
                money: INITIAL_BALANCE * accounts.len() as i64,
                events: accounts.len() as u64,
            })
        }
    }
}

/// Writes `per_stream` events (an opening and deposits of 1) to every account directly through
/// the store, in chunks.
async fn fill_streams<S: EventStore + Clone + 'static>(
    store: &S,
    accounts: &Arc<Vec<StreamId>>,
    per_stream: u64,
    concurrency: usize,
) -> Result<Prepared, LoadError> {
    let encode = |e: &BankEvent| -> Result<EventData, LoadError> {
        let payload = Json.encode(e).map_err(LoadError::Setup)?;
        Ok(EventData {
            event_id: EventId::generate(),
            event_type: EventType::from_static(crossfold_core::DomainEvent::event_type(e)),
            schema_version: 1,
            payload,
            metadata: Arc::new(Metadata::now()),
        })
    };
    let opened = encode(&BankEvent::Opened {
        initial: INITIAL_BALANCE,
    })?;
    let deposit = encode(&BankEvent::Deposited { amount: 1 })?;
    let workers = concurrency.clamp(1, 16);
    let mut handles = Vec::new();
    for w in 0..workers {
        let (store, accounts, opened, deposit) = (
            store.clone(),
            accounts.clone(),
            opened.clone(),
            deposit.clone(),
        );
        handles.push(tokio::spawn(async move {
            for account in accounts.iter().skip(w).step_by(workers) {
                let mut version = StreamVersion::EMPTY;
                while version.get() < per_stream {
                    let chunk = (per_stream - version.get()).min(1_000);
                    let events: Vec<EventData> = (0..chunk)
                        .map(|k| {
                            let template = if version.get() + k == 0 {
                                &opened
                            } else {
                                &deposit
                            };
                            EventData {
                                event_id: EventId::generate(),
                                ..template.clone()
                            }
                        })
                        .collect();
                    store
                        .append(AppendRequest::new().stream(
                            account.clone(),
                            ExpectedVersion::Exact(version),
                            events,
                        ))
                        .await?;
                    version = version.advance(chunk);
                }
            }
            Ok::<(), crossfold_core::StoreError>(())
        }));
    }
    for handle in handles {
        handle
            .await
            .map_err(|e| LoadError::Setup(e.into()))?
            .map_err(|e| LoadError::Setup(e.into()))?;
    }
    let per_account = INITIAL_BALANCE + (per_stream as i64 - 1);
    Ok(Prepared {
        money: per_account * accounts.len() as i64,
        events: per_stream * accounts.len() as u64,
    })
}

/// The 100 events of a W5 batch (ids are replaced per append).
fn batch_events() -> Result<Vec<EventData>, LoadError> {
    let payload = Json
        .encode(&serde_json::json!({"sku": "abc", "qty": 1}))
        .map_err(LoadError::Setup)?;
    let metadata = Arc::new(Metadata::now());
    Ok((0..100)
        .map(|_| EventData {
            event_id: EventId::generate(),
            event_type: EventType::from_static("ItemAdded"),
            schema_version: 1,
            payload: payload.clone(),
            metadata: metadata.clone(),
        })
        .collect())
}

/// Follows the log from its head and records, for each event committed while measuring, the
/// time from its creation to its delivery.
async fn follow_live<S: EventStore + Clone + 'static>(
    store: S,
    clock: Clock,
    mut latency: Histogram<u64>,
) -> Result<Histogram<u64>, String> {
    let head = store
        .head_position()
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    let mut subscription = store.subscribe(
        SubscriptionOptions::all()
            .from(head.max(Position::START))
            .max_wait(Duration::from_millis(100)),
    );
    let measure_from = Timestamp::now().unix_micros()
        + clock
            .measure_from
            .saturating_duration_since(Instant::now())
            .as_micros() as i64;
    // Keep following a little after the writers stop, to deliver what they committed last.
    let stop = clock.end + Duration::from_millis(500);
    while Instant::now() < stop {
        let remaining = stop.saturating_duration_since(Instant::now());
        let batch = match tokio::time::timeout(remaining, subscription.next_batch()).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => return Err(ErrorChain(&e).to_string()),
            Err(_) => break,
        };
        let now = Timestamp::now().unix_micros();
        for event in batch.events {
            let created = event.metadata.recorded_at.unix_micros();
            if created >= measure_from {
                latency.saturating_record((now - created).max(1) as u64);
            }
        }
    }
    Ok(latency)
}

async fn report_progress(
    workload: Workload,
    clock: Clock,
    progress: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut last = 0u64;
    let mut stderr = std::io::stderr();
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = progress.load(Ordering::Relaxed);
        let phase = if Instant::now() < clock.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        let _ = write!(
            stderr,
            "\r  {workload:<10} {phase:<9} {:>4}s  {:>9} ops/s  {:>10} ops",
            started.elapsed().as_secs(),
            now - last,
            now
        );
        let _ = stderr.flush();
        last = now;
    }
    let _ = writeln!(stderr);
}

/// Stops a run before the machine runs out of memory.
///
/// An in-memory store keeps every event, and a fast workload can fill the machine's memory
/// within its measured time; the kernel would then kill the whole benchmark. Instead, when the
/// memory still available falls below a fifth of the total (at least 2 GiB), the run stops
/// early and its report says so, with rates over the time actually measured.
#[derive(Clone, Default)]
struct LowMemory(Arc<LowMemoryState>);

#[derive(Default)]
struct LowMemoryState {
    /// Checked by every operation, so an atomic rather than the lock below.
    stopped: AtomicBool,
    at: std::sync::Mutex<Option<Instant>>,
}

impl LowMemory {
    fn watch(done: Arc<AtomicBool>) -> Self {
        let this = Self::default();
        let Some(total) = memory::total() else {
            return this; // no /proc: nothing to watch
        };
        // Verification afterwards reads the whole log back and keeps every event id: it needs
        // room too.
        let floor = (total / 5).max(2 << 30);
        let state = this.0.clone();
        // A thread of its own: the runtime's workers may be busy with operations that never
        // wait (an in-memory store), and this must run regardless.
        let spawned = std::thread::Builder::new()
            .name("crossfold-bench-memory".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if memory::available().is_some_and(|available| available < floor) {
                        let mut at = state.at.lock().unwrap_or_else(|p| p.into_inner());
                        *at = Some(Instant::now());
                        state.stopped.store(true, Ordering::Release);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        if spawned.is_err() {
            tracing::warn!("could not start the low-memory watch; a run may exhaust memory");
        }
        this
    }

    fn stopped_at(&self) -> Option<Instant> {
        *self.0.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }
}
