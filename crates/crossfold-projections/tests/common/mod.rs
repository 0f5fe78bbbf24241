//! A bank-balance projection on memory, shared by the behaviour files.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossfold_core::{
    AppendRequest, Backoff, DomainEvent, EventData, EventStore, ExpectedVersion, Jitter, LogFilter,
    Payload, Recorded, StreamId,
};
use crossfold_memory::{MemoryStore, MemoryUnit};
use crossfold_projections::{ApplyContext, HandlerError, Projection, RunnerOptions};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Bank {
    Deposited { amount: i64 },
}

impl DomainEvent for Bank {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

/// Balances per account and generation; `applied` counts every event applied (a double apply
/// shows as a count above the log's length).
#[derive(Clone, Default)]
pub struct Model {
    pub balances: Arc<Mutex<BTreeMap<(u64, String), i64>>>,
    pub applied: Arc<Mutex<BTreeMap<u64, u64>>>,
}

impl Model {
    pub fn balances(&self, generation: u64) -> BTreeMap<String, i64> {
        self.balances
            .lock()
            .unwrap()
            .iter()
            .filter(|((g, _), _)| *g == generation)
            .map(|((_, a), b)| (a.clone(), *b))
            .collect()
    }

    pub fn applied(&self, generation: u64) -> u64 {
        self.applied
            .lock()
            .unwrap()
            .get(&generation)
            .copied()
            .unwrap_or(0)
    }
}

pub struct Balances {
    pub name: String,
    pub model: Model,
    /// Amounts the handler rejects.
    pub poison: Option<i64>,
    pub filter: LogFilter,
}

impl Balances {
    pub fn new(name: &str, model: Model) -> Self {
        Self {
            name: name.into(),
            model,
            poison: None,
            filter: LogFilter::categories(["account"]),
        }
    }
}

impl Projection for Balances {
    type Event = Bank;
    type Unit = MemoryUnit;

    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> LogFilter {
        self.filter.clone()
    }

    async fn apply(
        &self,
        unit: &mut MemoryUnit,
        context: &ApplyContext,
        events: &[Recorded<Bank>],
    ) -> Result<(), HandlerError> {
        let mut changes = Vec::new();
        for e in events {
            let Bank::Deposited { amount } = e.event;
            if Some(amount) == self.poison {
                return Err(HandlerError::rejected(format!("cannot apply {amount}")));
            }
            changes.push((e.stream_id.to_string(), amount));
        }
        let model = self.model.clone();
        let generation = context.generation;
        unit.on_commit(move || {
            let mut balances = model.balances.lock().unwrap();
            let count = changes.len() as u64;
            for (account, amount) in changes {
                *balances.entry((generation, account)).or_default() += amount;
            }
            *model.applied.lock().unwrap().entry(generation).or_default() += count;
        });
        Ok(())
    }

    async fn reset(
        &self,
        unit: &mut MemoryUnit,
        context: &ApplyContext,
    ) -> Result<(), HandlerError> {
        let model = self.model.clone();
        let generation = context.generation;
        unit.on_commit(move || {
            model
                .balances
                .lock()
                .unwrap()
                .retain(|(g, _), _| *g != generation);
            model.applied.lock().unwrap().remove(&generation);
        });
        Ok(())
    }
}

pub fn deposit(amount: i64) -> EventData {
    EventData::new(
        "Deposited",
        Payload::json(format!(r#"{{"type":"Deposited","amount":{amount}}}"#)),
    )
}

pub async fn append(store: &MemoryStore, account: u32, amounts: &[i64]) {
    let stream = StreamId::new(format!("account-{account}")).unwrap();
    store
        .append(AppendRequest::new().stream(
            stream,
            ExpectedVersion::Any,
            amounts.iter().map(|a| deposit(*a)).collect(),
        ))
        .await
        .unwrap();
}

/// Fast leases and status for tests.
pub fn options(owner: &str) -> RunnerOptions {
    RunnerOptions::default()
        .owner(owner)
        .lease_ttl(Duration::from_millis(600))
        .control_interval(Duration::from_millis(50))
        .status_interval(Duration::from_millis(50))
        .retry_backoff(
            Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
                .jitter(Jitter::Equal),
        )
}

/// Waits until `condition` holds, failing after 10 s.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
