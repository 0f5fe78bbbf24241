//! Turning driver and pool errors into [`StoreError`]s the executor can act on: what is worth
//! retrying (contention, timeouts, a lost connection) is told apart from what is not.

use crossfold_core::{Position, StoreError};
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
#[derive(Debug, thiserror::Error)]
#[error("the event store schema is missing or incomplete; run PgEventStore::migrate()")]
pub(crate) struct NotMigrated(#[source] tokio_postgres::Error);

/// A stored event this store cannot turn into a
/// [`RecordedEvent`](crossfold_core::RecordedEvent): an id that is not a UUIDv7, metadata that
/// lacks a field, a stream id that is not valid, ... (written by hand or by another tool).
///
/// Reads that meet one fail with [`StoreError::Serialization`] whose
/// [`CodecError`](crossfold_core::CodecError) has this as its `source`;
/// [`find`](Self::find) gets it back. A subscriber is not stuck on it for good: an operator
/// quarantines the position ([`PgEventStore::quarantine`](crate::PgEventStore::quarantine)),
/// after which every read skips it, or a subscriber resumes after [`position`](Self::position).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the stored event at position {position} cannot be read: {reason}; quarantine it \
     (PgEventStore::quarantine) or resume after it"
)]
pub struct PgUndecodableEvent {
    position: Position,
    reason: String,
}

impl PgUndecodableEvent {
    pub(crate) fn new(position: Position, reason: impl Into<String>) -> Self {
        Self {
            position,
            reason: reason.into(),
        }
    }

    /// The event's position in the global log.
    pub fn position(&self) -> Position {
        self.position
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The undecodable event behind `error`, if that is what it is.
    pub fn find(error: &StoreError) -> Option<&PgUndecodableEvent> {
        let mut source = std::error::Error::source(error);
        while let Some(e) = source {
            if let Some(found) = e.downcast_ref::<PgUndecodableEvent>() {
                return Some(found);
            }
            source = e.source();
        }
        None
    }
}

/// A row that does not have the shape this crate wrote.
pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Backend(what.into().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real driver errors with the given SQLSTATEs, raised by the server.
    async fn raised(codes: &[&str]) -> Vec<tokio_postgres::Error> {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at {url} ({e}); set DATABASE_URL to a server")
            });
        tokio::spawn(connection);
        let mut out = Vec::new();
        for code in codes {
            let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$");
            out.push(client.batch_execute(&sql).await.unwrap_err());
        }
        out
    }

    #[tokio::test]
    async fn sqlstates_are_classified_for_retrying() {
        let codes = [
            "40001", "40P01", "57014", "55P03", "57P01", "08006", "53300", "42P01", "23514",
            "XX000",
        ];
        let kinds: Vec<&str> = raised(&codes)
            .await
            .into_iter()
            .map(|e| match classify(e) {
                StoreError::Contention(_) => "contention",
                StoreError::Timeout(_) => "timeout",
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Backend(_) => "backend",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "contention",
                "contention",
                "timeout",
                "timeout",
                "unavailable",
                "unavailable",
                "unavailable",
                "backend",
                "backend",
                "backend"
            ]
        );
    }

    #[tokio::test]
    async fn the_driver_error_is_kept_as_source() {
        let e = classify(raised(&["40001"]).await.remove(0));
        let source = std::error::Error::source(&e).unwrap();
        let driver = source.downcast_ref::<tokio_postgres::Error>().unwrap();
        assert_eq!(driver.code().unwrap().code(), "40001");
        let missing = classify(raised(&["42P01"]).await.remove(0));
        assert!(
            std::error::Error::source(&missing)
                .unwrap()
                .to_string()
                .contains("migrate()")
        );
    }
}
