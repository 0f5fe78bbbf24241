//! Turning driver and pool errors into [`StoreError`]s the executor can act on: what is worth
//! retrying (contention, timeouts, a lost connection) is told apart from what is not.

use std::sync::LazyLock;

use crossfold_core::{Position, StoreError};
use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

/// SQLSTATE `CF001`, raised by the append function when a stream's condition fails, with the
/// conflicts as a JSON array in its DETAIL (`[{"stream": ..., "actual": ...}]`). The store's
/// own SQL raises codes of class `CF` only (see the migrations); the other one, `CF002` from the
/// triggers that keep events immutable and stream rows in place, is a `Backend` error like any
/// refusal and needs no constant.
pub(crate) static CONFLICT: LazyLock<SqlState> = LazyLock::new(|| SqlState::from_code("CF001"));

/// Contention: worth retrying at once (with backoff).
const CONTENTION: [SqlState; 2] = [
    SqlState::T_R_SERIALIZATION_FAILURE,
    SqlState::T_R_DEADLOCK_DETECTED,
];

/// query_canceled (statement_timeout), lock_not_available (lock_timeout).
const TIMEOUT: [SqlState; 2] = [SqlState::QUERY_CANCELED, SqlState::LOCK_NOT_AVAILABLE];

/// Admin/crash shutdown, cannot_connect_now, too_many_connections (and, by class, every
/// connection exception): the server is going away or not there yet.
const UNAVAILABLE: [SqlState; 4] = [
    SqlState::ADMIN_SHUTDOWN,
    SqlState::CRASH_SHUTDOWN,
    SqlState::CANNOT_CONNECT_NOW,
    SqlState::TOO_MANY_CONNECTIONS,
];

/// invalid_schema_name, undefined_table, undefined_function: not migrated.
const NOT_MIGRATED: [SqlState; 3] = [
    SqlState::INVALID_SCHEMA_NAME,
    SqlState::UNDEFINED_TABLE,
    SqlState::UNDEFINED_FUNCTION,
];

/// Whether `code` is in the class (the first two characters) of `class`, e.g. every
/// `08...` code in the class of [`SqlState::CONNECTION_EXCEPTION`]. PostgreSQL adds codes to a
/// class over time; a class is how its docs tell clients to handle the ones they do not know.
pub(crate) fn in_class(code: &SqlState, class: &SqlState) -> bool {
    code.code().get(..2) == class.code().get(..2)
}

/// Whether `error` is an insert into the default partition of a partitioned log refused
/// because a partition covering its row was attached meanwhile (migration 14): PostgreSQL
/// routed the row before the attach and checked it after. Nothing was written, and the same
/// insert routes to the new partition now: contention, worth retrying.
///
/// Likewise an insert refused by the CHECK a conversion of the log puts on the events table
/// until its switch (`events_before_partitions`): the switch is seconds away, and after it
/// the same insert goes to a new partition.
fn routed_before_an_attach(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::CHECK_VIOLATION
            && (db.table() == Some("events_default")
                || db.constraint() == Some("events_before_partitions"))
    })
}

/// The first error of type `T` in `error`'s chain of sources (the `find` of this crate's
/// typed errors).
pub(crate) fn find_source<T: std::error::Error + 'static>(error: &StoreError) -> Option<&T> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// Classifies a driver error, keeping it as the `source`.
pub(crate) fn classify(error: tokio_postgres::Error) -> StoreError {
    if let Some(code) = error.code() {
        return if CONTENTION.contains(code) || routed_before_an_attach(&error) {
            StoreError::Contention(error.into())
        } else if TIMEOUT.contains(code) {
            StoreError::Timeout(error.into())
        } else if UNAVAILABLE.contains(code) || in_class(code, &SqlState::CONNECTION_EXCEPTION) {
            StoreError::Unavailable(error.into())
        } else if NOT_MIGRATED.contains(code) {
            StoreError::Backend(Box::new(NotMigrated(error)))
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            StoreError::Backend(Box::new(PgReadOnly(error)))
        } else {
            StoreError::Backend(error.into())
        };
    }
    if is_connection_failure(&error) {
        StoreError::Unavailable(error.into())
    } else {
        StoreError::Backend(error.into())
    }
}

/// Whether a non-database error means the server could not be reached or the connection broke:
/// the driver says so (`is_closed`), or an I/O error is among its causes — a refused or reset
/// connection, or the driver's connect timeout (an [`std::io::ErrorKind::TimedOut`]).
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
    false
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

/// A write reached a server that takes none: a hot standby (SQLSTATE 25006,
/// `read_only_sql_transaction`), or a session whose transactions are read-only. A store
/// connected to a standby serves reads and subscriptions; its appends, snapshots, checkpoints
/// and deadlines fail with [`StoreError::Backend`] carrying this, which
/// [`find`](Self::find) gets back. Not transient: send writes to the primary (after a
/// failover, to the promoted server).
#[derive(Debug, thiserror::Error)]
#[error(
    "the server takes no writes (a hot standby, or a read-only session): send writes to the \
     primary"
)]
pub struct PgReadOnly(#[source] tokio_postgres::Error);

impl PgReadOnly {
    /// The refused write behind `error`, if that is what it is.
    pub fn find(error: &StoreError) -> Option<&PgReadOnly> {
        find_source(error)
    }
}

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
        find_source(error)
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
    async fn raised(codes: &[SqlState]) -> Vec<tokio_postgres::Error> {
        let client = crate::test_support::connect().await;
        let mut out = Vec::new();
        for code in codes {
            let sql = format!(
                "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{}'; END $$",
                code.code()
            );
            out.push(client.batch_execute(&sql).await.unwrap_err());
        }
        out
    }

    #[tokio::test]
    async fn sqlstates_are_classified_for_retrying() {
        let codes = [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::QUERY_CANCELED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CONNECTION_FAILURE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::UNDEFINED_TABLE,
            SqlState::CHECK_VIOLATION,
            SqlState::INTERNAL_ERROR,
            CONFLICT.clone(),
            SqlState::from_code("CF002"),
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
                "backend",
                "backend",
                "backend"
            ]
        );
    }

    #[test]
    fn a_class_is_the_first_two_characters() {
        let lost = SqlState::from_code("08XYZ");
        assert!(in_class(&lost, &SqlState::CONNECTION_EXCEPTION));
        assert!(in_class(
            &SqlState::PROTOCOL_VIOLATION,
            &SqlState::CONNECTION_EXCEPTION
        ));
        assert!(!in_class(
            &SqlState::DATA_EXCEPTION,
            &SqlState::CONNECTION_EXCEPTION
        ));
    }

    #[tokio::test]
    async fn the_driver_error_is_kept_as_source() {
        let e = classify(
            raised(&[SqlState::T_R_SERIALIZATION_FAILURE])
                .await
                .remove(0),
        );
        let source = std::error::Error::source(&e).unwrap();
        let driver = source.downcast_ref::<tokio_postgres::Error>().unwrap();
        assert_eq!(driver.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
        let missing = classify(raised(&[SqlState::UNDEFINED_TABLE]).await.remove(0));
        assert!(
            std::error::Error::source(&missing)
                .unwrap()
                .to_string()
                .contains("migrate()")
        );
    }

    /// A connection that cannot be made is unavailable because of its kind (an I/O error from
    /// the driver), not because of what its message says.
    #[tokio::test]
    async fn a_refused_connection_is_unavailable() {
        let error = tokio_postgres::connect("host=127.0.0.1 port=1 user=x", tokio_postgres::NoTls)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(classify(error), StoreError::Unavailable(_)),
            "refused"
        );
    }
}
