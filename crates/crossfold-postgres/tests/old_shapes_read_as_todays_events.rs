//! Events stored in old shapes, read by today's types through the executor's folds, on the
//! memory store and on PostgreSQL, as JSON and as MessagePack: a typed upcaster (whole units
//! become cents), a type renamed (stored under its old name, read under the new one), a type
//! retired (skipped, or read as a `Retired` value, as the executor's upcasters choose), and a
//! new optional field that needs no upcaster. The decisions taken on them are the ones today's
//! events would give, including after a conflict's catch-up read meets more old events, and a
//! subscription decoding through the same upcasters reads today's events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fresh_store, sid};
use crossfold_core::check::EventCheck;
use crossfold_core::{
    AppendRequest, Codec, Command, CommandError, DomainEvent, Emit, EventData, EventStore,
    ExpectedVersion, Fold, Json, LogFilter, MessagePack, Recorded, StreamId, StreamRef,
    SubscriptionExt, SubscriptionOptions, Upcasters,
};
use crossfold_executor::Executor;
use crossfold_memory::MemoryStore;
use crossfold_testkit::decoding::assert_every_event_decodes;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Today's events (schema version 2).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Account {
    Deposited {
        cents: u64,
        // Added in version 2, optional: no upcaster.
        #[serde(default)]
        memo: Option<String>,
    },
    // Was `Credited` until renamed.
    #[serde(alias = "Credited")]
    MoneyCredited {
        cents: u64,
    },
    Withdrawn {
        cents: u64,
    },
    // What retired events read as, when they are not skipped.
    Retired,
}

impl DomainEvent for Account {
    fn event_type(&self) -> &'static str {
        match self {
            Account::Deposited { .. } => "Deposited",
            Account::MoneyCredited { .. } => "MoneyCredited",
            Account::Withdrawn { .. } => "Withdrawn",
            Account::Retired => "Retired",
        }
    }
    fn schema_version(&self) -> u16 {
        2
    }
}

/// Version 1 of `Deposited`: whole units.
#[derive(Deserialize)]
struct DepositedV1 {
    units: u64,
}

#[derive(Clone, Default)]
struct Balance {
    cents: u64,
    retired_seen: u32,
}

impl Fold<Account> for Balance {
    fn apply(&mut self, event: &Recorded<Account>) {
        match &event.event {
            Account::Deposited { cents, .. } | Account::MoneyCredited { cents } => {
                self.cents += cents;
            }
            Account::Withdrawn { cents } => self.cents -= cents,
            Account::Retired => self.retired_seen += 1,
        }
    }
}

struct Withdraw {
    account: StreamId,
    cents: u64,
}

impl Command for Withdraw {
    type Event = Account;
    type State = Balance;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.clone()
    }

    fn handle<'x>(
        &self,
        balance: &Balance,
        account: StreamRef<'x>,
        out: &mut Emit<'x, Account>,
    ) -> Result<(), CommandError> {
        if balance.cents < self.cents {
            return Err(CommandError::rejected(
                "insufficient_funds",
                format!("balance {} below {}", balance.cents, self.cents),
            ));
        }
        out.append(account, Account::Withdrawn { cents: self.cents });
        Ok(())
    }
}

fn stored(
    codec: &impl Codec,
    event_type: &str,
    version: u16,
    payload: serde_json::Value,
) -> EventData {
    let mut event = EventData::new(event_type, codec.encode(&payload).unwrap());
    event.schema_version = version;
    event
}

/// 2 + 3 units in version 1 (JSON and MessagePack), 50 cents credited under the old name,
/// a retired event, and 100 cents deposited today without the new field: 650 cents.
fn history() -> Vec<EventData> {
    vec![
        stored(
            &Json,
            "Deposited",
            1,
            json!({"type": "Deposited", "units": 2}),
        ),
        stored(
            &MessagePack,
            "Deposited",
            1,
            json!({"type": "Deposited", "units": 3}),
        ),
        stored(
            &Json,
            "Credited",
            2,
            json!({"type": "Credited", "cents": 50}),
        ),
        stored(
            &MessagePack,
            "Frozen",
            1,
            json!({"type": "Frozen", "reason": "audit"}),
        ),
        stored(
            &Json,
            "Deposited",
            2,
            json!({"type": "Deposited", "cents": 100}),
        ),
    ]
}

fn upcasters(skip_retired: bool) -> Upcasters {
    let mut upcasters = Upcasters::new();
    upcasters
        .register_typed("Deposited", 1, |old: DepositedV1| Account::Deposited {
            cents: old.units * 100,
            memo: None,
        })
        .rename("Credited", "MoneyCredited");
    if skip_retired {
        upcasters.retire("Frozen");
    } else {
        upcasters.retire_as("Frozen", &Account::Retired).unwrap();
    }
    upcasters
}

async fn decisions_on_old_events<S: EventStore + Clone + 'static>(store: S) {
    for skip in [true, false] {
        let account = sid(if skip { "account-1" } else { "account-2" });
        store
            .append(AppendRequest::new().stream(account.clone(), ExpectedVersion::Any, history()))
            .await
            .unwrap();

        // Without the upcasters the fold cannot read the history: a codec error.
        let error = Executor::new(store.clone())
            .execute(Withdraw {
                account: account.clone(),
                cents: 1,
            })
            .await
            .unwrap_err();
        assert!(error.to_string().contains("Deposited"), "{error}");

        let executor = Executor::builder(store.clone())
            .upcasters(upcasters(skip))
            .build();
        // The whole balance, 650 cents, is there; one more cent is not.
        let refused = executor
            .execute(Withdraw {
                account: account.clone(),
                cents: 651,
            })
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("balance 650"), "{refused}");
        executor
            .execute(Withdraw {
                account: account.clone(),
                cents: 650,
            })
            .await
            .unwrap();
        // Another writer adds more old events; this executor's cached view is behind (it
        // refuses on it, then catches up before the refusal stands), and the catch-up read
        // decodes them too.
        store
            .append(AppendRequest::new().stream(account.clone(), ExpectedVersion::Any, history()))
            .await
            .unwrap();
        let done = executor
            .execute(Withdraw {
                account: account.clone(),
                cents: 650,
            })
            .await
            .unwrap();
        assert_eq!(done.attempts, 2, "decided again after catching up");
        let refused = executor
            .execute(Withdraw {
                account: account.clone(),
                cents: 1,
            })
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("balance 0 "), "{refused}");
        assert_eq!(store.stream_version(&account).await.unwrap().get(), 12);
    }

    // And the check over the log agrees: clean with the upcasters; without them the old
    // deposits and the retired events of each of the four histories fail (the renamed one
    // still decodes, through its serde alias).
    let report = assert_every_event_decodes(EventCheck::new(&store).decode::<Account, _>(
        LogFilter::all(),
        Json,
        upcasters(true),
    ))
    .await;
    assert_eq!(report.read, 24);
    let bare = EventCheck::new(&store)
        .decode::<Account, _>(LogFilter::all(), Json, Upcasters::new())
        .run()
        .await
        .unwrap();
    assert_eq!(bare.failed, 12, "{bare}");

    // A subscription of the application's own reads the same old shapes through the same
    // upcasters: every deposit and credit as today's event, the retired ones passed over.
    let upcasters = upcasters(true);
    let mut subscription = store.subscribe(SubscriptionOptions::all());
    let (mut cents, mut withdrawn, mut skipped) = (0, 0, 0);
    for _ in 0..24 {
        let event = subscription.next_event().await.unwrap();
        if upcasters.is_skipped(&event) {
            skipped += 1;
            continue;
        }
        let today: Recorded<Account> = upcasters.decode(&Json, &event).unwrap();
        match today.event {
            Account::Deposited { cents: c, .. } | Account::MoneyCredited { cents: c } => cents += c,
            Account::Withdrawn { cents: c } => withdrawn += c,
            Account::Retired => panic!("retired events are skipped here"),
        }
    }
    assert_eq!((cents, withdrawn, skipped), (4 * 650, 4 * 650, 4));
}

#[tokio::test]
async fn on_the_memory_store() {
    decisions_on_old_events(MemoryStore::new()).await;
}

#[tokio::test]
async fn on_postgres() {
    let test = fresh_store().await;
    decisions_on_old_events(test.store.clone()).await;
}
