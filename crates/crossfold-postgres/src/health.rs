//! What a health check reports.

use std::time::Duration;

/// The state of the store's connection pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgPoolStatus {
    /// The most connections the pool opens.
    pub max_size: usize,
    /// Connections open now.
    pub size: usize,
    /// Open connections not in use.
    pub available: usize,
    /// Calls waiting for a connection.
    pub waiting: usize,
}

impl From<deadpool_postgres::Status> for PgPoolStatus {
    fn from(s: deadpool_postgres::Status) -> Self {
        Self {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }
}

/// The result of [`PgEventStore::health`](crate::PgEventStore::health).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PgHealth {
    /// How long the health query took, including getting a connection.
    pub latency: Duration,
    /// The connection pool.
    pub pool: PgPoolStatus,
    /// Whether the `LISTEN` connection that wakes subscribers is up (always `true` when
    /// listening is turned off). While it is down, subscribers poll.
    pub listener_connected: bool,
    /// How long the oldest open writing transaction (or prepared transaction) in the cluster
    /// has been open; `None` when there is none. Subscriptions see no event committed after
    /// such a transaction started writing until it ends.
    pub oldest_transaction_age: Option<Duration>,
}
