//! Shared helpers: every test gets a store in a fresh schema of the server named by
//! `DATABASE_URL`, dropped again when the store is dropped.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossfold_core::{
    AppendRequest, Appended, EventData, EventStore, HeldBack, LogFilter, Metadata, Payload,
    Position, RecordedEvent, StoreError, StreamEvents, StreamId, StreamRead,
};
use crossfold_postgres::{PgConfig, PgEventStore};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn unreachable(e: impl std::fmt::Display) -> ! {
    panic!(
        "cannot use PostgreSQL at {}: {e}\n\
         These tests need a running server. Set DATABASE_URL to one, e.g.\n\
         DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test -p crossfold-postgres",
        database_url()
    )
}

/// A raw connection to the test server.
pub async fn raw_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| unreachable(e));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A schema name no other test uses; it carries its creation time so leftovers of killed test
/// runs can be recognised and dropped.
pub fn fresh_schema() -> String {
    format!("cf_test_{}_{:08x}", unix_secs(), fastrand::u32(..))
}

/// Drops test schemas more than an hour old (left behind by runs that were killed).
async fn drop_stale_schemas() {
    let client = raw_client().await;
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cf\\_test\\_%'",
            &[],
        )
        .await
        .unwrap();
    let cutoff = unix_secs().saturating_sub(3600);
    for row in rows {
        let name: String = row.get(0);
        let created = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if created < cutoff {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await;
        }
    }
}

pub fn config(schema: &str) -> PgConfig {
    PgConfig::from_url(&database_url())
        .unwrap_or_else(|e| unreachable(e))
        .schema(schema)
        .pool_size(4)
}

/// A migrated store in a fresh schema.
pub async fn fresh_store() -> TestStore {
    fresh_store_with(|c| c).await
}

/// A migrated store in a fresh schema, with adjusted settings.
pub async fn fresh_store_with(adjust: impl FnOnce(PgConfig) -> PgConfig) -> TestStore {
    static CLEAN: Once = Once::new();
    let mut first = false;
    CLEAN.call_once(|| first = true);
    if first {
        drop_stale_schemas().await;
    }
    let schema = fresh_schema();
    let store = PgEventStore::connect(adjust(config(&schema)))
        .await
        .unwrap_or_else(|e| unreachable(format!("{e} ({:?})", std::error::Error::source(&e))));
    store.migrate().await.unwrap();
    TestStore {
        store,
        schema: SchemaGuard(schema),
    }
}

/// Drops its schema when dropped.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.0.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
        // thread with its own runtime does the cleanup. On a multi-thread runtime the other
        // workers keep driving the store's connections meanwhile (a connection with unsent
        // work could otherwise hold a lock the DROP waits for); on a current-thread runtime
        // the cleanup is left to finish on its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        });
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| {
                    let _ = cleanup.join();
                });
            }
            Ok(_) => {}
            Err(_) => {
                let _ = cleanup.join();
            }
        }
    }
}

/// A store whose schema is dropped with it.
pub struct TestStore {
    pub store: PgEventStore,
    pub schema: SchemaGuard,
}

impl std::ops::Deref for TestStore {
    type Target = PgEventStore;
    fn deref(&self) -> &PgEventStore {
        &self.store
    }
}

impl EventStore for TestStore {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        self.store.read_streams(reads).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.store.append(request).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.store.read_all(after, limit, filter).await
    }
    async fn head_position(&self) -> Result<Position, StoreError> {
        self.store.head_position().await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        self.store.wait_for_events(after, timeout).await
    }
    async fn held_back(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Option<HeldBack>, StoreError> {
        self.store.held_back(after, filter, limit).await
    }
}

pub fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

pub fn json_event(event_type: &str, json: &str) -> EventData {
    EventData::new(event_type, Payload::json(json.as_bytes().to_vec()))
}

/// `n` events sharing one metadata, as one command's events do.
pub fn events(event_type: &str, n: usize) -> Vec<EventData> {
    let meta = std::sync::Arc::new(Metadata::now());
    (0..n)
        .map(|i| {
            let mut e = json_event(event_type, &format!("{{\"n\": {i}}}"));
            e.metadata = meta.clone();
            e
        })
        .collect()
}

/// A store in `schema` of a server of its own (a throwaway cluster's URL), not migrated.
pub async fn store_at(url: &str, schema: &str) -> PgEventStore {
    let config = PgConfig::from_url(url).unwrap().schema(schema).pool_size(2);
    PgEventStore::connect(config).await.unwrap()
}

/// A raw connection to any server.
pub async fn raw_client_at(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}
