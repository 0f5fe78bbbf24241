//! W11, the big log: account streams loaded in bulk through the store's own append path, so
//! that the standard workloads can be measured on a log of ten million events or more and
//! compared with the same workloads on a small log.
//!
//! [`load`] writes `streams` accounts of `per_stream` events each (an opening and deposits
//! of 1), several new streams per append, and beside them one long account stream, written
//! at the others' pace so that its events lie spread through the log. [`measure`] runs one workload on the loaded
//! store and verifies the whole log afterwards, as every run of the harness does; [`census`]
//! reads back what a store loaded earlier holds; [`catch_up`] times a subscription reading
//! the log from position zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossfold_core::{
    AppendRequest, Codec, EventData, EventId, EventStore, EventType, ExpectedVersion, Json,
    Metadata, StoreError, StreamId, StreamVersion, SubscriptionExt, SubscriptionOptions,
};

use crate::bank::{BankEvent, account_stream};
use crate::runner::{SetUp, Share, combine, run_share};
use crate::verify::{Expectation, verify};
use crate::{LoadError, LoadOptions, LoadReport, Verification};

/// Opening balance of every account the load writes, in cents (as the workloads' setup).
pub const OPENING_BALANCE: i64 = 1_000_000;

/// What [`load`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Account streams `account-0` .. `account-{streams - 1}`.
    pub streams: usize,
    /// Events in each of them: an opening and `per_stream - 1` deposits (at least 1).
    pub per_stream: u64,
    /// Events of one more account, `account-{streams}`, written beside the others so that
    /// its events are spread through the log (0: none).
    pub long_stream: u64,
    /// Streams each append creates (one append, one transaction).
    pub streams_per_append: usize,
    /// Appends in flight.
    pub workers: usize,
}

impl Plan {
    /// 1,000,000 streams of 10 events (10M events) and a stream of 1,000,000 events beside
    /// them, 10 streams per append, 16 appends in flight.
    pub fn ten_million() -> Self {
        Self {
            streams: 1_000_000,
            per_stream: 10,
            long_stream: 1_000_000,
            streams_per_append: 10,
            workers: 16,
        }
    }

    /// Every event the plan writes (an error when the count does not fit in 64 bits).
    pub fn events(&self) -> Result<u64, LoadError> {
        (self.streams as u64)
            .checked_mul(self.per_stream.max(1))
            .and_then(|n| n.checked_add(self.long_stream))
            .ok_or_else(|| too_big("events"))
    }

    /// Money in the accounts once the plan is written (an error when it does not fit).
    pub fn money(&self) -> Result<i64, LoadError> {
        let per_account = |events: u64| {
            i64::try_from(events.saturating_sub(1))
                .ok()
                .and_then(|deposits| OPENING_BALANCE.checked_add(deposits))
        };
        let long = if self.long_stream > 0 {
            per_account(self.long_stream)
        } else {
            Some(0)
        };
        per_account(self.per_stream.max(1))
            .and_then(|one| one.checked_mul(i64::try_from(self.streams).ok()?))
            .and_then(|all| all.checked_add(long?))
            .ok_or_else(|| too_big("money"))
    }

    /// The long stream's account, when the plan writes one.
    pub fn long_account(&self) -> Result<Option<StreamId>, LoadError> {
        if self.long_stream == 0 {
            return Ok(None);
        }
        account_stream(self.streams)
            .map(Some)
            .map_err(|e| LoadError::Setup(e.into()))
    }
}

/// Events per append of the long stream.
const LONG_STREAM_CHUNK: u64 = 1_000;
/// The most events an account stream of the plan may hold: all go in one append.
pub const MAX_PER_STREAM: u64 = 10_000;

fn too_big(what: &str) -> LoadError {
    LoadError::Setup(format!("the plan's {what} do not fit in 64 bits").into())
}

fn encoded(event: &BankEvent) -> Result<EventData, LoadError> {
    Ok(EventData {
        event_id: EventId::generate(),
        event_type: EventType::from_static(crossfold_core::DomainEvent::event_type(event)),
        schema_version: 1,
        payload: Json.encode(event).map_err(LoadError::Setup)?,
        metadata: Arc::new(Metadata::now()),
    })
}

/// `count` events of an account stream from its version `from` on (version 0: the opening).
fn account_events(
    opened: &EventData,
    deposit: &EventData,
    from: u64,
    count: u64,
) -> Vec<EventData> {
    (from..from + count)
        .map(|k| EventData {
            event_id: EventId::generate(),
            ..if k == 0 { opened } else { deposit }.clone()
        })
        .collect()
}

/// Writes `plan` into `store` (which should hold none of its account streams yet), adding
/// every event written to `progress` as it goes. Each append creates `streams_per_append`
/// streams with `ExpectedVersion::NoStream`, so a load run twice fails rather than doubling
/// the log.
pub async fn load<S>(store: &S, plan: &Plan, progress: &Arc<AtomicU64>) -> Result<SetUp, LoadError>
where
    S: EventStore + Clone + 'static,
{
    let (events, money) = (plan.events()?, plan.money()?);
    if plan.per_stream > MAX_PER_STREAM {
        return Err(LoadError::Setup(
            format!(
                "at most {MAX_PER_STREAM} events per stream (each stream is written by one \
                 append), not {}",
                plan.per_stream
            )
            .into(),
        ));
    }
    let started = Instant::now();
    let opened = encoded(&BankEvent::Opened {
        initial: OPENING_BALANCE,
    })?;
    let deposit = encoded(&BankEvent::Deposited { amount: 1 })?;
    let per_stream = plan.per_stream.max(1);
    let chunk = plan.streams_per_append.max(1);
    let chunks = plan.streams.div_ceil(chunk);
    let workers = plan.workers.max(1);
    // The account streams' events written so far: the long stream keeps pace with them.
    let written = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (store, opened, deposit, progress, written) = (
            store.clone(),
            opened.clone(),
            deposit.clone(),
            progress.clone(),
            written.clone(),
        );
        let streams = plan.streams;
        tasks.spawn(async move {
            for c in (w..chunks).step_by(workers) {
                let mut request = AppendRequest::new();
                for n in c * chunk..((c + 1) * chunk).min(streams) {
                    let account = account_stream(n).map_err(|e| LoadError::Setup(e.into()))?;
                    request = request.stream(
                        account,
                        ExpectedVersion::NoStream,
                        account_events(&opened, &deposit, 0, per_stream),
                    );
                }
                let events = request.event_count() as u64;
                store
                    .append(request)
                    .await
                    .map_err(|e| LoadError::Setup(e.into()))?;
                progress.fetch_add(events, Ordering::Relaxed);
                written.fetch_add(events, Ordering::Relaxed);
            }
            Ok::<(), LoadError>(())
        });
    }
    if let Some(account) = plan.long_account()? {
        let (store, progress) = (store.clone(), progress.clone());
        let (opened, deposit, total) = (opened.clone(), deposit.clone(), plan.long_stream);
        let others = events - total;
        tasks.spawn(async move {
            let mut version = 0;
            while version < total {
                // Its events lie among the others': each chunk waits until the others have
                // written as large a share of theirs.
                let due = (others as u128 * u128::from(version) / u128::from(total)) as u64;
                while written.load(Ordering::Relaxed) < due {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let n = LONG_STREAM_CHUNK.min(total - version);
                store
                    .append(AppendRequest::new().stream(
                        account.clone(),
                        ExpectedVersion::Exact(StreamVersion::EMPTY.advance(version)),
                        account_events(&opened, &deposit, version, n),
                    ))
                    .await
                    .map_err(|e| LoadError::Setup(e.into()))?;
                version += n;
                progress.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<(), LoadError>(())
        });
    }
    // The first failure stops every writer (what they wrote stays: each append is whole).
    while let Some(outcome) = tasks.join_next().await {
        let outcome = outcome
            .map_err(|e| LoadError::Setup(e.into()))
            .and_then(|r| r);
        if let Err(e) = outcome {
            tasks.abort_all();
            return Err(e);
        }
    }
    Ok(SetUp {
        money,
        events,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// What a store loaded earlier holds (every event, and the money in its accounts), read back
/// from the log and checked (each event once, versions gap-free, no balance negative), so
/// that a run can go on measuring a log it did not write.
pub async fn census<S: EventStore>(store: &S) -> Result<SetUp, LoadError> {
    let started = Instant::now();
    let found = verify(
        store,
        &Expectation {
            accounts: &[],
            total_money: None,
            events_written: None,
            batch_streams: false,
            numbered: false,
        },
    )
    .await
    .map_err(LoadError::Verify)?;
    if let Some(fault) = found.problems.first() {
        return Err(LoadError::Setup(
            format!("the stored log does not verify: {fault}").into(),
        ));
    }
    Ok(SetUp {
        money: found.total_money,
        events: found.events,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Runs `options.workload` on a store that already holds `before` (its accounts included),
/// then verifies the whole log, as every run of the harness does. The next measurement
/// starts from the report's verified totals ([`after`]).
pub async fn measure<S>(
    store: &S,
    options: &LoadOptions,
    before: &SetUp,
) -> Result<LoadReport, LoadError>
where
    S: EventStore + Clone + 'static,
{
    let share = run_share(store.clone(), options, Share::default(), async { Ok(()) }).await?;
    combine(store, options, before, vec![share]).await
}

/// Verifies the whole log against what it should hold (`expected`: the money in its accounts
/// and every event in it), and the stored versions of `accounts` against the log, as the end
/// of every run of the harness does.
pub async fn check<S: EventStore>(
    store: &S,
    accounts: &[StreamId],
    expected: &SetUp,
) -> Result<Verification, LoadError> {
    verify(
        store,
        &Expectation {
            accounts,
            total_money: Some(expected.money),
            events_written: Some(expected.events),
            batch_streams: false,
            numbered: false,
        },
    )
    .await
    .map_err(LoadError::Verify)
}

/// What the log holds after a verified run: the next run's starting point.
pub fn after(report: &LoadReport) -> Option<SetUp> {
    report.is_valid().then_some(SetUp {
        money: report.verification.total_money,
        events: report.verification.events,
        secs: 0.0,
    })
}

/// Reads the whole log from position zero through a subscription, `batch` events per read:
/// the events read and how long it took.
pub async fn catch_up<S: EventStore + Clone + 'static>(
    store: &S,
    batch: usize,
) -> Result<(u64, Duration), StoreError> {
    let started = Instant::now();
    let mut subscription = store.subscribe(SubscriptionOptions::all().batch_size(batch));
    let mut events = 0u64;
    loop {
        let read = subscription.read_available().await?;
        if read.events.is_empty() {
            break;
        }
        events += read.events.len() as u64;
    }
    Ok((events, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Workload;
    use crossfold_memory::MemoryStore;

    fn small_plan() -> Plan {
        Plan {
            streams: 1_003,
            per_stream: 4,
            long_stream: 2_500,
            streams_per_append: 10,
            workers: 3,
        }
    }

    #[tokio::test]
    async fn a_loaded_log_holds_the_plan_and_verifies_after_a_workload() {
        let store = MemoryStore::new();
        let plan = small_plan();
        let progress = Arc::new(AtomicU64::new(0));
        let loaded = load(&store, &plan, &progress)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (events, money) = (
            plan.events().unwrap_or_else(|e| panic!("{e}")),
            plan.money().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(progress.load(Ordering::Relaxed), events);
        assert_eq!((loaded.events, loaded.money), (events, money));

        // Read back, the log says the same as the plan.
        let counted = census(&store).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (counted.events, counted.money),
            (loaded.events, loaded.money)
        );
        let (read, _) = catch_up(&store, 500)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, events);

        // A workload on the loaded store verifies against it, and its report gives the next
        // starting point.
        let mut options = LoadOptions::new(Workload::Deposit);
        options.duration = Duration::from_millis(300);
        options.warmup = Duration::ZERO;
        options.accounts = plan.streams;
        let report = measure(&store, &options, &loaded)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.is_valid(), "{:?}", report.verification.problems);
        assert!(report.operations > 0);
        let next = after(&report).unwrap_or_else(|| panic!("a valid report"));
        assert_eq!(next.events, events + report.operations);

        // A starting point that is wrong fails verification: the check can fail.
        let wrong = SetUp {
            money: next.money + 1,
            ..next.clone()
        };
        let mut read_only = LoadOptions::new(Workload::ReadOne);
        read_only.duration = Duration::from_millis(100);
        read_only.warmup = Duration::ZERO;
        read_only.accounts = plan.streams;
        let report = measure(&store, &read_only, &wrong)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!report.is_valid());
        assert!(after(&report).is_none());
        let report = measure(&store, &read_only, &next)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.is_valid(), "{:?}", report.verification.problems);
    }

    #[tokio::test]
    async fn loading_twice_is_refused_and_writes_nothing_more() {
        let store = MemoryStore::new();
        let plan = Plan {
            long_stream: 0,
            ..small_plan()
        };
        let progress = Arc::new(AtomicU64::new(0));
        load(&store, &plan, &progress)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(load(&store, &plan, &progress).await.is_err());
        let counted = census(&store).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            counted.events,
            plan.events().unwrap_or_else(|e| panic!("{e}"))
        );
    }

    #[test]
    fn a_plan_too_big_to_count_is_an_error() {
        let plan = Plan {
            streams: usize::MAX,
            per_stream: u64::MAX,
            ..small_plan()
        };
        assert!(plan.events().is_err());
        assert!(plan.money().is_err());
        assert_eq!(
            small_plan().events().unwrap_or_else(|e| panic!("{e}")),
            1_003 * 4 + 2_500
        );
    }
}
