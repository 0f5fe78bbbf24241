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

/// How a test store sends its appends. Tests of the append path run once per mode they
/// name (see [`commit_modes!`](crate::commit_modes)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Group commit off: each append in a call and a transaction of its own.
    Alone,
    /// Group commit on, with two calls in flight at most: appends that arrive while both are
    /// busy share the next call. A test that appends one thing at a time sends each alone, as
    /// [`Commit::Alone`] does.
    Grouped,
    /// Group commit on, and every append of the test store goes through the group function
    /// (a group of its own), so that even a test appending one thing at a time exercises it.
    EachInAGroup,
}

/// A migrated store in a fresh schema.
pub async fn fresh_store() -> TestStore {
    fresh_store_with(|c| c).await
}

/// A migrated store in a fresh schema, sending its appends as `commit` says.
pub async fn fresh_store_in(commit: Commit) -> TestStore {
    fresh_store_in_with(commit, |c| c).await
}

/// A migrated store in a fresh schema, with adjusted settings.
pub async fn fresh_store_with(adjust: impl FnOnce(PgConfig) -> PgConfig) -> TestStore {
    fresh_store_in_with(Commit::Alone, adjust).await
}

/// A migrated store in a fresh schema, sending its appends as `commit` says, with adjusted
/// settings.
pub async fn fresh_store_in_with(
    commit: Commit,
    adjust: impl FnOnce(PgConfig) -> PgConfig,
) -> TestStore {
    static CLEAN: Once = Once::new();
    let mut first = false;
    CLEAN.call_once(|| first = true);
    if first {
        drop_stale_schemas().await;
    }
    let schema = fresh_schema();
    // Two calls at most, so that appends in flight together queue and go in groups sooner
    // than with the default limit.
    let config = config(&schema)
        .group_commit(commit != Commit::Alone)
        .group_commit_calls(2);
    let store = PgEventStore::connect(adjust(config))
        .await
        .unwrap_or_else(|e| unreachable(format!("{e} ({:?})", std::error::Error::source(&e))));
    store.migrate().await.unwrap();
    TestStore {
        store,
        schema: SchemaGuard(schema),
        commit,
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
    /// How its appends are sent.
    pub commit: Commit,
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
        if self.commit == Commit::EachInAGroup {
            let mut results = self.store.append_together(vec![request]).await;
            assert_eq!(results.len(), 1, "one outcome per request");
            return results.pop().unwrap();
        }
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

/// Runs each named `async fn(Commit)` of the calling file as one test per mode given (modes
/// of [`Commit`]): `commit_modes!([Alone, EachInAGroup] expected_version_cases, ...)` makes
/// the tests `alone::expected_version_cases` and `each_in_a_group::expected_version_cases`.
#[macro_export]
macro_rules! commit_modes {
    ([] $($name:ident),+ $(,)?) => {};
    ([$mode:ident $(, $rest:ident)*] $($name:ident),+ $(,)?) => {
        $crate::commit_modes!(@mode $mode [$($name),+]);
        $crate::commit_modes!([$($rest),*] $($name),+);
    };
    (@mode Alone [$($name:ident),+]) => {
        $crate::commit_modes!(@tests alone Alone [$($name),+]);
    };
    (@mode Grouped [$($name:ident),+]) => {
        $crate::commit_modes!(@tests grouped Grouped [$($name),+]);
    };
    (@mode EachInAGroup [$($name:ident),+]) => {
        $crate::commit_modes!(@tests each_in_a_group EachInAGroup [$($name),+]);
    };
    (@tests $module:ident $mode:ident [$($name:ident),+]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Commit::$mode).await
                }
            )+
        }
    };
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
