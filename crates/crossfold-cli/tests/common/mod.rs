//! Running the built `crossfold` binary against the server named by `DATABASE_URL`, each test
//! in a schema of its own (dropped afterwards), from an empty working directory so that no
//! `crossfold.toml` lying around changes what a test sees.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use crossfold_core::{AppendRequest, Appended, EventData, EventStore, ExpectedVersion, StreamId};
use crossfold_postgres::{PgConfig, PgEventStore};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema no other test uses, dropped (with a scratch directory) when this is dropped.
pub struct Scratch {
    pub schema: String,
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let schema = format!(
            "cf_test_{secs}_{:08x}",
            uuid::Uuid::new_v4().as_u128() as u32
        );
        let dir = std::env::temp_dir().join(format!("crossfold-cli-{schema}"));
        std::fs::create_dir_all(&dir).unwrap();
        Self { schema, dir }
    }

    /// `crossfold ARGS` with `DATABASE_URL` and `CROSSFOLD_SCHEMA` set for this scratch.
    pub fn crossfold(&self, args: &[&str]) -> Output {
        self.command(args)
            .env("DATABASE_URL", database_url())
            .env("CROSSFOLD_SCHEMA", &self.schema)
            .output()
            .unwrap()
    }

    /// The command with a clean environment for configuration: nothing set but what the
    /// caller adds.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crossfold"));
        command
            .args(args)
            .current_dir(&self.dir)
            .env_remove("DATABASE_URL")
            .env_remove("CROSSFOLD_SCHEMA")
            .env_remove("CROSSFOLD_CONFIG");
        command
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `work` against this schema's store (not migrated unless `work` migrates it).
    pub fn with_store<T>(&self, work: impl AsyncFnOnce(PgEventStore) -> T) -> T {
        with_store(&self.schema, work)
    }

    /// Appends `events` to `stream` (migrating first).
    pub fn append(&self, stream: &str, events: Vec<EventData>) -> Appended {
        append_to(&self.schema, stream, events)
    }
}

/// Runs `work` against the store in `schema`, on a runtime of its own.
pub fn with_store<T>(schema: &str, work: impl AsyncFnOnce(PgEventStore) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = PgConfig::from_url(&database_url())
            .unwrap()
            .schema(schema.to_owned())
            .pool_size(2)
            .listen(false);
        let store = PgEventStore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot use PostgreSQL at {}: {e}", database_url()));
        work(store).await
    })
}

/// Appends `events` to `stream` of the store in `schema` (migrating it first).
pub fn append_to(schema: &str, stream: &str, events: Vec<EventData>) -> Appended {
    with_store(schema, async |store| {
        store.migrate().await.unwrap();
        store
            .append(AppendRequest::new().stream(
                StreamId::new(stream).unwrap(),
                ExpectedVersion::Any,
                events,
            ))
            .await
            .unwrap()
    })
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) = crossfold_postgres::tokio_postgres::connect(
                    &database_url(),
                    crossfold_postgres::tokio_postgres::NoTls,
                )
                .await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The exit status, with the command's output in the message when it is not `expected`.
#[track_caller]
pub fn assert_status(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// The output parsed as one JSON document.
#[track_caller]
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(output), stderr(output)))
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}
