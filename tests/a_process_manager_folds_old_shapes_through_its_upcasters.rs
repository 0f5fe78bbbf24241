//! A process manager's state is folded from its state streams through its upcasters: an old
//! deposit (version 1, `{"units": n}`) is upcast, a retired type's event is skipped, and the
//! reaction sees today's balance — with the events stored in the memory store and in
//! PostgreSQL, as JSON and as MessagePack.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use crossfold::core::deadline::DeadlineStore;
use crossfold::core::{
    AppendRequest, Codec, EventData, EventStore, ExpectedVersion, Json, LogFilter, Payload,
    PayloadFormat, Position, Recorded, Upcasters,
};
use crossfold::executor::Executor;
use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore, MemoryStore};
use crossfold::postgres::{PgConfig, PgEventStore};
use crossfold::prelude::*;
use crossfold::projections::{
    ApplyContext, HandlerError, Process, ProcessManager, ProcessManagerProjection, Projection,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Account {
    Deposited { cents: u64 },
    Audited,
}

impl DomainEvent for Account {
    fn event_type(&self) -> &'static str {
        match self {
            Account::Deposited { .. } => "Deposited",
            Account::Audited => "Audited",
        }
    }
    fn schema_version(&self) -> u16 {
        2
    }
}

#[derive(Deserialize)]
struct DepositedV1 {
    units: u64,
}

/// Records the balance it saw at each audit.
#[derive(Clone, Default)]
struct Auditor {
    seen: Arc<Mutex<Vec<u64>>>,
}

impl ProcessManager for Auditor {
    type Event = Account;
    type State = u64;

    fn name(&self) -> &str {
        "auditor"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::event_types(["Audited"])
    }

    fn upcasters(&self) -> Upcasters {
        let mut upcasters = Upcasters::new();
        upcasters
            .register_typed("Deposited", 1, |old: DepositedV1| Account::Deposited {
                cents: old.units * 100,
            })
            .retire("Frozen");
        upcasters
    }

    fn state_streams(&self, event: &Recorded<Account>) -> Vec<StreamId> {
        vec![event.stream_id.clone()]
    }

    fn apply(balance: &mut u64, event: &Recorded<Account>) {
        if let Account::Deposited { cents } = event.event {
            *balance += cents;
        }
    }

    async fn react<S: EventStore, C: Codec, D: DeadlineStore>(
        &self,
        balance: &u64,
        _event: &Recorded<Account>,
        _process: &mut Process<'_, S, C, D>,
    ) -> Result<(), HandlerError> {
        self.seen.lock().unwrap().push(*balance);
        Ok(())
    }
}

/// Stores an old deposit, a retired event, today's deposit and an audit on `account-1`, runs
/// the auditor over the audit, and returns the balance it saw.
async fn audit<S: EventStore + Clone + 'static>(store: S, format: PayloadFormat) -> Vec<u64> {
    let payload = |json: &str| match format {
        PayloadFormat::Json => Payload::json(json.to_owned()),
        _ => {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            Payload::message_pack(rmp_serde::to_vec_named(&value).unwrap())
        }
    };
    let stored = |event_type: &str, version: u16, json: &str| {
        let mut event = EventData::new(event_type, payload(json));
        event.schema_version = version;
        event
    };
    store
        .append(AppendRequest::new().stream(
            StreamId::new("account-1").unwrap(),
            ExpectedVersion::NoStream,
            vec![
                stored("Deposited", 1, r#"{"type":"Deposited","units":2}"#),
                stored("Frozen", 1, r#"{"type":"Frozen"}"#),
                stored("Deposited", 2, r#"{"type":"Deposited","cents":50}"#),
                stored("Audited", 2, r#"{"type":"Audited"}"#),
            ],
        ))
        .await
        .unwrap();
    let auditor = Auditor::default();
    let process = ProcessManagerProjection::<_, _, _, _, _, ()>::new(
        auditor.clone(),
        Executor::new(store.clone()),
        MemoryDeadlineStore::new(),
        MemoryCheckpoints::new(),
    );
    let upcasters = auditor.upcasters();
    let audits: Vec<Recorded<Account>> = store
        .read_all(Position::START, 100, &auditor.filter())
        .await
        .unwrap()
        .iter()
        .map(|e| upcasters.decode(&Json, e).unwrap())
        .collect();
    assert_eq!(audits.len(), 1);
    process
        .apply(&mut (), &ApplyContext::new("auditor", 1, 1), &audits)
        .await
        .unwrap();
    auditor.seen.lock().unwrap().clone()
}

#[tokio::test]
async fn the_state_is_folded_through_the_upcasters() {
    for format in [PayloadFormat::Json, PayloadFormat::MessagePack] {
        assert_eq!(audit(MemoryStore::new(), format).await, [250], "{format:?}");
    }
}

/// The process manager's state streams read from PostgreSQL (its checkpoints and deadlines
/// stay in memory: they play no part in the fold).
#[tokio::test]
async fn the_state_is_folded_through_the_upcasters_on_postgres() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    for format in [PayloadFormat::Json, PayloadFormat::MessagePack] {
        // Named with its creation time, as the test helpers' stale-schema cleanup expects.
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let schema = format!("cf_test_{secs}_pmold{:06x}", fastrand::u32(..0xff_ffff));
        let config = PgConfig::from_url(&url)
            .unwrap()
            .schema(&schema)
            .pool_size(2);
        let store = PgEventStore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot use PostgreSQL at {url}: {e}"));
        store.migrate().await.unwrap();
        let seen = audit(store.clone(), format).await;
        drop_schema(&store, &schema).await;
        assert_eq!(seen, [250], "{format:?}");
    }
}

/// Drops a test schema, trying again when the drop loses a deadlock (to autovacuum or the
/// store's listener); a schema left behind is cleaned up by later runs, not a failure.
async fn drop_schema(store: &PgEventStore, schema: &str) {
    for _ in 0..5 {
        let Ok(client) = store.pool().get().await else {
            continue;
        };
        if client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
