//! Waking subscribers when events commit.
//!
//! Appends never `NOTIFY` inside their own transaction: PostgreSQL serializes the commits of all
//! notifying transactions, which measured at less than half the append throughput. Instead an
//! append pokes the [`Notifier`] task, which sends one `NOTIFY` for every burst of appends (at
//! most one per interval per process) on a pooled connection, after the appends committed.
//! Each store keeps a dedicated `LISTEN` connection whose notifications bump a
//! [`tokio::sync::watch`] counter that `wait_for_events` waits on. A lost notification or a lost
//! listener only delays delivery: waiters re-read the log when their wait times out.

use crossfold_core::ErrorChain;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossfold_core::Backoff;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};

/// Wakes every waiter of this store: something may have become readable.
fn wake(wake: &watch::Sender<u64>) {
    wake.send_modify(|n| *n = n.wrapping_add(1));
}

/// How a store tells readers that its appends wrote events: its own waiters at once, other
/// processes' through the coalesced `NOTIFY`.
pub(crate) struct Wakeup {
    /// Bumped whenever events may have become readable (a local append or a notification).
    local: Arc<watch::Sender<u64>>,
    notifier: Arc<Notifier>,
    /// The store's channel, which the notifier notifies.
    channel: String,
}

impl Wakeup {
    pub(crate) fn new(
        local: Arc<watch::Sender<u64>>,
        notifier: Arc<Notifier>,
        channel: String,
    ) -> Self {
        Self {
            local,
            notifier,
            channel,
        }
    }

    /// The notifier, for a tenant's store to share (see `PgEventStore::tenant`).
    pub(crate) fn notifier(&self) -> Arc<Notifier> {
        self.notifier.clone()
    }

    /// An append committed events. Never waits.
    pub(crate) fn appended(&self) {
        wake(&self.local);
        self.notifier.poke(&self.channel);
    }

    /// The wake-ups from now on, for one waiter.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.local.subscribe()
    }
}

/// Whether a store listens for notifications, and whether its `LISTEN` connection is up.
#[derive(Clone, Debug)]
pub(crate) struct ListenerState {
    listening: bool,
    connected: Arc<AtomicBool>,
}

impl ListenerState {
    pub(crate) fn new(listening: bool) -> Self {
        Self {
            listening,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the store listens at all (listening can be turned off).
    pub(crate) fn listening(&self) -> bool {
        self.listening
    }

    /// Whether the `LISTEN` connection is up now.
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// The coalescing `NOTIFY` sender.
/// Shared by a store and the stores of its tenants: one statement notifies every channel
/// whose store appended since the last one.
pub(crate) struct Notifier {
    signal: Notify,
    /// The channels to notify, each once.
    pending: std::sync::Mutex<Vec<String>>,
}

impl Notifier {
    /// Starts the task; it ends when `shutdown`'s sender is dropped.
    pub(crate) fn spawn(
        pool: Pool,
        sql: String,
        interval: Duration,
        mut shutdown: watch::Receiver<()>,
    ) -> Arc<Self> {
        let notifier = Arc::new(Self {
            signal: Notify::new(),
            pending: std::sync::Mutex::new(Vec::new()),
        });
        let task = notifier.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = task.signal.notified() => {}
                }
                let channels = std::mem::take(
                    &mut *task
                        .pending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                if channels.is_empty() {
                    continue;
                }
                if let Err(e) = send(&pool, &sql, &channels).await {
                    // Subscribers elsewhere fall back to polling; nothing is lost.
                    tracing::debug!(error = %ErrorChain(&*e), "crossfold: NOTIFY failed");
                }
                // Appends during this pause leave a permit in `signal`: one NOTIFY covers them.
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
        notifier
    }

    /// Asks for a `NOTIFY` on `channel` soon. Never waits (the lock is held for a look and,
    /// once per interval and channel, a push).
    pub(crate) fn poke(&self, channel: &str) {
        {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !pending.iter().any(|c| c == channel) {
                pending.push(channel.to_owned());
            }
        }
        self.signal.notify_one();
    }
}

async fn send(
    pool: &Pool,
    sql: &str,
    channels: &[String],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, &[&channels]).await?;
    Ok(())
}

/// Starts the `LISTEN` task: it connects, listens, bumps `wake` on every notification, and
/// reconnects with exponential backoff whenever the connection is lost. It ends when
/// `shutdown`'s sender is dropped.
pub(crate) fn spawn_listener<T>(
    pg: tokio_postgres::Config,
    tls: T,
    channel: String,
    wake_tx: Arc<watch::Sender<u64>>,
    state: &ListenerState,
    mut shutdown: watch::Receiver<()>,
) where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let connected = state.connected.clone();
    tokio::spawn(async move {
        let mut pauses = RECONNECT.delays();
        loop {
            let outcome = tokio::select! {
                _ = shutdown.changed() => return,
                outcome = listen(&pg, tls.clone(), &channel, &wake_tx, &connected) => outcome,
            };
            connected.store(false, Ordering::Relaxed);
            match outcome {
                // It was up for a while: come back quickly.
                Ok(()) => pauses.reset(),
                Err(e) => {
                    tracing::debug!(error = %ErrorChain(&e), "crossfold: LISTEN connection failed")
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(pauses.next_delay()) => {}
            }
        }
    });
}

/// The pauses before reconnecting the `LISTEN` connection: from 50 ms, doubling, without
/// jitter (one connection per process; nobody to spread out from). The longest pause between
/// two attempts is half a second: a server that comes back is listened to again within this
/// (plus one connection's set-up), however long it was gone. An attempt against a server that
/// is down costs one refused connection.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));

/// One connection's life: returns `Ok` when an established connection ends, `Err` when
/// connecting or listening failed.
async fn listen<T>(
    pg: &tokio_postgres::Config,
    tls: T,
    channel: &str,
    wake_tx: &watch::Sender<u64>,
    connected: &AtomicBool,
) -> Result<(), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket> + Send,
    T::Stream: Send,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = pg.connect(tls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The channel is derived from a validated schema name, so quoting it is enough.
    let listen_sql = format!("LISTEN \"{channel}\"");
    let listen = client.batch_execute(&listen_sql);
    tokio::pin!(listen);
    loop {
        tokio::select! {
            result = &mut listen => {
                result?;
                break;
            }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
    connected.store(true, Ordering::Relaxed);
    // Notifications sent while this connection was down are lost: let waiters re-check.
    wake(wake_tx);
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(_)) => wake(wake_tx),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %ErrorChain(&e), "crossfold: LISTEN connection lost");
                break;
            }
        }
    }
    // `client` must live until here: dropping it would close the connection.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_attempts_are_never_more_than_half_a_second_apart() {
        let mut pauses = RECONNECT.delays();
        let mut backoff = pauses.next_delay();
        assert_eq!(backoff, Duration::from_millis(50));
        let mut waited = Duration::ZERO;
        // An hour of outage.
        while waited < Duration::from_secs(3600) {
            assert!(backoff <= Duration::from_millis(500), "{backoff:?}");
            waited += backoff;
            backoff = pauses.next_delay();
        }
        assert_eq!(backoff, RECONNECT.max());
        pauses.reset();
        assert_eq!(pauses.next_delay(), Duration::from_millis(50));
    }
}
