//! Running a workload: set up the data, drive operations from concurrent tasks, measure.

mod measure;
mod setup;
mod share;
mod task;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{ErrorChain, EventStore, Position, StreamId};
use crossfold_executor::{Executor, RetryPolicy};
use hdrhistogram::Histogram;

use crate::bank::{self};
use crate::counter::counter_stream;
use crate::report::{Admission, LoadReport, Measured};
use crate::verify::{Expectation, verify};
use crate::{ConcurrencyLimit, LoadError, LoadOptions, Workload};

use self::measure::{Clock, new_histogram};
use self::setup::{batch_events, setup};
pub use self::share::{SetUp, Share, ShareReport, run_share, set_up};
use self::task::{Stats, Task};
use self::watch::{LowMemory, follow_live, report_progress};

/// How long verification waits for the log to be visible as far as the run wrote.
const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

/// Runs one workload against `store` and verifies the data afterwards. The store should be
/// empty (a fresh schema or a new memory store): verification reads the whole log.
pub async fn run<S>(store: S, options: &LoadOptions) -> Result<LoadReport, LoadError>
where
    S: EventStore + Clone + 'static,
{
    // One executor sets up and runs, so its caches hold the accounts it opened.
    let executor = executor(&store, options);
    let set_up = set_up_with(&executor, &store, options).await?;
    let share = drive(&executor, &store, options, Share::default(), async {
        Ok(())
    })
    .await?;
    combine(&store, options, &set_up, vec![share]).await
}

/// The executor a run's operations go through.
fn executor<S: EventStore + Clone + 'static>(store: &S, options: &LoadOptions) -> Executor<S> {
    let builder = Executor::builder(store.clone())
        .serialize_in_process(options.serialize_in_process)
        .retry(RetryPolicy::default().take_turns(options.take_turns))
        // Every command in flight may wait: the queue never refuses one for lack of room.
        .admission_queue_depth(options.concurrency.max(1));
    match options.concurrency_limit {
        ConcurrencyLimit::Store => builder,
        ConcurrencyLimit::Fixed(n) => builder.concurrency_limit(n),
        ConcurrencyLimit::Off => builder.no_concurrency_limit(),
    }
    .build()
}

/// The streams a run's operations pick from.
fn streams(options: &LoadOptions) -> Result<(Arc<Vec<StreamId>>, StreamId), LoadError> {
    let accounts = (0..options.workload.accounts(options.accounts))
        .map(bank::account_stream)
        .collect::<Result<_, _>>()
        .map_err(|e| LoadError::Setup(e.into()))?;
    let counter = counter_stream(1).map_err(|e| LoadError::Setup(e.into()))?;
    Ok((Arc::new(accounts), counter))
}

/// Prepares the data the workload needs, through `executor`.
async fn set_up_with<S: EventStore + Clone + 'static>(
    executor: &Executor<S>,
    store: &S,
    options: &LoadOptions,
) -> Result<SetUp, LoadError> {
    let (accounts, _) = streams(options)?;
    let started = Instant::now();
    let prepared = setup(
        executor,
        store,
        options.workload,
        &accounts,
        options.concurrency,
    )
    .await?;
    Ok(SetUp {
        money: prepared.money,
        events: prepared.events,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Drives one share of the run's operations from concurrent tasks and measures them.
/// `start` is awaited once everything is ready, just before the warm-up begins (for a share
/// in another process: when the parent says go).
async fn drive<S, F>(
    executor: &Executor<S>,
    store: &S,
    options: &LoadOptions,
    share: Share,
    start: F,
) -> Result<ShareReport, LoadError>
where
    S: EventStore + Clone + 'static,
    F: Future<Output = Result<(), String>>,
{
    let workload = options.workload;
    let (accounts, counter) = streams(options)?;
    let concurrency = match workload {
        Workload::CatchUp => 1,
        _ => options.concurrency.max(1),
    };
    let seconds = options.duration.as_secs() as usize;
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let batch_payload = Arc::new(batch_events()?);
    let histogram = new_histogram()?;
    start.await.map_err(|e| LoadError::Setup(e.into()))?;
    let clock = Clock::new(options);
    let low_memory = LowMemory::watch(done.clone());

    // Admission counters at the start of the measured time (the warm-up left out).
    let admission_start = tokio::spawn({
        let executor = executor.clone();
        async move {
            tokio::time::sleep_until(clock.measure_from.into()).await;
            executor.admission()
        }
    });
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
    for local in 0..concurrency {
        // Ids and seeds unique across the shares of a run: W5 names its streams after them.
        let id = share.index * concurrency + local;
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
    let admission = match (admission_start.await, executor.admission()) {
        (Ok(Some(start)), Some(end)) => Some(Admission::between(&start, &end)),
        _ => None,
    };
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
    Ok(ShareReport::new(
        concurrency,
        total,
        delivery.as_ref(),
        admission,
        measured,
        stopped_early,
    ))
}

/// Merges the shares of a run, verifies everything they wrote, and reports.
pub async fn combine<S: EventStore>(
    store: &S,
    options: &LoadOptions,
    set_up: &SetUp,
    shares: Vec<ShareReport>,
) -> Result<LoadReport, LoadError> {
    let (accounts, _) = streams(options)?;
    let seconds = options.duration.as_secs() as usize;
    let histogram = new_histogram()?;
    let mut total = Stats::new(&histogram, seconds);
    let mut delivery: Option<Histogram<u64>> = None;
    let mut concurrency = 0;
    let mut measured = Duration::ZERO;
    let mut stopped_early = None;
    let mut admission: Option<Admission> = None;
    for share in shares {
        admission = Admission::merge(admission, share.admission.clone());
        concurrency = concurrency.max(share.concurrency);
        measured = measured.max(share.measured());
        stopped_early = stopped_early.or(share.stopped_early.clone());
        if let Some(part) = share.delivery_histogram()? {
            let merged = match delivery.take() {
                Some(mut merged) => {
                    merged
                        .add(&part)
                        .map_err(|e| LoadError::Setup(format!("histogram: {e}").into()))?;
                    merged
                }
                None => part,
            };
            delivery = Some(merged);
        }
        total.merge(share.into_stats(&histogram)?);
    }

    // Everything written must be visible before the log is read back: on PostgreSQL a
    // transaction open elsewhere on the server can hold the log's visible end back for a
    // while.
    if total.position > Position::START
        && let Err(e) = store
            .wait_for_position(total.position, VISIBLE_WITHIN)
            .await
    {
        tracing::warn!(error = %ErrorChain(&e), "verifying a log that is not visible to its end");
    }
    let workload = options.workload;
    let verification = verify(
        store,
        &Expectation {
            accounts: &accounts,
            total_money: Some(set_up.money + total.deposited),
            events_written: Some(set_up.events + total.written),
            batch_streams: workload == Workload::BatchAppend,
            numbered: workload == Workload::HotCounter,
        },
    )
    .await
    .map_err(LoadError::Verify)?;

    Ok(LoadReport::new(
        options,
        concurrency,
        Duration::from_secs_f64(set_up.secs.max(0.0)),
        Measured {
            latency: delivery.as_ref().unwrap_or(&total.latency),
            command_latency: &total.latency,
            ops: total.ops,
            events: total.events,
            conflicts: total.conflicts,
            retries: total.retries,
            transient_retries: total.transient_retries,
            failed: total.failed,
            overloaded: total.overloaded,
            admission,
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
