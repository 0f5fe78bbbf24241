//! Turns on contended streams ([`EventStore::take_turn`](crossfold_core::EventStore::take_turn)):
//! session-level advisory locks, one per stream, held on a connection of the store's pool for
//! as long as the caller holds its turn.
//!
//! * **One round trip.** All the streams of a call are locked by one statement, in ascending
//!   order of their keys — the same order in every process, so two callers never wait for each
//!   other in a cycle. Each lock is first tried; only a lock held by someone else is waited
//!   for, and the statement answers whether any was, which tells the executor that the
//!   streams are contended.
//! * **In order.** PostgreSQL grants a lock to its waiters in the order they asked, so callers
//!   of every process queue for a contended stream in the server instead of racing.
//! * **Keys.** `pg_advisory_lock(TURN_CLASS, key)`: the class keeps turns apart from the
//!   migrators' lock and any other advisory lock of the application; the key is
//!   `hashtext(schema || '.' || stream)`, computed by the server, so that the append functions
//!   compute the same one (migration 10). Two streams that share a key share their turns — a
//!   wait that was not needed, never a wrong decision (the append's version check decides).
//! * **Appends give way.** Since migration 10 an append made without a turn, from a session
//!   that says it gives way (`crossfold.give_way = on`, set on every connection of the store's
//!   pools), on a stream whose turn another session holds or waits for is refused (a conflict
//!   marked [`turn_held`](crossfold_core::StreamConflict::turn_held)): the executor then takes
//!   its turn too. The holder appends on the turn's own session ([`Held::client`]), where the
//!   append function's lock on the key is granted at once; should that session have ended,
//!   through the pool.
//! * **Connections of their own.** A caller that holds a turn still reads through the store's
//!   pool, so turns are held on a small pool of their own — a quarter of the
//!   store's pool size, at least one connection, opened only when streams are contended — and
//!   never take a connection the store's pool (or the executor's admission control, which
//!   counts on it) needs. Further callers wait for one of them in this process, in order,
//!   with no time limit of the pool's own: waiting for a turn's connection is part of waiting
//!   for the turn, which has none either (a command's time limit still ends both). With the
//!   pool's wait timeout, a burst of commands on one hot stream timed out here, raced without
//!   their turn and could fail after their attempts while others got through.
//! * **Given back on drop, never leaked.** Dropping the turn sends the unlock and returns the
//!   connection to the pool at once (nobody waits for the answer; whoever uses the connection
//!   next is served after the unlock); if the unlock cannot be sent, or the wait for a turn is
//!   abandoned (a time limit), the connection is closed instead of returned, and the server
//!   releases its locks with the session.
//!
//! The advisory lock functions are granted to every role by default: turns need no privilege
//! beyond what an application role has.

use crossfold_core::{StoreError, StreamId, StreamTurn};
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use futures_util::FutureExt;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::config::PgConfig;
use crate::error::{classify, classify_pool};

/// The first key of every turn's advisory lock (`CFTR`), apart from the migrators' class.
pub(crate) const TURN_CLASS: i32 = 0x4346_5452;

/// Locks the keys of streams `$3` in schema-prefix `$2` (class `$1`) in ascending order, each
/// once, trying each first, and answers whether any had to be waited for.
const TAKE: &str = "SELECT coalesce(bool_or(CASE WHEN pg_try_advisory_lock($1, k) THEN false \
                    ELSE pg_advisory_lock($1, k)::text = '' END), false) \
                    FROM (SELECT DISTINCT hashtext($2::text || s) AS k \
                          FROM unnest($3::text[]) AS s ORDER BY 1) AS keys";

/// Gives back every turn the session holds (a pooled connection holds no other session-level
/// advisory lock).
const GIVE_BACK: &str = "SELECT pg_advisory_unlock_all()";

/// The connections turns are held on: a pool of their own.
pub(crate) struct Turns {
    pool: Pool,
    /// The schema and a dot: what every key's text starts with.
    prefix: String,
}

/// How many connections hold turns for a store whose pool has `pool_size`: a quarter, at
/// least one.
pub(crate) fn connections_for(pool_size: usize) -> usize {
    (pool_size / 4).max(1)
}

impl Turns {
    /// The turns' pool for a store configured by `config` (no connection is opened yet).
    pub(crate) fn new<T>(config: &PgConfig, tls: T) -> Result<Self, StoreError>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let manager = Manager::from_config(
            config.pool_driver_config(),
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            // A turn's holder appends on the turn's session: held to the other streams' turns
            // like any append of the store (migration 10).
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(crate::store::GIVE_WAY)
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .max_size(connections_for(config.pool_size))
            .wait_timeout(None)
            .create_timeout(config.create_timeout)
            .recycle_timeout(config.recycle_timeout)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(Self {
            pool,
            prefix: format!("{}.", config.schema),
        })
    }
}

impl Turns {
    /// The same connections, for the store in `schema` (a tenant's, see
    /// `PgEventStore::tenant`): turns are advisory locks keyed by schema and stream, so
    /// tenants' turns never meet.
    pub(crate) fn for_schema(&self, schema: &str) -> Self {
        Self {
            pool: self.pool.clone(),
            prefix: format!("{schema}."),
        }
    }
}

/// Waits for the caller's turn on `streams`.
pub(crate) async fn take(turns: &Turns, streams: &[StreamId]) -> Result<StreamTurn, StoreError> {
    if streams.is_empty() {
        return Ok(StreamTurn::none());
    }
    let names: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
    let client = turns.pool.get().await.map_err(classify_pool)?;
    // From here until the answer arrives, dropping the caller's future (a time limit) leaves a
    // lock request running on the connection: the guard closes it rather than pool it.
    let mut pending = Pending(Some(client));
    let waited = match pending.take(&turns.prefix, &names).await {
        Ok(waited) => waited,
        Err(error) => {
            // Whether any lock was granted before the failure is unknown: close the session.
            pending.close();
            return Err(error);
        }
    };
    let Some(client) = pending.0.take() else {
        return Err(StoreError::Backend(
            "the turn's connection went missing".into(),
        ));
    };
    Ok(StreamTurn::new(
        Held {
            client: Some(client),
            owner: std::ptr::from_ref(turns) as usize,
        },
        waited,
    ))
}

/// A connection with a lock request in flight; closed if dropped before the answer.
struct Pending(Option<Object>);

impl Pending {
    async fn take(&self, prefix: &str, streams: &[&str]) -> Result<bool, StoreError> {
        let Some(client) = &self.0 else {
            return Err(StoreError::Backend(
                "the turn's connection went missing".into(),
            ));
        };
        let statement = client.prepare_cached(TAKE).await.map_err(classify)?;
        let row = client
            .query_one(&statement, &[&TURN_CLASS, &prefix, &streams])
            .await
            .map_err(classify)?;
        row.try_get::<_, bool>(0).map_err(classify)
    }

    fn close(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.close();
    }
}

/// A turn: the connection whose session holds the locks, and the turns' pool it came from.
pub(crate) struct Held {
    client: Option<Object>,
    /// Which store's turns handed it out (the address of its [`Turns`]).
    owner: usize,
}

impl Held {
    /// The session that holds the turn, for its holder's appends: `None` when `turns` did not
    /// hand it out (another store's turn is no turn here), or when the session has ended —
    /// the server gave its locks back with it, and the holder's appends go through the pool
    /// like anyone's (and take their turn again if they are refused for it).
    pub(crate) fn client(&self, turns: &Turns) -> Option<&Object> {
        if self.owner != std::ptr::from_ref(turns) as usize {
            return None;
        }
        self.client.as_ref().filter(|client| !client.is_closed())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // Polled once, the unlock is on its way (the driver sends a request when its future is
        // first polled) and the connection carries it ahead of anything sent after: the pool
        // may have the connection back at once, and nobody waits for the answer.
        match client.batch_execute(GIVE_BACK).now_or_never() {
            None | Some(Ok(())) => drop(client),
            Some(Err(error)) => {
                tracing::debug!(
                    error = %crossfold_core::ErrorChain(&error),
                    "crossfold: a turn could not be given back; closing its connection"
                );
                drop(Object::take(client));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_have_a_quarter_of_the_pool_at_least_one() {
        assert_eq!(connections_for(1), 1);
        assert_eq!(connections_for(7), 1);
        assert_eq!(connections_for(16), 4);
        assert_eq!(connections_for(32), 8);
    }
}
