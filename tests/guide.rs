//! The code of `docs/guide.md`, compiled and run. Each block of the guide appears here
//! verbatim (up to indentation), wrapped where the guide leaves names to the reader, and
//! `the_guide_is_the_code_tested_here` fails if the guide and this file drift apart.

#![allow(dead_code, missing_docs, unreachable_pub, clippy::unwrap_used)]

// Section 1: events.
use crossfold::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StockEvent {
    Received { quantity: u32 },
    Reserved { order: String, quantity: u32 },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            StockEvent::Received { .. } => "Received",
            StockEvent::Reserved { .. } => "Reserved",
        }
    }
}

// Section 2: a state and a command.
/// A product's stock, as the commands that reserve it see it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)] // serde: for snapshots (section 9)
pub struct Stock {
    pub available: u32,
}

impl Fold<StockEvent> for Stock {
    fn apply(&mut self, event: &Recorded<StockEvent>) {
        match &event.event {
            StockEvent::Received { quantity } => self.available += quantity,
            StockEvent::Reserved { quantity, .. } => self.available -= quantity,
        }
    }
}

/// Reserve `quantity` units of a product for an order.
pub struct Reserve {
    pub product: StreamId,
    pub order: String,
    pub quantity: u32,
}

impl Command for Reserve {
    type Event = StockEvent;
    type State = Stock;
    type Streams = StreamId; // one stream; use [StreamId; N] or Vec<StreamId> for several

    fn streams(&self) -> StreamId {
        self.product.clone()
    }

    fn handle<'x>(
        &self,
        stock: &Stock,
        product: StreamRef<'x>,
        out: &mut Emit<'x, StockEvent>,
    ) -> Result<(), CommandError> {
        if stock.available < self.quantity {
            return Err(CommandError::rejected(
                "out_of_stock",
                format!("{} available, {} wanted", stock.available, self.quantity),
            ));
        }
        out.append(
            product,
            StockEvent::Reserved {
                order: self.order.clone(),
                quantity: self.quantity,
            },
        );
        Ok(())
    }
}

/// Stocks `product` with three units, written straight to the store.
async fn receive_three(store: &MemoryStore, product: &StreamId) {
    write_stored(
        store,
        product,
        ExpectedVersion::NoStream,
        "Received",
        r#"{"type":"Received","quantity":3}"#,
    )
    .await;
}

/// Appends one JSON event to `stream` as the store holds it, past any command.
async fn write_stored(
    store: &MemoryStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    event_type: &str,
    json: &'static str,
) {
    let event = crossfold::core::EventData::new(event_type, crossfold::core::Payload::json(json));
    store
        .append(crossfold::core::AppendRequest::new().stream(stream.clone(), expected, vec![event]))
        .await
        .unwrap();
}

// Section 3: tests without a store.
mod section_3 {
    use super::*;

    use crossfold_testkit::CommandTest;

    #[test]
    fn reserving_more_than_is_available_is_refused() {
        let apples = StreamId::new("product-apples").unwrap();
        CommandTest::given([(&apples, StockEvent::Received { quantity: 3 })])
            .when(Reserve {
                product: apples.clone(),
                order: "o-1".into(),
                quantity: 5,
            })
            .then_rejected("out_of_stock");
    }

    #[test]
    fn reserving_what_is_available_reserves_it() {
        let apples = StreamId::new("product-apples").unwrap();
        CommandTest::given([(&apples, StockEvent::Received { quantity: 3 })])
            .when(Reserve {
                product: apples.clone(),
                order: "o-1".into(),
                quantity: 2,
            })
            .then_expect([(
                &apples,
                StockEvent::Reserved {
                    order: "o-1".into(),
                    quantity: 2,
                },
            )]);
    }
}

// Section 4: run it.
mod section_4 {
    use super::*;

    #[tokio::main]
    async fn main() -> Result<(), Box<dyn std::error::Error>> {
        let executor = Executor::new(MemoryStore::new());
        let apples = StreamId::new("product-apples")?;
        let done = executor
            .execute(Reserve {
                product: apples,
                order: "o-1".into(),
                quantity: 1,
            })
            .await;
        println!("{done:?}");
        Ok(())
    }

    #[test]
    fn the_guide_main_runs() {
        main().unwrap();
    }

    async fn with_context(
        executor: &Executor<MemoryStore>,
        command: Reserve,
        request_id: uuid::Uuid,
    ) -> Result<(), Error> {
        let context = ExecutionContext::new()
            .actor(crossfold::executor::Actor::new("clerk-7").with_permission("stock:reserve"))
            .correlation_id(request_id)
            .with("channel", "web");
        executor.execute_with(command, &context).await?;
        Ok(())
    }

    async fn idempotent(
        executor: &Executor<MemoryStore>,
        command: Reserve,
        same_command: Reserve,
        request_id: uuid::Uuid,
    ) -> Result<(), Error> {
        let context = ExecutionContext::new().idempotency_key(format!("reserve/{request_id}"));
        let first = executor.execute_with(command, &context).await?;
        let again = executor.execute_with(same_command, &context).await?;
        assert!(again.replayed);
        assert_eq!(again.events, first.events);
        Ok(())
    }

    #[tokio::test]
    async fn the_guide_idempotency_key_reserves_once() {
        let store = MemoryStore::new();
        let executor = Executor::new(store.clone());
        let apples = StreamId::new("product-apples").unwrap();
        receive_three(&store, &apples).await;
        let reserve = || Reserve {
            product: apples.clone(),
            order: "o-1".into(),
            quantity: 1,
        };
        idempotent(&executor, reserve(), reserve(), uuid::Uuid::now_v7())
            .await
            .unwrap();
        let stream = store
            .read_stream(&apples, StreamVersion::EMPTY, 10)
            .await
            .unwrap();
        assert_eq!(stream.events.len(), 2, "received once, reserved once");
    }

    #[tokio::test]
    async fn the_guide_context_is_copied_into_events() {
        let store = MemoryStore::new();
        let executor = Executor::new(store.clone());
        let apples = StreamId::new("product-apples").unwrap();
        let request_id = uuid::Uuid::now_v7();
        receive_three(&store, &apples).await;
        let command = Reserve {
            product: apples.clone(),
            order: "o-1".into(),
            quantity: 1,
        };
        with_context(&executor, command, request_id).await.unwrap();
        let stream = store
            .read_stream(&apples, StreamVersion::EMPTY, 10)
            .await
            .unwrap();
        let meta = &stream.events[1].metadata;
        assert_eq!(meta.correlation_id, Some(request_id));
        assert_eq!(meta.actor.as_deref(), Some("clerk-7"));
        assert_eq!(meta.custom.get("channel"), Some(&serde_json::json!("web")));
    }
}

// Section 5: handle each error.
mod section_5 {
    use super::*;

    async fn handle_errors(
        executor: &Executor<MemoryStore>,
        command: Reserve,
    ) -> Result<(), Box<dyn std::error::Error>> {
        match executor.execute(command).await {
            Ok(done) => println!("wrote {} events", done.events.len()),
            Err(Error::Command(CommandError::Rejected { rule, message }))
                if rule == "out_of_stock" =>
            {
                println!("sorry: {message}")
            }
            Err(e) if e.may_have_written() => println!("may have been applied, look first: {e}"),
            Err(e) if e.is_retryable() => println!("busy, try again: {}", ErrorChain(&e)),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    #[tokio::test]
    async fn the_guide_error_handling_takes_the_refusal() {
        let executor = Executor::new(MemoryStore::new());
        let apples = StreamId::new("product-apples").unwrap();
        let command = Reserve {
            product: apples,
            order: "o-1".into(),
            quantity: 1,
        };
        handle_errors(&executor, command).await.unwrap();
    }
}

// Section 6: read what happened.
mod section_6 {
    use super::*;

    async fn follow(
        store: MemoryStore,
        saved_checkpoint: crossfold::core::Position,
        mut handle: impl FnMut(Recorded<StockEvent>),
        mut save: impl FnMut(crossfold::core::Position),
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use crossfold::core::{Json, LogFilter, SubscriptionExt, SubscriptionOptions, Upcasters};

        let mut subscription = store.subscribe(
            SubscriptionOptions::all()
                .from(saved_checkpoint) // a Position; START for the beginning
                .filter(LogFilter::event_types(["Reserved"])),
        );
        let upcasters = Upcasters::new();
        loop {
            let event = subscription.next_event().await?; // catches up, then waits for new commits
            let reserved: Recorded<StockEvent> = upcasters.decode(&Json, &event)?;
            handle(reserved);
            save(subscription.position()); // resume from here after a restart
        }
    }

    #[tokio::test]
    async fn the_guide_subscription_delivers_reservations_and_checkpoints() {
        let store = MemoryStore::new();
        let executor = Executor::new(store.clone());
        let apples = StreamId::new("product-apples").unwrap();
        receive_three(&store, &apples).await;
        executor
            .execute(Reserve {
                product: apples,
                order: "o-1".into(),
                quantity: 2,
            })
            .await
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let saved = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let follower = tokio::spawn(follow(
            store,
            crossfold::core::Position::START,
            {
                let seen = seen.clone();
                move |e| seen.lock().unwrap().push(e.event.clone())
            },
            {
                let saved = saved.clone();
                move |p| saved.lock().unwrap().push(p)
            },
        ));
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while saved.lock().unwrap().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        follower.abort();
        assert_eq!(
            *seen.lock().unwrap(),
            [StockEvent::Reserved {
                order: "o-1".into(),
                quantity: 2
            }]
        );
    }
}

// Section 7: PostgreSQL.
#[cfg(feature = "postgres")]
mod section_7 {
    use super::*;

    async fn open(
        database_url: String,
        schema: &str,
    ) -> Result<Executor<crossfold::postgres::PgEventStore>, Box<dyn std::error::Error>> {
        use crossfold::postgres::{PgConfig, PgEventStore};

        let config = PgConfig::from_url(&database_url)? // postgres://user@host:5432/database
            .schema(schema)
            .pool_size(16);
        let store = PgEventStore::connect(config).await?;
        store.migrate().await?;
        let executor = Executor::new(store.clone());
        Ok(executor)
    }

    #[tokio::test]
    async fn the_guide_postgres_store_runs_the_command() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let schema = format!("guide_{}", uuid::Uuid::now_v7().simple());
        let executor = open(url.clone(), &schema)
            .await
            .expect("PostgreSQL must be reachable at DATABASE_URL");
        let apples = StreamId::new("product-apples").unwrap();
        let refused = executor
            .execute(Reserve {
                product: apples,
                order: "o-1".into(),
                quantity: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.rule(), Some("out_of_stock"));
        let (client, connection) = crossfold::postgres::tokio_postgres::connect(
            &url,
            crossfold::postgres::tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .unwrap();
    }
}

// Section 8: evolve an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StockEventV2 {
    // New and optional: old payloads without it decode, no upcaster needed.
    Received {
        grams: u64,
        #[serde(default)]
        supplier: Option<String>,
    },
    // Renamed: the stored tag `Reserved` still reads.
    #[serde(alias = "Reserved")]
    Allocated {
        order: String,
        grams: u64,
    },
    // What a retired event reads as, for a fold that wants to see it.
    Retired,
}

impl DomainEvent for StockEventV2 {
    fn event_type(&self) -> &'static str {
        match self {
            StockEventV2::Received { .. } => "Received",
            StockEventV2::Allocated { .. } => "Allocated",
            StockEventV2::Retired => "Retired",
        }
    }
    fn schema_version(&self) -> u16 {
        2
    }
}

mod section_8 {
    use super::*;

    use crossfold::core::Upcasters;

    #[derive(Deserialize)]
    struct ReceivedV1 {
        quantity: u32,
    }

    fn upcasters() -> Upcasters {
        let mut upcasters = Upcasters::new();
        upcasters
            .register_typed("Received", 1, |old: ReceivedV1| StockEventV2::Received {
                grams: u64::from(old.quantity) * 500,
                supplier: None,
            })
            .rename("Reserved", "Allocated")
            .register("Allocated", 1, |mut event| {
                let units = event["quantity"].as_u64().ok_or("no quantity")?;
                event["grams"] = (units * 500).into();
                Ok(event)
            })
            .retire("Audited");
        upcasters
    }

    async fn check(store: &MemoryStore) -> Result<(), Box<dyn std::error::Error>> {
        use crossfold::core::check::EventCheck;
        use crossfold::core::{Json, LogFilter};

        let report = EventCheck::new(&store)
            .decode::<StockEventV2, _>(LogFilter::all(), Json, upcasters())
            .run()
            .await?;
        assert!(report.is_clean(), "{report}"); // each failure: position, stream, version, type, error
        Ok(())
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum ShelfEvent {
        // Written until the split; never written again, read forever.
        ReturnedAndRestocked { order: String, grams: u64 },
        // Written since.
        Returned { order: String, grams: u64 },
        Restocked { grams: u64 },
    }

    /// Grams on the shelf, and returns taken back.
    #[derive(Clone, Debug, Default)]
    pub struct Shelf {
        pub grams: u64,
        pub returns: u32,
    }

    impl Fold<ShelfEvent> for Shelf {
        fn apply(&mut self, event: &Recorded<ShelfEvent>) {
            match &event.event {
                // The old event folds as both new ones.
                ShelfEvent::ReturnedAndRestocked { grams, .. } => {
                    self.returns += 1;
                    self.grams += grams;
                }
                ShelfEvent::Returned { .. } => self.returns += 1,
                ShelfEvent::Restocked { grams } => self.grams += grams,
            }
        }
    }

    impl DomainEvent for ShelfEvent {
        fn event_type(&self) -> &'static str {
            match self {
                ShelfEvent::ReturnedAndRestocked { .. } => "ReturnedAndRestocked",
                ShelfEvent::Returned { .. } => "Returned",
                ShelfEvent::Restocked { .. } => "Restocked",
            }
        }
    }

    /// Takes a return back, refusing more returns than `limit` on one shelf.
    struct TakeBack {
        shelf: StreamId,
        order: String,
        grams: u64,
        limit: u32,
    }

    impl Command for TakeBack {
        type Event = ShelfEvent;
        type State = Shelf;
        type Streams = StreamId;

        fn streams(&self) -> StreamId {
            self.shelf.clone()
        }

        fn handle<'x>(
            &self,
            shelf: &Shelf,
            stream: StreamRef<'x>,
            out: &mut Emit<'x, ShelfEvent>,
        ) -> Result<(), CommandError> {
            if shelf.returns >= self.limit {
                return Err(CommandError::rejected(
                    "too_many_returns",
                    format!("{} grams on the shelf", shelf.grams),
                ));
            }
            out.append(
                stream,
                ShelfEvent::Returned {
                    order: self.order.clone(),
                    grams: self.grams,
                },
            );
            out.append(stream, ShelfEvent::Restocked { grams: self.grams });
            Ok(())
        }
    }

    /// An old combined event and the two that replaced it fold to the same shelf.
    #[tokio::test]
    async fn a_split_event_folds_as_both_halves() {
        let store = MemoryStore::new();
        let shelf = StreamId::new("shelf-1").unwrap();
        write_stored(
            &store,
            &shelf,
            ExpectedVersion::NoStream,
            "ReturnedAndRestocked",
            r#"{"type":"ReturnedAndRestocked","order":"o-1","grams":300}"#,
        )
        .await;
        let executor = Executor::new(store.clone());
        let take_back = |order: &str| TakeBack {
            shelf: shelf.clone(),
            order: order.into(),
            grams: 200,
            limit: 2,
        };
        let done = executor.execute(take_back("o-2")).await.unwrap();
        assert_eq!(done.events.len(), 2, "written as the two new events");
        let refused = executor.execute(take_back("o-3")).await.unwrap_err();
        assert_eq!(refused.rule(), Some("too_many_returns"));
        assert!(refused.to_string().contains("500 grams"), "{refused}");
    }

    /// Grams available, folded from today's events.
    #[derive(Clone, Default)]
    struct Weighed {
        grams: u64,
    }

    impl Fold<StockEventV2> for Weighed {
        fn apply(&mut self, event: &Recorded<StockEventV2>) {
            match &event.event {
                StockEventV2::Received { grams, .. } => self.grams += grams,
                StockEventV2::Allocated { grams, .. } => self.grams -= grams,
                StockEventV2::Retired => {}
            }
        }
    }

    struct Allocate {
        product: StreamId,
        grams: u64,
    }

    impl Command for Allocate {
        type Event = StockEventV2;
        type State = Weighed;
        type Streams = StreamId;

        fn streams(&self) -> StreamId {
            self.product.clone()
        }

        fn handle<'x>(
            &self,
            stock: &Weighed,
            product: StreamRef<'x>,
            out: &mut Emit<'x, StockEventV2>,
        ) -> Result<(), CommandError> {
            if stock.grams < self.grams {
                return Err(CommandError::rejected("out_of_stock", "not enough"));
            }
            out.append(
                product,
                StockEventV2::Allocated {
                    order: "o-2".into(),
                    grams: self.grams,
                },
            );
            Ok(())
        }
    }

    /// Events written by section 1's types (version 1) and a retired one read as today's.
    #[tokio::test]
    async fn old_events_read_as_todays_and_the_check_passes() {
        let store = MemoryStore::new();
        let executor = Executor::new(store.clone());
        let apples = StreamId::new("product-apples").unwrap();
        receive_three(&store, &apples).await;
        executor
            .execute(Reserve {
                product: apples.clone(),
                order: "o-1".into(),
                quantity: 1,
            })
            .await
            .unwrap();
        write_stored(
            &store,
            &apples,
            ExpectedVersion::Any,
            "Audited",
            r#"{"type":"Audited","by":"someone"}"#,
        )
        .await;
        check(&store).await.unwrap();

        // 3 units received, 1 reserved: 1,000 g left, through today's types.
        let today = Executor::builder(store.clone())
            .upcasters(upcasters())
            .build();
        let refused = today
            .execute(Allocate {
                product: apples.clone(),
                grams: 1_001,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.rule(), Some("out_of_stock"));
        today
            .execute(Allocate {
                product: apples,
                grams: 1_000,
            })
            .await
            .unwrap();
        // Without the upcasters the old events do not decode.
        let report = crossfold::core::check::EventCheck::new(&store)
            .decode::<StockEventV2, _>(
                crossfold::core::LogFilter::all(),
                crossfold::core::Json,
                Upcasters::new(),
            )
            .run()
            .await
            .unwrap();
        assert_eq!(report.failed, 3, "{report}");
    }
}

// Section 9: long streams, snapshots.
mod section_9 {
    use super::*;

    use crossfold::core::{SnapshotPolicy, SnapshotState};
    use crossfold::executor::Snapshots;

    impl SnapshotState for Stock {
        const NAME: &'static str = "shop.stock"; // stable, whatever the Rust type is called
        const VERSION: u32 = 1; // bump it whenever Stock or its fold changes
    }

    #[allow(
        clippy::let_and_return,
        reason = "the guide's block names the executor"
    )]
    fn executor(store: &MemoryStore) -> Executor<MemoryStore> {
        let executor = Executor::builder(store.clone())
            .snapshots(Snapshots::new(store.clone()).keep::<Stock>(SnapshotPolicy::every(500)))
            .build();
        executor
    }

    /// A thousand reservations leave a snapshot; a new process starts from it.
    #[tokio::test]
    async fn a_restarted_process_starts_from_the_snapshot() {
        use crossfold::core::SnapshotStore;

        let store = MemoryStore::new();
        let apples = StreamId::new("product-apples").unwrap();
        write_stored(
            &store,
            &apples,
            ExpectedVersion::NoStream,
            "Received",
            r#"{"type":"Received","quantity":1000}"#,
        )
        .await;
        let before = executor(&store);
        for i in 0..999 {
            before
                .execute(Reserve {
                    product: apples.clone(),
                    order: format!("o-{i}"),
                    quantity: 1,
                })
                .await
                .unwrap();
        }
        before.snapshots_written().await;
        let found = store
            .load_snapshots("shop.stock", &[vec![apples.clone()]])
            .await
            .unwrap();
        assert_eq!(found[0].as_ref().unwrap().events(), 1_000);
        let after = executor(&store);
        after
            .execute(Reserve {
                product: apples.clone(),
                order: "o-last".into(),
                quantity: 1,
            })
            .await
            .unwrap();
        let refused = after
            .execute(Reserve {
                product: apples,
                order: "o-none".into(),
                quantity: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.rule(), Some("out_of_stock"));
    }
}

/// Code without layout: rustfmt rewraps long lines of the guide's blocks here and adds
/// trailing commas where it does, neither of which changes what the code means.
fn without_layout(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect()
}

#[test]
fn the_guide_is_the_code_tested_here() {
    let guide = include_str!("../docs/guide.md");
    let here = without_layout(include_str!("guide.rs"));
    let blocks: Vec<&str> = guide
        .split("```rust\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert_eq!(
        blocks.len(),
        16,
        "the guide's rust blocks changed: update tests/guide.rs"
    );
    for block in blocks {
        assert!(
            here.contains(&without_layout(block)),
            "this block of docs/guide.md is not in tests/guide.rs:\n{block}"
        );
    }
}
