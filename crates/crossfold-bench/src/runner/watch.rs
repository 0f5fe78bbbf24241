//! Beside the tasks: the live-delivery follower, the progress line, the low-memory stop.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{
    ErrorChain, EventStore, Position, SubscriptionExt, SubscriptionOptions, Timestamp,
};
use hdrhistogram::Histogram;

use super::measure::Clock;
use crate::{Workload, memory};

/// Follows the log from its head and records, for each event committed while measuring, the
/// time from its creation to its delivery.
pub(super) async fn follow_live<S: EventStore + Clone + 'static>(
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

pub(super) async fn report_progress(
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
pub(super) struct LowMemory(Arc<LowMemoryState>);

#[derive(Default)]
pub(super) struct LowMemoryState {
    /// Checked by every operation, so an atomic rather than the lock below.
    stopped: AtomicBool,
    at: std::sync::Mutex<Option<Instant>>,
}

impl LowMemory {
    pub(super) fn watch(done: Arc<AtomicBool>) -> Self {
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

    pub(super) fn stopped_at(&self) -> Option<Instant> {
        *self.0.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }
}
