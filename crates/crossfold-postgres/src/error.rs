//! Turning driver and pool errors into [`StoreError`]s the executor can act on: what is worth
//! retrying (contention, timeouts, a lost connection) is told apart from what is not.

use std::fmt;

use crossfold_core::StoreError;
use deadpool_postgres::PoolError;

/// SQLSTATE raised by the append function when a stream's condition fails.
pub(crate) const CONFLICT: &str = "CF001";

/// Classifies a driver error, keeping it as the `source`.
pub(crate) fn classify(error: tokio_postgres::Error) -> StoreError {
    if let Some(code) = error.code().map(|c| c.code()) {
        return match code {
            // serialization_failure, deadlock_detected
            "40001" | "40P01" => StoreError::Contention(error.into()),
            // query_canceled (statement_timeout), lock_not_available (lock_timeout)
            "57014" | "55P03" => StoreError::Timeout(error.into()),
            // admin/crash shutdown, cannot_connect_now, too_many_connections, and the whole
            // connection_exception class: the server is going away or not there yet.
            "57P01" | "57P02" | "57P03" | "53300" => StoreError::Unavailable(error.into()),
            c if c.starts_with("08") => StoreError::Unavailable(error.into()),
            // invalid_schema_name, undefined_table, undefined_function: not migrated.
            "3F000" | "42P01" | "42883" => StoreError::Backend(Box::new(NotMigrated(error))),
            _ => StoreError::Backend(error.into()),
        };
    }
    if is_connection_failure(&error) {
        StoreError::Unavailable(error.into())
    } else {
        StoreError::Backend(error.into())
    }
}

/// Whether a non-database error means the server could not be reached or the connection broke.
fn is_connection_failure(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    // The driver's connect timeout carries no cause; its message is the only way to tell.
    error.to_string().contains("timeout")
}

/// Classifies a pool error: the pool timing out or being closed means the store is unavailable.
pub(crate) fn classify_pool(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(_) | PoolError::Closed => StoreError::Unavailable(error.into()),
        other => StoreError::Backend(other.into()),
    }
}

/// A query failed because the store's schema, tables or functions are missing.
#[derive(Debug)]
pub(crate) struct NotMigrated(tokio_postgres::Error);

impl fmt::Display for NotMigrated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event store schema is missing or incomplete; run PgEventStore::migrate()")
    }
}

impl std::error::Error for NotMigrated {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A row that does not have the shape this crate wrote.
pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Backend(what.into().into())
}
