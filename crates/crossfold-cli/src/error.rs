//! Why a command failed, the exit status that says so to scripts, and what to do about it.
//!
//! Messages do not repeat their causes: whatever shows an error to a person shows it with
//! its causes, as [`crossfold_core::ErrorChain`] prints them.

use crossfold_core::StoreError;
use crossfold_postgres::PgMigrationError;

/// Exit statuses, as `crossfold --help` and the operations guide list them.
pub(crate) mod code {
    /// Success; `health`: healthy.
    pub(crate) const OK: u8 = 0;
    /// Failure (a database error); `health`: degraded.
    pub(crate) const FAILED: u8 = 1;
    /// `health`: unhealthy.
    pub(crate) const UNHEALTHY: u8 = 2;
    /// A stream, event or projection that does not exist.
    pub(crate) const NOT_FOUND: u8 = 3;
    /// The schema is not migrated, lacks migrations, or cannot be migrated by this build.
    pub(crate) const SCHEMA: u8 = 4;
    /// Bad arguments or configuration (sysexits' EX_USAGE).
    pub(crate) const USAGE: u8 = 64;
    /// PostgreSQL cannot be reached (sysexits' EX_UNAVAILABLE).
    pub(crate) const UNAVAILABLE: u8 = 69;
}

/// A command's failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Arguments or configuration that cannot work.
    #[error("{0}")]
    Config(String),
    /// The server did not answer.
    #[error("cannot reach PostgreSQL at {target}")]
    Unreachable {
        target: String,
        #[source]
        source: StoreError,
    },
    /// The schema is not ready for this command.
    #[error("the schema {schema:?} is not ready")]
    Schema {
        schema: String,
        #[source]
        source: PgMigrationError,
    },
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error("the event store failed")]
    Store(#[from] StoreError),
    /// Writing the output failed (a closed pipe is not an error: see `main`).
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The exit status.
    pub(crate) fn code(&self) -> u8 {
        match self {
            CliError::Config(_) => code::USAGE,
            CliError::Unreachable { .. } => code::UNAVAILABLE,
            CliError::Schema { source, .. } => match source {
                PgMigrationError::Store(e) if is_unreachable(e) => code::UNAVAILABLE,
                PgMigrationError::Store(_) => code::FAILED,
                _ => code::SCHEMA,
            },
            CliError::NotFound(_) => code::NOT_FOUND,
            CliError::Store(e) if is_unreachable(e) => code::UNAVAILABLE,
            CliError::Store(_) | CliError::Output(_) => code::FAILED,
        }
    }

    /// What the operator can do about it, if anything useful can be said.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            CliError::Unreachable { .. } => Some(
                "check --database-url (or DATABASE_URL), that the server runs and that it \
                 accepts connections from here"
                    .to_owned(),
            ),
            CliError::Schema { source, .. } => match source {
                PgMigrationError::Pending { version: 0, .. } => Some(
                    "no Crossfold store there yet: check --schema (or CROSSFOLD_SCHEMA), or \
                     create it with `crossfold migrate`"
                        .to_owned(),
                ),
                PgMigrationError::Pending { .. } => Some(
                    "run `crossfold migrate` as the schema's owner (`crossfold migrate \
                     --dry-run` shows what it would do)"
                        .to_owned(),
                ),
                PgMigrationError::ChecksumMismatch { .. } | PgMigrationError::Unknown { .. } => {
                    Some(
                        "the database was migrated by a different build: use the build that \
                         migrated it, and never edit a migration once shipped"
                            .to_owned(),
                    )
                }
                PgMigrationError::Incompatible { .. } => Some(
                    "a newer build changed the schema incompatibly: upgrade this command"
                        .to_owned(),
                ),
                PgMigrationError::Store(StoreError::Timeout(_)) => Some(
                    "a table lock was held by other work for longer than the migration's lock \
                     timeout: run it again later"
                        .to_owned(),
                ),
                _ => None,
            },
            CliError::Store(StoreError::Timeout(_)) => {
                Some("the database took too long: try again, or look at its load".to_owned())
            }
            _ => None,
        }
    }
}

/// Whether the store error means the server could not be reached at all.
fn is_unreachable(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}
