//! One task's operations: what each workload does once, and what it counted.

use std::sync::Arc;
use std::time::Duration;

use crossfold_core::{
    AppendRequest, CommandError, ErrorChain, EventData, EventId, EventStore, ExpectedVersion,
    Position, StoreError, StreamId, StreamRead, SubscriptionExt, SubscriptionOptions,
};
use crossfold_executor::{Error, Executed, Executor};
use hdrhistogram::Histogram;

use crate::Workload;
use crate::bank::{Deposit, Split, Transfer};
use crate::counter::NumberInvoice;

/// What one operation did.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) rejected: bool,
    pub(super) failed: bool,
    /// Refused at admission (`Error::Overloaded`): nothing was written.
    pub(super) overloaded: bool,
    pub(super) error: Option<String>,
    pub(super) conflicts: u32,
    pub(super) retries: u32,
    /// Retries that did not follow a conflict: after a transient store error (a pool that
    /// timed out, a lost connection) or a decision on a state found stale.
    pub(super) transient_retries: u32,
    /// Events written or read.
    pub(super) events: u64,
    /// Events a successful write reported written (for verification).
    pub(super) written: u64,
    pub(super) deposited: i64,
    /// Where the last event a successful write reported lies in the log.
    pub(super) position: Position,
}

impl Outcome {
    pub(super) fn from_command(result: Result<Executed, Error>, deposit: i64) -> Self {
        match result {
            Ok(done) => Outcome {
                position: done
                    .events
                    .iter()
                    .map(|e| e.position)
                    .max()
                    .unwrap_or_default(),
                conflicts: done.conflicts,
                retries: done.attempts.saturating_sub(1),
                transient_retries: done.attempts.saturating_sub(1 + done.conflicts),
                events: done.events.len() as u64,
                written: done.events.len() as u64,
                deposited: if done.events.is_empty() { 0 } else { deposit },
                ..Outcome::default()
            },
            Err(Error::Command(CommandError::Rejected { .. })) => Outcome {
                rejected: true,
                ..Outcome::default()
            },
            Err(Error::Overloaded { .. }) => Outcome {
                overloaded: true,
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
pub(super) struct Stats {
    pub(super) latency: Histogram<u64>,
    pub(super) ops: u64,
    pub(super) events: u64,
    pub(super) conflicts: u64,
    pub(super) retries: u64,
    pub(super) transient_retries: u64,
    pub(super) failed: u64,
    pub(super) overloaded: u64,
    pub(super) rejected: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) per_second: Vec<u64>,
    /// Money deposited by successful operations, warm-up included (for verification).
    pub(super) deposited: i64,
    /// Events successful writes reported written, warm-up included (for verification).
    pub(super) written: u64,
    /// The furthest position a successful write reported, warm-up included: verification
    /// waits until the log is visible that far.
    pub(super) position: Position,
}

impl Stats {
    pub(super) fn new(histogram: &Histogram<u64>, seconds: usize) -> Self {
        Self {
            latency: histogram.clone(),
            ops: 0,
            events: 0,
            conflicts: 0,
            retries: 0,
            transient_retries: 0,
            failed: 0,
            overloaded: 0,
            rejected: 0,
            errors: 0,
            first_error: None,
            per_second: vec![0; seconds + 1],
            deposited: 0,
            written: 0,
            position: Position::START,
        }
    }

    pub(super) fn merge(&mut self, other: Stats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.events += other.events;
        self.conflicts += other.conflicts;
        self.retries += other.retries;
        self.transient_retries += other.transient_retries;
        self.failed += other.failed;
        self.overloaded += other.overloaded;
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
        self.position = self.position.max(other.position);
    }

    pub(super) fn record(&mut self, outcome: &Outcome, latency: Duration, second: Option<usize>) {
        self.deposited += outcome.deposited;
        self.written += outcome.written;
        self.position = self.position.max(outcome.position);
        let Some(second) = second else {
            return;
        };
        self.latency
            .saturating_record(latency.as_micros().max(1) as u64);
        self.ops += 1;
        self.events += outcome.events;
        self.conflicts += u64::from(outcome.conflicts);
        self.retries += u64::from(outcome.retries);
        self.transient_retries += u64::from(outcome.transient_retries);
        self.failed += u64::from(outcome.failed);
        self.overloaded += u64::from(outcome.overloaded);
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

/// One task's operation generator.
pub(super) struct Task<S> {
    pub(super) workload: Workload,
    pub(super) executor: Executor<S>,
    pub(super) store: S,
    pub(super) rng: fastrand::Rng,
    pub(super) accounts: Arc<Vec<StreamId>>,
    pub(super) counter_stream: StreamId,
    pub(super) id: usize,
    pub(super) counter: u64,
    pub(super) batch_payload: Arc<Vec<EventData>>,
}

impl<S: EventStore + Clone + 'static> Task<S> {
    pub(super) fn pick(&mut self) -> StreamId {
        let i = self.rng.usize(..self.accounts.len());
        self.accounts[i].clone()
    }

    pub(super) fn pick_distinct<const N: usize>(&mut self) -> [StreamId; N] {
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

    pub(super) async fn op(&mut self) -> Outcome {
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
                    Ok(appended) => Outcome {
                        events: n,
                        written: n,
                        position: appended.position().unwrap_or_default(),
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
    pub(super) async fn catch_up(&mut self) -> Outcome {
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
