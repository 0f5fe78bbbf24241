//! Run with:
//! `cargo run --release --example storage_cost --features postgres -- [EVENTS] [STREAMS] [URL]`
//! (defaults: 100000 events over 1000 streams; URL defaults to `DATABASE_URL`, then
//! `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! Measures what the PostgreSQL store costs on disk: appends EVENTS events spread evenly over
//! STREAMS streams into a fresh schema — one event per append, JSON payload `{"amount": N}`,
//! metadata as the executor writes it (time, correlation id, actor) — then prints each table's
//! and index's size (`pg_total_relation_size`, after `VACUUM`), the bytes per event (events
//! table with its indexes) and per stream (streams table with its index), and drops the
//! schema.

use std::sync::Arc;

use crossfold::core::{
    AppendRequest, EventData, EventId, EventStore, ExpectedVersion, Metadata, Payload, StreamId,
};
use crossfold::postgres::{PgConfig, PgEventStore};

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let streams: usize = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let url = args
        .next()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("storage_cost_{}", std::process::id());
    let store = PgEventStore::connect(PgConfig::from_url(&url)?.schema(schema.clone())).await?;
    store.migrate().await?;
    let result = measure(&store, events, streams.max(1)).await;
    let client = store.pool().get().await?;
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    result
}

async fn measure(store: &PgEventStore, events: usize, streams: usize) -> Result<(), Failure> {
    // Eight writers, each owning every eighth stream, one event per append.
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut n = writer;
            while n < events {
                let stream = StreamId::new(format!("account-{}", n % streams))?;
                let mut metadata = Metadata::now();
                metadata.correlation_id = Some(EventId::generate().as_uuid());
                metadata.actor = Some("teller-7".to_owned());
                let mut event = EventData::new(
                    "MoneyDeposited",
                    Payload::json(format!(r#"{{"amount": {}}}"#, 100 + n % 9_900).into_bytes()),
                );
                event.metadata = Arc::new(metadata);
                store
                    .append(AppendRequest::new().stream(stream, ExpectedVersion::Any, vec![event]))
                    .await?;
                n += 8;
            }
            Ok::<_, Failure>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }

    let client = store.pool().get().await?;
    let q = format!("\"{}\"", store.schema());
    client
        .batch_execute(&format!("VACUUM ANALYZE {q}.events, {q}.streams"))
        .await?;
    let rows = client
        .query(
            "SELECT c.relname::text, c.relkind::text, pg_total_relation_size(c.oid), \
                    pg_relation_size(c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'i') \
             ORDER BY c.relkind DESC, c.relname",
            &[&store.schema()],
        )
        .await?;
    println!("{events} events over {streams} streams\n");
    println!("{:<28} {:>14} {:>12}", "relation", "bytes", "per event");
    for row in &rows {
        let (name, kind, total, own): (String, String, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        // A table's total includes its indexes and TOAST; an index's is its own size.
        let bytes = if kind == "r" { own } else { total };
        println!(
            "{name:<28} {bytes:>14} {:>12.1}",
            bytes as f64 / events as f64
        );
    }
    let size = |table: &str| -> i64 {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == table)
            .map_or(0, |r| r.get(2))
    };
    println!(
        "\nevents table with its indexes: {:.1} bytes per event",
        size("events") as f64 / events as f64
    );
    println!(
        "streams table with its index:  {:.1} bytes per stream",
        size("streams") as f64 / streams as f64
    );
    Ok(())
}
