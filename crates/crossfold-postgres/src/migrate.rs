//! Schema migrations: the numbered SQL files of the repository's `migrations/` directory,
//! embedded at compile time and applied by [`PgEventStore::migrate`](crate::PgEventStore::migrate).
//!
//! * Each migration runs in a transaction of its own at READ COMMITTED (whatever the session's
//!   `default_transaction_isolation`), with a `lock_timeout`, so a migration waiting for a table
//!   lock gives up instead of queueing every append behind it. A file whose first line is
//!   `-- crossfold:no-transaction` runs outside any transaction, statement by statement (for
//!   `CREATE INDEX CONCURRENTLY`); such a file stays valid with every ` CONCURRENTLY` removed:
//!   that is how it runs, in a transaction, on a store that the same call created (its log is
//!   empty, and a concurrent build would only wait for every older transaction in the
//!   database).
//! * Migrators take turns under a session-level advisory lock held on a connection taken out
//!   of the pool, so an abandoned call releases it by closing that connection.
//! * Checksums cover the SQL without its comments and with whitespace collapsed, so editing a
//!   comment in a shipped migration changes nothing for existing databases.
//! * A binary meets a database migrated by a newer one during a rolling deploy: it refuses
//!   only migrations recorded as *breaking*; others it does not know are compatible.
//! * With nothing to apply, migrating only reads, so the application role (without CREATE on
//!   anything) may call it too.

use std::time::Duration;

use crossfold_core::{Backoff, StoreError};
use deadpool_postgres::{Object, Pool};
use tokio_postgres::IsolationLevel;

use crate::error::classify_pool;
use crate::sql::quoted;

mod access;
mod report;

use access::{Present, grants};
pub(crate) use access::{check_log_order, grant_access};
pub use report::{PgMigrationError, PgMigrationReport, PgMigrationStatus};

mod script;

use script::{canonical, statements};

/// The first line of a migration that must run outside a transaction.
#[cfg(test)]
const NO_TRANSACTION: &str = "-- crossfold:no-transaction";

/// One embedded migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgMigration {
    version: u32,
    name: &'static str,
    sql: &'static str,
    transactional: bool,
    breaking: bool,
    /// Checksums this migration was recorded with by earlier builds.
    legacy_checksums: &'static [&'static str],
}

impl PgMigration {
    /// Its number; migrations apply in ascending order.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Its name (the file name without number and extension).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its SQL, with unqualified names: it is run with `search_path` set to the store's schema.
    pub fn sql(&self) -> &'static str {
        self.sql
    }

    /// Whether it runs in a transaction (`false`: statement by statement, for
    /// `CREATE INDEX CONCURRENTLY`).
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Whether binaries that do not know it cannot work with a schema that has it. A binary
    /// refuses a database recording a breaking migration newer than its own; it works with
    /// one recording only newer compatible migrations.
    pub fn is_breaking(&self) -> bool {
        self.breaking
    }
}

/// Every migration, in order. A new file in `migrations/` must be added here too (a unit test
/// checks that the directory and this list agree).
pub(crate) const MIGRATIONS: &[PgMigration] = &[
    PgMigration {
        version: 1,
        name: "event_store",
        sql: include_str!("../migrations/0001_event_store.sql"),
        transactional: true,
        breaking: false,
        // The whole file's SHA-256, as builds before comment-insensitive checksums recorded it.
        legacy_checksums: &["1c23000c49f876206f8b36cfa9e36e9bcffc833d1763f54976d52dfc2f14ef42"],
    },
    PgMigration {
        version: 2,
        name: "log_epochs_and_roles",
        sql: include_str!("../migrations/0002_log_epochs_and_roles.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 3,
        name: "log_read_indexes",
        sql: include_str!("../migrations/0003_log_read_indexes.sql"),
        transactional: false,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 4,
        name: "projections",
        sql: include_str!("../migrations/0004_projections.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 5,
        name: "deadlines",
        sql: include_str!("../migrations/0005_deadlines.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 6,
        name: "appender_horizon",
        sql: include_str!("../migrations/0006_appender_horizon.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 7,
        name: "optional_read_indexes",
        sql: include_str!("../migrations/0007_optional_read_indexes.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 8,
        name: "group_commit",
        sql: include_str!("../migrations/0008_group_commit.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 9,
        name: "append_checks",
        sql: include_str!("../migrations/0009_append_checks.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 10,
        name: "turns_in_appends",
        sql: include_str!("../migrations/0010_turns_in_appends.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 11,
        name: "snapshots",
        sql: include_str!("../migrations/0011_snapshots.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 12,
        name: "group_commit_in_one_pass",
        sql: include_str!("../migrations/0012_group_commit_in_one_pass.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 13,
        name: "category_statistics",
        sql: include_str!("../migrations/0013_category_statistics.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
    PgMigration {
        version: 14,
        name: "archives_and_partitions",
        sql: include_str!("../migrations/0014_archives_and_partitions.sql"),
        transactional: true,
        breaking: false,
        legacy_checksums: &[],
    },
];

/// What the database records: the schema, and its migrations.
struct Recorded {
    schema_exists: bool,
    table_exists: bool,
    rows: Vec<RecordedRow>,
}

struct RecordedRow {
    version: u32,
    name: String,
    checksum: String,
    breaking: bool,
    applied_at: Option<String>,
}

async fn read_recorded(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<Recorded, PgMigrationError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                    to_regclass(format('%I.schema_migrations', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .await?;
    let (schema_exists, table_exists): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
    let mut rows = Vec::new();
    if table_exists {
        // As JSON, so columns that later builds add (or that older ones lack) read the same.
        let q = quoted(schema);
        for row in client
            .query(
                &format!("SELECT to_jsonb(m)::text FROM {q}.schema_migrations m ORDER BY version"),
                &[],
            )
            .await?
        {
            let text: String = row.try_get(0)?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| StoreError::Backend(format!("schema_migrations row: {e}").into()))?;
            let version = value["version"]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    StoreError::Backend(format!("schema_migrations row {text}").into())
                })?;
            rows.push(RecordedRow {
                version,
                name: value["name"].as_str().unwrap_or_default().to_owned(),
                checksum: value["checksum"].as_str().unwrap_or_default().to_owned(),
                breaking: value["breaking"].as_bool().unwrap_or(false),
                applied_at: value["applied_at"].as_str().map(str::to_owned),
            });
        }
    }
    Ok(Recorded {
        schema_exists,
        table_exists,
        rows,
    })
}

/// Each embedded migration's checksum (of its canonical text) and legacy checksum (of the
/// whole text, as earlier builds computed it), hashed by the server.
async fn checksums(
    client: &tokio_postgres::Client,
) -> Result<Vec<(String, String)>, PgMigrationError> {
    let canonical: Vec<String> = MIGRATIONS.iter().map(|m| canonical(m.sql)).collect();
    let whole: Vec<String> = MIGRATIONS
        .iter()
        .map(|m| m.sql.replace("\r\n", "\n"))
        .collect();
    let rows = client
        .query(
            "SELECT encode(sha256(convert_to(c, 'UTF8')), 'hex'), \
                    encode(sha256(convert_to(w, 'UTF8')), 'hex') \
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(c, w, ord) ORDER BY ord",
            &[&canonical, &whole],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Checks the recorded history against this build's: which known migrations are applied,
/// which newer compatible ones are recorded, or why the two cannot go together.
fn verify(
    recorded: &Recorded,
    sums: &[(String, String)],
) -> Result<(Vec<u32>, Vec<u32>), PgMigrationError> {
    let mut done = Vec::new();
    let mut newer = Vec::new();
    for row in &recorded.rows {
        let known = MIGRATIONS
            .iter()
            .zip(sums)
            .find(|(m, _)| m.version == row.version);
        let Some((migration, (checksum, whole))) = known else {
            if row.breaking {
                return Err(PgMigrationError::Incompatible {
                    version: row.version,
                    name: row.name.clone(),
                });
            }
            newer.push(row.version);
            continue;
        };
        if migration.name != row.name {
            return Err(PgMigrationError::Unknown {
                version: row.version,
                name: row.name.clone(),
            });
        }
        let matches = row.checksum == *checksum
            || row.checksum == *whole
            || migration.legacy_checksums.contains(&row.checksum.as_str());
        if !matches {
            return Err(PgMigrationError::ChecksumMismatch {
                version: migration.version,
                name: migration.name,
                recorded: row.checksum.clone(),
                embedded: checksum.clone(),
            });
        }
        done.push(migration.version);
    }
    let last = recorded.rows.last().map(|r| r.version);
    if let Some(hole) = MIGRATIONS
        .iter()
        .take_while(|m| last.is_some_and(|last| m.version < last))
        .find(|m| !done.contains(&m.version))
    {
        return Err(PgMigrationError::Missing {
            version: hole.version,
        });
    }
    Ok((done, newer))
}

/// Reads and verifies the schema's migrations without changing anything.
pub(crate) async fn check_schema(
    pool: &Pool,
    schema: &str,
) -> Result<PgMigrationReport, PgMigrationError> {
    let client = pool.get().await.map_err(classify_pool)?;
    let recorded = read_recorded(&client, schema).await?;
    let sums = checksums(&client).await?;
    let (done, newer) = verify(&recorded, &sums)?;
    let version = recorded.rows.last().map_or(0, |r| r.version);
    let pending: Vec<u32> = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !done.contains(v))
        .collect();
    if !pending.is_empty() {
        return Err(PgMigrationError::Pending { version, pending });
    }
    Ok(PgMigrationReport {
        applied: Vec::new(),
        version,
        newer,
    })
}

/// Reads and verifies the schema's migrations, changing nothing, and says what migrating
/// would apply. Refuses as migrating would (a checksum mismatch, a breaking newer migration).
pub(crate) async fn status(
    pool: &Pool,
    schema: &str,
) -> Result<PgMigrationStatus, PgMigrationError> {
    let client = pool.get().await.map_err(classify_pool)?;
    let recorded = read_recorded(&client, schema).await?;
    let sums = checksums(&client).await?;
    let (done, newer) = verify(&recorded, &sums)?;
    Ok(PgMigrationStatus {
        schema_exists: recorded.schema_exists,
        version: recorded.rows.last().map_or(0, |r| r.version),
        applied: recorded
            .rows
            .iter()
            .filter(|r| done.contains(&r.version))
            .map(|r| (r.version, r.applied_at.clone()))
            .collect(),
        pending: MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| !done.contains(v))
            .collect(),
        newer,
    })
}

/// The pauses between two tries for another migrator's advisory lock: from 10 ms, doubling up to
/// 200 ms, without jitter.
const LOCK_POLL: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));

/// Applies the missing migrations up to `target` (all when `None`) to `schema`, each in a
/// transaction of its own (or none, see the module docs), while holding the schema's advisory
/// lock, so concurrent migrators take turns and the second finds nothing left to do.
pub(crate) async fn migrate(
    pool: &Pool,
    schema: &str,
    target: Option<u32>,
    lock_timeout: Duration,
) -> Result<PgMigrationReport, PgMigrationError> {
    let object = pool.get().await.map_err(classify_pool)?;
    // Out of the pool for good: if this call is abandoned half-way, dropping the connection
    // releases the session-level lock instead of leaving it with a pooled connection.
    let mut client = Object::take(object);
    // Keyed by schema, so stores in different schemas migrate independently. Polled rather
    // than waited for: a statement waiting for the lock is a transaction, and CREATE INDEX
    // CONCURRENTLY in the lock holder waits for every transaction to end — a deadlock.
    take_migration_lock(&client, schema, LOCK_POLL).await?;
    // A migration may rightly take longer than the application's statement timeout (an index
    // built over a large log); this connection is closed afterwards.
    client.batch_execute("SET statement_timeout = 0").await?;
    let result = apply(&mut client, schema, target, lock_timeout).await;
    release_migration_lock(&client, schema).await;
    result
}

/// The first key of the advisory lock that migrators of a schema take, the second being a
/// hash of the schema's name; builders of read indexes take it too (see `read_index`).
const MIGRATION_LOCK: i32 = 1_129_465_926;

/// Takes the migration lock of `schema` on `client`'s session, trying again after each of
/// `poll`'s delays while another session holds it.
pub(crate) async fn take_migration_lock(
    client: &tokio_postgres::Client,
    schema: &str,
    poll: Backoff,
) -> Result<(), tokio_postgres::Error> {
    let mut pauses = poll.delays();
    loop {
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&MIGRATION_LOCK, &schema],
            )
            .await?;
        if row.try_get::<_, bool>(0)? {
            return Ok(());
        }
        tokio::time::sleep(pauses.next_delay()).await;
    }
}

/// Gives back the migration lock [`take_migration_lock`] took (closing the session would too).
pub(crate) async fn release_migration_lock(client: &tokio_postgres::Client, schema: &str) {
    let _ = client
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&MIGRATION_LOCK, &schema],
        )
        .await;
}

async fn apply(
    client: &mut deadpool_postgres::ClientWrapper,
    schema: &str,
    target: Option<u32>,
    lock_timeout: Duration,
) -> Result<PgMigrationReport, PgMigrationError> {
    let q = quoted(schema);
    // Read after the lock: statements outside a transaction each see the latest commits,
    // whatever the session's default isolation level.
    let recorded = read_recorded(client, schema).await?;
    let sums = checksums(client).await?;
    let (done, newer) = verify(&recorded, &sums)?;
    let mut report = PgMigrationReport {
        applied: Vec::new(),
        version: recorded.rows.last().map_or(0, |r| r.version),
        newer,
    };
    let pending: Vec<(&PgMigration, &(String, String))> = MIGRATIONS
        .iter()
        .zip(&sums)
        .filter(|(m, _)| target.is_none_or(|t| m.version <= t) && !done.contains(&m.version))
        .collect();

    if !pending.is_empty() {
        // Only now is anything created, so with nothing to do no CREATE privilege is needed.
        if !recorded.schema_exists {
            client.batch_execute(&format!("CREATE SCHEMA {q}")).await?;
        }
        if !recorded.table_exists {
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {q}.schema_migrations (
                         version     integer PRIMARY KEY,
                         name        text NOT NULL,
                         checksum    text NOT NULL,
                         applied_at  timestamptz NOT NULL DEFAULT now()
                     )"
                ))
                .await?;
        }
        client
            .batch_execute(&format!(
                "ALTER TABLE {q}.schema_migrations \
                 ADD COLUMN IF NOT EXISTS breaking boolean NOT NULL DEFAULT false"
            ))
            .await?;
    }
    let record = format!(
        "INSERT INTO {q}.schema_migrations (version, name, checksum, breaking) \
         VALUES ($1, $2, $3, $4)"
    );
    for (migration, (checksum, _)) in pending {
        let version = i32::try_from(migration.version).unwrap_or(i32::MAX);
        // A store created by this very call has an empty log: building its indexes
        // CONCURRENTLY would only wait for every older transaction in the database.
        let fresh = report.applied.contains(&1);
        if migration.transactional || fresh {
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()
                .await?;
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = '{}ms'; SET LOCAL search_path TO {q}",
                lock_timeout.as_millis().max(1)
            ))
            .await?;
            if migration.transactional {
                tx.batch_execute(migration.sql).await?;
            } else {
                for statement in statements(migration.sql) {
                    tx.batch_execute(&statement.replace(" CONCURRENTLY", ""))
                        .await?;
                }
            }
            tx.execute(
                &record,
                &[&version, &migration.name, checksum, &migration.breaking],
            )
            .await?;
            tx.commit().await?;
        } else {
            // Statement by statement, each its own transaction. No lock timeout: what runs here
            // (CREATE INDEX CONCURRENTLY) waits for older transactions without blocking appends.
            client
                .batch_execute(&format!("SET search_path TO {q}; SET lock_timeout = 0"))
                .await?;
            let mut result = Ok(());
            for statement in statements(migration.sql) {
                result = client.batch_execute(&statement).await;
                if result.is_err() {
                    break;
                }
            }
            let reset = client
                .batch_execute("RESET search_path; RESET lock_timeout")
                .await;
            result?;
            reset?;
            client
                .execute(
                    &record,
                    &[&version, &migration.name, checksum, &migration.breaking],
                )
                .await?;
        }
        report.applied.push(migration.version);
        report.version = report.version.max(migration.version);
    }

    if !report.applied.is_empty() && report.version >= 2 {
        // Roles the owner let into the schema get what the new migrations created, too.
        let roles = client
            .query(
                "SELECT r.rolname::text FROM pg_namespace n \
                 CROSS JOIN LATERAL aclexplode(n.nspacl) a \
                 JOIN pg_roles r ON r.oid = a.grantee \
                 WHERE n.nspname = $1 AND a.privilege_type = 'USAGE' \
                   AND a.grantee <> n.nspowner",
                &[&schema],
            )
            .await?;
        for row in roles {
            let role: String = row.try_get(0)?;
            client
                .batch_execute(&grants(schema, &role, Present::at(report.version)))
                .await?;
        }
    }
    if report.version >= 2 {
        check_log_order(client, schema).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_list_matches_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, expected);
        for m in MIGRATIONS {
            assert_eq!(
                m.sql.starts_with(NO_TRANSACTION),
                !m.transactional,
                "migration {} declares its transaction mode on its first line",
                m.version
            );
        }
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version as usize,
                i + 1,
                "migrations are numbered 1, 2, ..."
            );
            let on_disk =
                std::fs::read_to_string(format!("{dir}/{:04}_{}.sql", m.version, m.name)).unwrap();
            assert_eq!(on_disk, m.sql);
        }
    }

    /// Databases migrated by earlier builds recorded these checksums (of each migration's
    /// canonical text, and of the whole file): if one changed, every such database would
    /// refuse this build. Hashed by the server, as `migrate` does.
    #[tokio::test]
    async fn shipped_migrations_keep_their_checksums() {
        let client = crate::test_support::connect().await;
        let sums = checksums(&client).await.unwrap();
        let expected = [
            (
                "ed4962a750cada59e618bd90693b715b24032c9dc688d463bbf7053025e71413",
                "1c23000c49f876206f8b36cfa9e36e9bcffc833d1763f54976d52dfc2f14ef42",
            ),
            (
                "2bc54648bbbe032f7c2a6ec9dc42c9991beb789c6f3c29f7028a0b1acac1a2dc",
                "5cd0becb0d918d78c0525e2a8464c657510774fcd22f149f5a79bd1231faeb17",
            ),
            (
                "903db88bc655e52e7c38d45b06adc1cf3454f58d2a7afce3304382d87875084e",
                "ac9a32fcefd371b44735ad542dec4e59a22e5e79b164ab01ab21541351341552",
            ),
            (
                "68e75444e8bc18fa8ca56378d07c4666cf8e16a79d837a96dc9cbe55b16f0e42",
                "aa9668a4b3bb02aaf5678ddd8650e0e4f37575df05ce2394552c25372a6dfc65",
            ),
            (
                "82219c168fc78e987f7acb1b56fd2efa9429091f58d3e17f64c2be64901dcc82",
                "905b4de1631a241b7c372a3325a1e31e796fce992804d1913e83954e54f0e601",
            ),
            (
                "c51d464756db7b0d2be91eb5ee61230c6930cec7b9447d9c86b36c7bcf4f4d84",
                "8a9734fcf184d55e32aa4b694edb00d2ecf0433e209e2617266980456767df35",
            ),
            (
                "0341f3f1f8dc37fc2964d2fc7cd5b6eae4928f86ccba2b93e06ffd2f84cf46d2",
                "702602ed5a70c2b3963f0eb65dc3a46076f785f0e975ba08c67d9eab00664149",
            ),
            (
                "fef26f508da61abfaf0077b82ff9a476ccaf877018002ad68bf9c8988d4bc79d",
                "9ef8ed90b6c4ae42811c264be93d9c72b74a682a9b7b9d23b8bf7d3dcb188bd5",
            ),
            (
                "c8dfd06a308679370c55938403ea94c365d91667afa64625135edaa8ea759bba",
                "39e1926d3e31d9604a5d629bddfbe57e299a20f5c7802434164e72f4f476c408",
            ),
            (
                "8f7efffe1442fa235e992a4e5d9caeb69ff4ac0da50f9d163d8effcaec4e9f0b",
                "701dd34985b9e1f24ff4a9658f0f734831420342f1b5a9fc50fadba68bc9720f",
            ),
            (
                "3db64ff9f987766a63d88a32d3f97041d57ebb805795cbcc6adb660e49ba0416",
                "fcd8879860a1a59724eeeea4da1eff186a4e7ed00c2c013c42f2139317284481",
            ),
            (
                "3162d1dbc608fb76d1e6c3a7bfa35c69b6bcf2b8ff4c9ac4100ab2b8558a63bc",
                "c6525fa83ddbcf703c20e24be6ada37583573586532705f90c6609c3ebb42c90",
            ),
            (
                "962f8df96c59b32724dd5c4f0c776333d0d2ad1c192949534159ee06ab62574a",
                "36ed97d7e89d1985466ffd573a0b14bc10fc5258c95b8bab4223d890e580f9f2",
            ),
            (
                "424258a5ea24437ed27191bd5640b2acc8e487dacba7649a5154c6ea2debe820",
                "6472c2e47857a722a32063a37fe2cbf124bdb30cb298fadd797059c31f3e02db",
            ),
        ];
        assert_eq!(sums.len(), MIGRATIONS.len());
        assert_eq!(
            expected.len(),
            MIGRATIONS.len(),
            "every migration is pinned"
        );
        for ((m, (canonical, whole)), (pinned_canonical, pinned_whole)) in
            MIGRATIONS.iter().zip(&sums).zip(expected)
        {
            assert_eq!(
                (canonical.as_str(), whole.as_str()),
                (pinned_canonical, pinned_whole),
                "migration {} ({})",
                m.version,
                m.name
            );
        }
    }
}
