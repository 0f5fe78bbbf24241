//! The `crossfold.execute` span carries what an operator needs to find one execution in the
//! logs — command, declared streams, correlation and causation ids, actor, attempts, outcome —
//! and the store's calls are its children. Run on PostgreSQL, whose store opens a span per
//! call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crossfold::core::StreamId;
use crossfold::executor::{Actor, ExecutionContext, Executor};
use crossfold::postgres::{PgConfig, PgEventStore};
use crossfold_bench::bank::{Open, Transfer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

/// One span as the subscriber saw it: its name, its parent's name, and its fields as text.
#[derive(Clone, Debug)]
struct Seen {
    name: &'static str,
    parent: Option<&'static str>,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(Id, Seen)>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);
impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.name());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let seen = Seen {
            name: attrs.metadata().name(),
            parent,
            fields,
        };
        self.0.lock().unwrap().push((id.clone(), seen));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, seen)) = spans.iter_mut().rev().find(|(i, _)| i == id) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[test]
fn the_execute_span_names_command_streams_and_context() {
    let capture = Capture::default();
    let subscriber = Registry::default().with(capture.clone());
    // A subscriber for this thread only, so tests running alongside record nothing here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let schema = format!(
        "cf_test_{}_{:08x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        Uuid::new_v4().as_u128() as u32
    );
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    runtime.block_on(async {
        let config = PgConfig::from_url(&database_url())
            .unwrap_or_else(|e| panic!("DATABASE_URL: {e}"))
            .schema(schema.clone())
            .listen(false);
        let store = PgEventStore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot use PostgreSQL at {}: {e}", database_url()));
        store.migrate().await.unwrap();
        let executor = Executor::new(store.clone());
        let alice = StreamId::new("account-alice").unwrap();
        let bob = StreamId::new("account-bob").unwrap();
        for account in [&alice, &bob] {
            executor
                .execute(Open {
                    account: account.clone(),
                    initial: 100,
                })
                .await
                .unwrap();
        }
        let context = ExecutionContext::new()
            .correlation_id(correlation)
            .causation_id(causation)
            .actor(Actor::new("teller-7"));
        let transfer = StreamId::new("transfer-1").unwrap();
        let done = executor
            .execute_with(
                Transfer {
                    from: alice.clone(),
                    to: bob.clone(),
                    transfer: transfer.clone(),
                    amount: 30,
                },
                &context,
            )
            .await
            .unwrap();
        assert_eq!(done.events[0].metadata.correlation_id, Some(correlation));
        // Refused: the span says so, and still names the context.
        let refused = executor
            .execute_with(
                Transfer {
                    from: alice,
                    to: bob,
                    transfer: StreamId::new("transfer-2").unwrap(),
                    amount: 1_000,
                },
                &ExecutionContext::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.rule(), Some("insufficient_funds"));
        let client = store.pool().get().await.unwrap();
        // The drop can meet autovacuum analysing the schema's new tables, and lose a deadlock
        // to it: try again.
        for attempt in 1.. {
            match client
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await
            {
                Ok(()) => break,
                Err(e) if attempt < 5 && e.code().is_some_and(|c| c.code() == "40P01") => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    });

    let spans = capture.0.lock().unwrap().clone();
    let executions: Vec<&Seen> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "crossfold.execute")
        .collect();
    assert_eq!(executions.len(), 4, "{executions:#?}");

    let transfer = executions[2];
    let field = |seen: &Seen, name: &str| seen.fields.get(name).cloned();
    assert_eq!(field(transfer, "command").as_deref(), Some("Transfer"));
    assert_eq!(
        field(transfer, "streams").as_deref(),
        Some("account-alice,account-bob,transfer-1")
    );
    assert_eq!(
        field(transfer, "correlation_id"),
        Some(correlation.to_string())
    );
    assert_eq!(field(transfer, "causation_id"), Some(causation.to_string()));
    assert_eq!(field(transfer, "actor").as_deref(), Some("teller-7"));
    assert_eq!(field(transfer, "attempts").as_deref(), Some("1"));
    assert_eq!(field(transfer, "outcome").as_deref(), Some("success"));

    let refused = executions[3];
    assert_eq!(field(refused, "outcome").as_deref(), Some("rejected"));
    // Without a correlation id in the context, one is made up and recorded all the same.
    let generated = field(refused, "correlation_id").expect("a generated correlation id");
    assert_ne!(generated, correlation.to_string());
    assert!(Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert_eq!(field(refused, "actor"), None);

    // Every store call made while executing is a child of an execute span.
    for name in ["crossfold.read_streams", "crossfold.append"] {
        let calls: Vec<&Seen> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect();
        assert!(!calls.is_empty(), "no {name} span: {spans:#?}");
        for call in calls {
            assert_eq!(call.parent, Some("crossfold.execute"), "{call:#?}");
        }
    }
}
