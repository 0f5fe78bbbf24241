//! What migrating did or found, and why it refused: the public answers of
//! [`PgEventStore::migrate`](crate::PgEventStore::migrate) and its siblings.

use crossfold_core::StoreError;

use crate::error::classify;

/// What [`PgEventStore::migrate`](crate::PgEventStore::migrate) did or
/// [`PgEventStore::check_schema`](crate::PgEventStore::check_schema) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgMigrationReport {
    /// The migrations applied by this call, in order (empty when the schema was up to date).
    pub applied: Vec<u32>,
    /// The schema's version afterwards: the highest migration recorded in it.
    pub version: u32,
    /// Migrations recorded in the database that this build does not know, all compatible
    /// with it (a newer build migrated the schema; see
    /// [`PgMigration::is_breaking`](crate::PgMigration::is_breaking)).
    pub newer: Vec<u32>,
}

/// Where a schema's migrations stand, from
/// [`PgEventStore::migration_status`](crate::PgEventStore::migration_status): what is applied,
/// what this build would apply, and what a newer build added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgMigrationStatus {
    /// Whether the schema exists at all.
    pub schema_exists: bool,
    /// The schema's version: the highest migration recorded in it (0: none).
    pub version: u32,
    /// The known migrations recorded in the schema, with when each was applied (as
    /// PostgreSQL prints a `timestamptz` in JSON), in order.
    pub applied: Vec<(u32, Option<String>)>,
    /// The migrations [`migrate`](crate::PgEventStore::migrate) would apply, in order.
    pub pending: Vec<u32>,
    /// Migrations recorded by a newer build that this one does not know, all compatible.
    pub newer: Vec<u32>,
}

/// Why migrating refused or failed. A refusal changed nothing; a failure rolled back the
/// migration that failed (earlier ones in the same call stay applied).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgMigrationError {
    /// A recorded migration differs from the embedded one with the same number: the database
    /// was migrated by a different build, or the migration was edited after it was applied.
    #[error(
        "migration {version} ({name}) recorded in the database has checksum {recorded}, \
         but this build's has {embedded}; refusing to migrate"
    )]
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
    /// The database records a name for a known migration number that differs from this
    /// build's: the histories have diverged.
    #[error(
        "the database records migration {version} as {name:?}, which this build does \
         not have; refusing to migrate"
    )]
    Unknown {
        /// The migration's number.
        version: u32,
        /// Its recorded name.
        name: String,
    },
    /// The database records a breaking migration this build does not know: a newer build
    /// changed the schema in a way this one cannot work with.
    #[error(
        "the database records migration {version} ({name}), a breaking change made by a \
         newer build; this build cannot use the schema"
    )]
    Incompatible {
        /// The migration's number.
        version: u32,
        /// Its recorded name.
        name: String,
    },
    /// The recorded migrations skip one that this build knows: the history has a hole.
    #[error("the database records later migrations but not {version}; refusing to migrate")]
    Missing {
        /// The migration that was never applied although later ones were.
        version: u32,
    },
    /// The schema lacks migrations this build needs (from
    /// [`check_schema`](crate::PgEventStore::check_schema)): the schema's owner must run
    /// [`migrate`](crate::PgEventStore::migrate).
    #[error(
        "the schema is at version {version} and lacks migrations {pending:?}; run \
         PgEventStore::migrate() as the schema's owner"
    )]
    Pending {
        /// The schema's version (0: not created).
        version: u32,
        /// The migrations to apply.
        pending: Vec<u32>,
    },
    /// The database could not be reached or failed. A lock held by other work for longer
    /// than the lock timeout is [`StoreError::Timeout`]: try again later.
    #[error("migration failed: {0}")]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for PgMigrationError {
    fn from(value: tokio_postgres::Error) -> Self {
        PgMigrationError::Store(classify(value))
    }
}
