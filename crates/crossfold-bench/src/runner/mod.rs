//! Running a workload: set up the data, drive operations from concurrent tasks, measure.

mod measure;
mod setup;
mod task;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossfold_core::{ErrorChain, EventStore, StreamId};
use crossfold_executor::Executor;
use hdrhistogram::Histogram;

use crate::bank::{self};
use crate::counter::counter_stream;
use crate::report::{Admission, LoadReport, Measured};
use crate::verify::{Expectation, verify};
use crate::{ConcurrencyLimit, LoadError, LoadOptions, Workload};

use self::measure::{Clock, new_histogram};
use self::setup::{batch_events, setup};
use self::task::{Stats, Task};
use self::watch::{LowMemory, follow_live, report_progress};

/// Runs one workload against `store` and verifies the data afterwards. The store should be
/// empty (a fresh schema or a new memory store): verification reads the whole log.
pub async fn run<S>(store: S, options: &LoadOptions) -> Result<LoadReport, LoadError>
where
    S: EventStore + Clone + 'static,
{
    let workload = options.workload;
    let builder = Executor::builder(store.clone())
        .serialize_in_process(options.serialize_in_process)
        // Every command in flight may wait: the queue never refuses one for lack of room.
        .admission_queue_depth(options.concurrency.max(1));
    let executor = match options.concurrency_limit {
        ConcurrencyLimit::Store => builder,
        ConcurrencyLimit::Fixed(n) => builder.concurrency_limit(n),
        ConcurrencyLimit::Off => builder.no_concurrency_limit(),
    }
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
