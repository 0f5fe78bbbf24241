//! Schema migrations: the numbered SQL files of the repository's `migrations/` directory,
//! embedded at compile time and applied by [`PgEventStore::migrate`](crate::PgEventStore::migrate).

use std::fmt;

use crossfold_core::StoreError;
use deadpool_postgres::Pool;

use crate::error::{classify, classify_pool};

/// One embedded migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgMigration {
    version: u32,
    name: &'static str,
    sql: &'static str,
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
}

/// Every migration, in order. A new file in `migrations/` must be added here too (a unit test
/// checks that the directory and this list agree).
pub(crate) const MIGRATIONS: &[PgMigration] = &[PgMigration {
    version: 1,
    name: "event_store",
    sql: include_str!("../migrations/0001_event_store.sql"),
}];

/// What [`PgEventStore::migrate`](crate::PgEventStore::migrate) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgMigrationReport {
    /// The migrations applied by this call, in order (empty when the schema was up to date).
    pub applied: Vec<u32>,
    /// The schema's version afterwards.
    pub version: u32,
}

/// Why migrating refused or failed. Nothing was changed in any case.
#[derive(Debug)]
#[non_exhaustive]
pub enum PgMigrationError {
    /// A recorded migration differs from the embedded one with the same number: the database
    /// was migrated by a different build, or the migration was edited after it was applied.
    ChecksumMismatch {
        /// The migration's number.
        version: u32,
        /// Its embedded name.
        name: &'static str,
        /// The checksum recorded in the database.
        recorded: String,
        /// The checksum of the embedded SQL.
        embedded: String,
    },
    /// The database records a migration this build does not know (it was migrated by a newer
    /// build), or records a different name for a known number.
    Unknown {
        /// The migration's number.
        version: u32,
        /// Its recorded name.
        name: String,
    },
    /// The recorded migrations skip one that this build knows: the history has a hole.
    Missing {
        /// The migration that was never applied although later ones were.
        version: u32,
    },
    /// The database could not be reached or failed.
    Store(StoreError),
}

impl fmt::Display for PgMigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgMigrationError::ChecksumMismatch {
                version,
                name,
                recorded,
                embedded,
            } => write!(
                f,
                "migration {version} ({name}) recorded in the database has checksum {recorded}, \
                 but this build's has {embedded}; refusing to migrate"
            ),
            PgMigrationError::Unknown { version, name } => write!(
                f,
                "the database records migration {version} ({name}), which this build does not \
                 have; refusing to migrate"
            ),
            PgMigrationError::Missing { version } => write!(
                f,
                "the database records later migrations but not {version}; refusing to migrate"
            ),
            PgMigrationError::Store(_) => f.write_str("migration failed"),
        }
    }
}

impl std::error::Error for PgMigrationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgMigrationError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for PgMigrationError {
    fn from(value: StoreError) -> Self {
        PgMigrationError::Store(value)
    }
}

impl From<tokio_postgres::Error> for PgMigrationError {
    fn from(value: tokio_postgres::Error) -> Self {
        PgMigrationError::Store(classify(value))
    }
}

/// Line endings are normalized so a checkout with CRLF endings records the same checksum.
fn normalized(sql: &str) -> String {
    sql.replace("\r\n", "\n")
}

/// Applies the missing migrations to `schema` in one transaction, under a transaction-level
/// advisory lock so concurrent migrators take turns (the second finds nothing left to do).
pub(crate) async fn migrate(
    pool: &Pool,
    schema: &str,
) -> Result<PgMigrationReport, PgMigrationError> {
    let mut client = pool.get().await.map_err(classify_pool)?;
    let tx = client.transaction().await?;
    match apply(&tx, schema).await {
        Ok(report) => {
            tx.commit().await?;
            Ok(report)
        }
        Err(e) => {
            // Rolled back before returning, so the refusal has changed nothing and holds no
            // locks by the time the caller sees it.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn apply(
    tx: &deadpool_postgres::Transaction<'_>,
    schema: &str,
) -> Result<PgMigrationReport, PgMigrationError> {
    // Keyed by schema, so stores in different schemas migrate independently.
    tx.execute(
        "SELECT pg_advisory_xact_lock(1129465926, hashtext($1))",
        &[&schema],
    )
    .await?;
    // Checked before CREATE SCHEMA, which needs the CREATE privilege even when the schema
    // already exists.
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS \"{schema}\".schema_migrations (
             version     integer PRIMARY KEY,
             name        text NOT NULL,
             checksum    text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         )"
    ))
    .await?;

    let texts: Vec<String> = MIGRATIONS.iter().map(|m| normalized(m.sql)).collect();
    let checksums: Vec<String> = tx
        .query(
            "SELECT encode(sha256(convert_to(t, 'UTF8')), 'hex') \
             FROM unnest($1::text[]) WITH ORDINALITY AS u(t, ord) ORDER BY ord",
            &[&texts],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;

    let recorded = tx
        .query(
            &format!(
                "SELECT version, name, checksum FROM \"{schema}\".schema_migrations \
                 ORDER BY version"
            ),
            &[],
        )
        .await?;
    let mut done = Vec::with_capacity(recorded.len());
    for row in &recorded {
        let version: i32 = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let checksum: String = row.try_get(2)?;
        let known = MIGRATIONS
            .iter()
            .zip(&checksums)
            .find(|(m, _)| i64::from(m.version) == i64::from(version));
        let Some((migration, embedded)) = known.filter(|(m, _)| m.name == name) else {
            return Err(PgMigrationError::Unknown {
                version: u32::try_from(version).unwrap_or(0),
                name,
            });
        };
        if *embedded != checksum {
            return Err(PgMigrationError::ChecksumMismatch {
                version: migration.version,
                name: migration.name,
                recorded: checksum,
                embedded: embedded.clone(),
            });
        }
        done.push(migration.version);
    }
    if let Some(hole) = MIGRATIONS
        .iter()
        .take_while(|m| done.last().is_some_and(|&last| m.version < last))
        .find(|m| !done.contains(&m.version))
    {
        return Err(PgMigrationError::Missing {
            version: hole.version,
        });
    }

    let mut report = PgMigrationReport {
        applied: Vec::new(),
        version: done.last().copied().unwrap_or(0),
    };
    for ((migration, sql), checksum) in MIGRATIONS.iter().zip(&texts).zip(&checksums) {
        if done.contains(&migration.version) {
            continue;
        }
        tx.batch_execute(&format!("SET LOCAL search_path TO \"{schema}\""))
            .await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            &format!(
                "INSERT INTO \"{schema}\".schema_migrations (version, name, checksum) \
                 VALUES ($1, $2, $3)"
            ),
            &[
                &i32::try_from(migration.version).unwrap_or(i32::MAX),
                &migration.name,
                checksum,
            ],
        )
        .await?;
        report.applied.push(migration.version);
        report.version = migration.version;
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

    #[test]
    fn crlf_checkouts_hash_the_same() {
        assert_eq!(normalized("a\r\nb\n"), "a\nb\n");
    }
}
