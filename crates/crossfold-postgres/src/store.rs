//! [`PgEventStore`]: the [`EventStore`] on PostgreSQL. Connecting and setting up, the store
//! type, and the trait implementations, each handing its call down to the module of its path:
//! `append`, `read`, `health`, and for operators `inspect` and `migrate`. None of them knows
//! this type: each gets the pool and statements ([`Db`]) and the settings it needs.

use crossfold_core::ErrorChain;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossfold_core::metrics::StoreOperation;
use crossfold_core::{
    AppendRequest, Appended, EventId, EventStore, HealthCheck, HealthReport, HeldBack, LogFilter,
    Position, RecordedEvent, StoreError, StreamEvents, StreamId, StreamRead, StreamTurn,
};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, Socket};
use tracing::Instrument;

use crate::archive::{self, PgLogPartition, PgLogPartitioning, PgPartitionReport};
use crate::config::PgConfig;
use crate::db::Db;
use crate::deadlines::PgDeadlineStore;
use crate::error::{classify, classify_pool};
use crate::health::{self, HorizonWatch, PgHealth, PgListenerHealth, PgPoolHealth, PgPoolStatus};
use crate::inspect::{self, PgStreamInfo};
use crate::metrics::StoreMetrics;
use crate::migrate::{
    MIGRATIONS, PgMigration, PgMigrationError, PgMigrationReport, PgMigrationStatus,
    check_log_order, check_schema, grant_access, migrate, status,
};
use crate::notify::{ListenerState, Notifier, Wakeup, spawn_listener};
use crate::projections::PgCheckpoints;
use crate::read_index::{self, PgReadIndex, ReadIndex};
use crate::sql::quoted;
use crate::turns::{self, Turns};
use crate::{append, read};

/// How many times more command executions than connections the executor admits at once when
/// group commit is on (see [`EventStore::concurrency_limit`]).
const GROUPED_ADMISSION: usize = 4;

/// The PostgreSQL event store.
///
/// Cheap to clone: clones share one connection pool, one `LISTEN` connection and one
/// notifier. The background tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Db>,
    /// Sends appends alone or in groups (group commit).
    appender: append::Appender,
    wakeup: Wakeup,
    listener: ListenerState,
    visibility_wait: Duration,
    long_transaction_threshold: Duration,
    migration_lock_timeout: Duration,
    /// Where the visibility horizon stood at earlier health checks, to tell how long it has
    /// not moved.
    horizon: HorizonWatch,
    /// Resolved at the first call rather than at connect, so a recorder installed in between
    /// still receives them.
    metrics: OnceLock<StoreMetrics>,
    /// The connections turns on contended streams are held on.
    turns: Turns,
    /// Group commit on, and its calls in flight at most (for tenants' stores).
    group_commit: (bool, usize),
    /// Whether the server was a hot standby when the store connected.
    in_recovery: bool,
    /// For a tenant's store, the store whose connections and notifier it shares.
    _parent: Option<PgEventStore>,
    /// Dropping it stops the background tasks.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("schema", &self.inner.db.schema)
            .field("pool", &self.inner.db.pool.status())
            .finish_non_exhaustive()
    }
}

/// What a new store learns of its schema: which optional read indexes the reads can use, and
/// (a partitioned log) the partitions it should have ahead, created if missing (after a new
/// log epoch, the first that cover it). Where the schema is not migrated yet this finds
/// nothing, and reads look again later (see `read_index`); on a standby nothing is created.
async fn look_at_schema(db: &Db, in_recovery: bool) {
    if let Err(e) = read_index::refresh(db).await {
        tracing::debug!(error = %ErrorChain(&e), schema = %db.schema, "crossfold: read indexes not looked up");
    }
    if !in_recovery && let Err(e) = archive::ensure(db).await {
        tracing::debug!(error = %ErrorChain(&e), schema = %db.schema, "crossfold: log partitions not checked");
    }
}

/// Set on every connection of the store's pool: its appends give way to writers that take
/// turns (migration 10).
pub(crate) const GIVE_WAY: &str = "SET crossfold.give_way = on";

impl PgEventStore {
    /// Connects without TLS. See [`connect_with_tls`](Self::connect_with_tls).
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        Self::connect_with_tls(config, NoTls).await
    }

    /// Builds the pool, checks that the server answers, and starts the `LISTEN` connection and
    /// the notifier. `tls` is any tokio-postgres TLS connector (for example from
    /// `postgres-native-tls` or `tokio-postgres-rustls`).
    ///
    /// Does not create or migrate the schema: call [`migrate`](Self::migrate) (usually once at
    /// start-up). Fails with [`StoreError::InvalidRequest`] for an invalid configuration,
    /// [`StoreError::Unavailable`] when the server cannot be reached, and
    /// [`StoreError::Backend`] outside a Tokio runtime.
    pub async fn connect_with_tls<T>(config: PgConfig, tls: T) -> Result<Self, StoreError>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        config
            .validate()
            .map_err(|e| StoreError::InvalidRequest(ErrorChain(&e).to_string()))?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Backend(
                "PgEventStore needs a Tokio runtime for its background tasks".into(),
            ));
        }
        let manager = Manager::from_config(
            config.pool_driver_config(),
            tls.clone(),
            ManagerConfig {
                // A broken connection is noticed by the driver (`is_closed`); checking each
                // one with a query on every checkout would cost a round trip per call.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Every new connection says that its appends give way to writers that take turns
        // (migration 10: sessions without the setting, such as processes of earlier builds,
        // are not held to it). Then it checks the log's order (see migration 0002), so a store
        // restored into another cluster starts a new log epoch before anything reads it. The
        // check is skipped, not failed, where the schema is not migrated yet or not readable.
        let check = format!(
            "SELECT epoch, advanced FROM {}.check_log_order()",
            quoted(&config.schema)
        );
        let schema = config.schema.clone();
        let pool = Pool::builder(manager)
            .post_create(Hook::async_fn(move |client, _| {
                let check = check.clone();
                let schema = schema.clone();
                Box::pin(async move {
                    client
                        .batch_execute(GIVE_WAY)
                        .await
                        .map_err(HookError::Backend)?;
                    match client.query_opt(check.as_str(), &[]).await {
                        Ok(Some(row)) if row.try_get::<_, bool>(1).unwrap_or(false) => {
                            tracing::warn!(
                                schema,
                                "crossfold: the event log started a new epoch (the store moved \
                                 to another cluster or timeline); positions of new events jump \
                                 ahead so that no subscriber skips them"
                            );
                        }
                        Ok(_) => {}
                        Err(e) if e.as_db_error().is_some() => {
                            tracing::debug!(error = %ErrorChain(&e), schema, "crossfold: log order not checked");
                        }
                        Err(e) => return Err(HookError::Backend(e)),
                    }
                    Ok(())
                })
            }))
            .max_size(config.pool_size)
            .wait_timeout(config.wait_timeout)
            .create_timeout(config.create_timeout)
            .recycle_timeout(config.recycle_timeout)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        // A hot standby takes no LISTEN, and notifications (never replicated) would not reach
        // it anyway: a store connected to one polls.
        let in_recovery: bool = {
            let client = pool.get().await.map_err(classify_pool)?;
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(classify)?;
            row.try_get(0).map_err(classify)?
        };
        let listen = config.listen && !in_recovery;
        if config.listen && in_recovery {
            tracing::info!(
                schema = %config.schema,
                "crossfold: connected to a hot standby; its subscribers poll for new events"
            );
        }
        let turns = Turns::new(&config, tls.clone())?;

        let db = Arc::new(Db::new(pool, config.schema.clone(), config.archived_reads));
        look_at_schema(&db, in_recovery).await;
        let (shutdown, shutdown_rx) = watch::channel(());
        let wake_tx = Arc::new(watch::channel(0u64).0);
        let listener = ListenerState::new(listen);
        if listen {
            spawn_listener(
                config.listen_driver_config(),
                tls,
                db.sql.channel.clone(),
                wake_tx.clone(),
                &listener,
                shutdown_rx.clone(),
            );
        }
        let notifier = Notifier::spawn(
            db.pool.clone(),
            db.sql.notify.clone(),
            config.notify_interval,
            shutdown_rx,
        );
        let group_commit = (config.group_commit, config.get_group_commit_calls());
        let appender = append::Appender::new(&db, group_commit.0, group_commit.1);
        let channel = db.sql.channel.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                appender,
                wakeup: Wakeup::new(wake_tx, notifier, channel),
                listener,
                visibility_wait: config.visibility_wait,
                long_transaction_threshold: config.long_transaction_threshold,
                migration_lock_timeout: config.migration_lock_timeout,
                horizon: HorizonWatch::default(),
                metrics: OnceLock::new(),
                turns,
                group_commit,
                in_recovery,
                _parent: None,
                _shutdown: shutdown,
            }),
        })
    }

    /// The store of tenant `schema`, on the same database and this store's connections.
    ///
    /// Each tenant has a schema of its own — its own log, positions, streams, projections'
    /// checkpoints, deadlines, snapshots, archive and partitions — and the returned store
    /// knows only that schema: every statement it sends names it, and none of its methods
    /// takes another, so no read, append, subscription, projection or operator call through
    /// it reaches another tenant's events (see docs/operations.md, "Many tenants on one
    /// database"). It shares this store's pool, its connections for turns and its notifier,
    /// so hundreds of tenants cost no more connections than one; it does not `LISTEN` (its
    /// subscribers are woken by its own appends, and poll for other processes'). Settings
    /// come from this store's configuration. Migrate it before use
    /// ([`migrate`](Self::migrate)); the schema is created then if need be.
    ///
    /// Fails with [`StoreError::InvalidRequest`] for a schema name that is not valid (see
    /// [`PgConfig::schema`]).
    pub async fn tenant(&self, schema: &str) -> Result<PgEventStore, StoreError> {
        crate::config::validate_schema(schema)
            .map_err(|e| StoreError::InvalidRequest(ErrorChain(&e).to_string()))?;
        let inner = &self.inner;
        let db = Arc::new(Db::new(
            inner.db.pool.clone(),
            schema.to_owned(),
            inner.db.archived_reads,
        ));
        // The pool's connections checked the log's order of the first store's schema only
        // (see `connect_with_tls`); this one's is checked here, once. Where the schema is not
        // migrated yet, `migrate` checks it.
        if !inner.in_recovery {
            match db.client().await {
                Ok(client) => {
                    if let Err(e) = check_log_order(&client, schema).await {
                        tracing::debug!(error = %ErrorChain(&e), schema, "crossfold: log order not checked");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %ErrorChain(&e), schema, "crossfold: log order not checked");
                }
            }
        }
        look_at_schema(&db, inner.in_recovery).await;
        let (shutdown, _) = watch::channel(());
        let wake_tx = Arc::new(watch::channel(0u64).0);
        let (grouped, calls) = inner.group_commit;
        let appender = append::Appender::new(&db, grouped, calls);
        let channel = db.sql.channel.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                appender,
                wakeup: Wakeup::new(wake_tx, inner.wakeup.notifier(), channel),
                listener: ListenerState::new(false),
                visibility_wait: inner.visibility_wait,
                long_transaction_threshold: inner.long_transaction_threshold,
                migration_lock_timeout: inner.migration_lock_timeout,
                horizon: HorizonWatch::default(),
                metrics: OnceLock::new(),
                turns: inner.turns.for_schema(schema),
                group_commit: inner.group_commit,
                in_recovery: inner.in_recovery,
                // The shared notifier's task lives as long as the store that started it.
                _parent: Some(self.clone()),
                _shutdown: shutdown,
                db,
            }),
        })
    }

    /// Archives `stream`: moves its events out of the log into the schema's archive, in one
    /// transaction, and returns how many moved. From then on they are on no hot path (no
    /// stream read, log read, subscription or projection meets them), stay readable with
    /// [`read_archived_stream`](Self::read_archived_stream), and the stream takes no new
    /// events (an append fails with [`PgStreamArchived`](crate::PgStreamArchived)). A read of
    /// the stream answers as [`PgConfig::archived_streams`] says.
    ///
    /// Refuses with [`StoreError::InvalidRequest`], moving nothing: a system stream, a stream
    /// without events or archived already, one some of whose events are in a detached
    /// partition, and — unless `force` — one whose last event a projection with a checkpoint in
    /// this store has not read yet (it would never see the events). Needs migration 14.
    pub async fn archive_stream(&self, stream: &StreamId, force: bool) -> Result<u64, StoreError> {
        archive::archive_stream(&self.inner.db, stream, force).await
    }

    /// The events of archived stream `stream`, with its version; `None` when it is not
    /// archived.
    pub async fn read_archived_stream(
        &self,
        stream: &StreamId,
    ) -> Result<Option<StreamEvents>, StoreError> {
        archive::read_archived_stream(&self.inner.db, stream).await
    }

    /// Converts the events table into one partitioned by position (by range of transaction id),
    /// as migration 14 describes: appends go on through all but its last step, a few catalog
    /// changes under the table's lock. Run it as the schema's owner. Refuses with
    /// [`StoreError::InvalidRequest`] a log partitioned already and sizes out of range.
    pub async fn partition_log(
        &self,
        plan: PgLogPartitioning,
    ) -> Result<PgPartitionReport, StoreError> {
        archive::partition_log(&self.inner.db, plan).await
    }

    /// The partitions of the log, attached and detached, in the order of their ranges (the
    /// default partition last); empty when the log is not partitioned.
    pub async fn log_partitions(&self) -> Result<Vec<PgLogPartition>, StoreError> {
        archive::list(&self.inner.db).await
    }

    /// Creates the partitions the log should have ahead of it now; returns how many. The
    /// store also does so when it connects and when its appends near the last partition.
    pub async fn ensure_log_partitions(&self) -> Result<u32, StoreError> {
        archive::ensure(&self.inner.db).await
    }

    /// Detaches partition `name` from the log, returning how many events left it: its table
    /// stays in the schema, immutable, to dump and drop or to attach again. Its events leave
    /// every read of the log, and a stream read that needs one fails with
    /// [`PgEventsDetached`](crate::PgEventsDetached); event ids stay reserved. Refuses with
    /// [`StoreError::InvalidRequest`] the default partition, one whose range the log has not
    /// passed, and — unless `force` — one holding events a projection with a checkpoint in
    /// this store has not read. Takes the events table's lock for a moment (waiting at most
    /// the session's lock timeout, 10 s unless set). Run it as the schema's owner.
    pub async fn detach_log_partition(&self, name: &str, force: bool) -> Result<u64, StoreError> {
        archive::detach_or_attach(&self.inner.db, name, Some(force)).await
    }

    /// Attaches detached partition `name` again, returning how many events came back, at
    /// their positions (behind subscribers that read past them meanwhile).
    pub async fn attach_log_partition(&self, name: &str) -> Result<u64, StoreError> {
        archive::detach_or_attach(&self.inner.db, name, None).await
    }

    /// Creates the schema if needed and applies the embedded migrations it lacks, in one
    /// transaction under an advisory lock (processes migrating at once take turns). Refuses,
    /// changing nothing, when the migrations recorded in the database differ from this build's.
    ///
    /// Each migration runs in its own transaction (or, for `CREATE INDEX CONCURRENTLY`, none)
    /// and gives up on a table lock after [`PgConfig::migration_lock_timeout`] with
    /// [`StoreError::Timeout`] inside [`PgMigrationError::Store`]: run it again later. With
    /// nothing to apply it only reads, so the application role may call it too. A database
    /// migrated by a newer build is accepted unless it records a breaking migration
    /// ([`PgMigrationError::Incompatible`]). Also checks the log's order (see the crate docs
    /// on restores).
    ///
    /// Run it as the schema's owner; the application role then gets its privileges from
    /// [`grant_access`](Self::grant_access).
    pub async fn migrate(&self) -> Result<PgMigrationReport, PgMigrationError> {
        self.migrate_until(None).await
    }

    /// Like [`migrate`](Self::migrate), applying only the migrations up to `version`: for
    /// deploying a schema change in steps.
    pub async fn migrate_to(&self, version: u32) -> Result<PgMigrationReport, PgMigrationError> {
        self.migrate_until(Some(version)).await
    }

    async fn migrate_until(
        &self,
        target: Option<u32>,
    ) -> Result<PgMigrationReport, PgMigrationError> {
        let report = migrate(
            &self.inner.db.pool,
            &self.inner.db.schema,
            target,
            self.inner.migration_lock_timeout,
        )
        .instrument(tracing::info_span!("crossfold.migrate", schema = %self.inner.db.schema))
        .await?;
        // A migration may have added or dropped read indexes.
        read_index::refresh(&self.inner.db).await?;
        Ok(report)
    }

    /// Checks, changing nothing, that the schema has every migration this build needs and
    /// none it cannot work with: for application roles that may not migrate. Fails with
    /// [`PgMigrationError::Pending`] naming what is missing.
    pub async fn check_schema(&self) -> Result<PgMigrationReport, PgMigrationError> {
        check_schema(&self.inner.db.pool, &self.inner.db.schema).await
    }

    /// Where the schema's migrations stand — applied (with when), pending, newer — changing
    /// nothing: for `migrate --dry-run` and deploy scripts. Fails as
    /// [`migrate`](Self::migrate) would refuse (checksum mismatch, incompatible schema), or
    /// with [`PgMigrationError::Store`] when the database cannot be read.
    pub async fn migration_status(&self) -> Result<PgMigrationStatus, PgMigrationError> {
        status(&self.inner.db.pool, &self.inner.db.schema).await
    }

    /// Lets `role` use this store: read its tables and append through its functions, nothing
    /// more (no INSERT, UPDATE, DELETE or TRUNCATE on any table). Run by the schema's owner
    /// after [`migrate`](Self::migrate); later migrations extend the grant to what they add.
    pub async fn grant_access(&self, role: &str) -> Result<(), PgMigrationError> {
        grant_access(&self.inner.db.pool, &self.inner.db.schema, role).await
    }

    /// Checks that the log's transaction ids still sort after everything stored, and starts a
    /// new log epoch if the store was moved to another cluster or timeline (a restore, a
    /// failover) or its transaction counter went back. Returns whether it started one. Every
    /// new connection of the store and every session's first append does this already; an
    /// operator may run it after a restore to see the outcome.
    pub async fn check_log_order(&self) -> Result<bool, StoreError> {
        let client = self.inner.db.client().await?;
        check_log_order(&client, &self.inner.db.schema).await
    }

    /// Sets the event at `position` aside: every read skips it from now on. For an event the
    /// store cannot decode ([`PgUndecodableEvent`](crate::PgUndecodableEvent)), which would
    /// otherwise stop every subscriber at that position. Needs INSERT on the schema's `quarantined_events` table
    /// (the schema's owner). The event itself stays stored, unchanged.
    pub async fn quarantine(&self, position: Position, reason: &str) -> Result<(), StoreError> {
        read::quarantine(&self.inner.db, position, reason).await
    }

    /// Builds an optional read index ([`ReadIndex::Category`], [`ReadIndex::EventType`]) so
    /// that reads of the log filtered that way cost O(batch) from any position, at the price of
    /// one more index entry for every event appended from then on (see the operations guide
    /// for figures). Built with `CREATE INDEX CONCURRENTLY`: appends and reads go on meanwhile;
    /// the call returns when the index is ready (minutes on a large log) and this store's
    /// reads use it from then on, other processes' within half a minute. Replaces what an
    /// interrupted build left behind; `Ok(false)` when the index was there already. Takes
    /// turns with migrations. Run it as the schema's owner.
    pub async fn create_read_index(&self, index: ReadIndex) -> Result<bool, StoreError> {
        read_index::create(&self.inner.db, index)
            .instrument(tracing::info_span!("crossfold.create_read_index", schema = %self.inner.db.schema, %index))
            .await
    }

    /// Drops an optional read index (`DROP INDEX CONCURRENTLY`): appends stop paying for it,
    /// and reads filtered its way scan the log from their position instead (this store's at
    /// once, other processes' within half a minute; until then theirs may scan the whole
    /// category or type per read). `Ok(false)` when it was not there. Run it as the schema's
    /// owner.
    pub async fn drop_read_index(&self, index: ReadIndex) -> Result<bool, StoreError> {
        read_index::remove(&self.inner.db, index)
            .instrument(tracing::info_span!("crossfold.drop_read_index", schema = %self.inner.db.schema, %index))
            .await
    }

    /// Every optional read index: whether it is there, its size, and how many index scans
    /// used it since the server's statistics were reset (0 on a primary that has run a while:
    /// no read there filters that way). Also makes this store's reads follow what it finds.
    pub async fn read_indexes(&self) -> Result<Vec<PgReadIndex>, StoreError> {
        read_index::list(&self.inner.db).await
    }

    /// The migrations this build embeds, in order.
    pub fn migrations() -> &'static [PgMigration] {
        MIGRATIONS
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.db.schema
    }

    /// The connection pool, for work that must share the store's connections (for example
    /// a read model updated in the same database).
    pub fn pool(&self) -> &Pool {
        &self.inner.db.pool
    }

    /// Round-trips a trivial query and returns how long it took.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let client = self.inner.db.client().await?;
        client.simple_query("").await.map_err(classify)?;
        Ok(start.elapsed())
    }

    /// The pool's current state.
    pub fn pool_status(&self) -> PgPoolStatus {
        PgPoolStatus::from(self.inner.db.pool.status())
    }

    /// The pool as a health component of its own (`"pool"`), for a readiness answer that
    /// lists store, pool and listener separately; see [`PgPoolHealth`].
    pub fn pool_health(&self) -> PgPoolHealth {
        PgPoolHealth::new(self.inner.db.pool.clone(), self.inner.db.schema.clone())
    }

    /// The `LISTEN` connection as a health component of its own (`"listener"`); see
    /// [`PgListenerHealth`].
    pub fn listener_health(&self) -> PgListenerHealth {
        PgListenerHealth::new(self.inner.listener.clone())
    }

    /// Health: round-trip latency, pool state, whether the `LISTEN` connection is up, whether
    /// the server is a hot standby and how far its replay trails the primary, the
    /// oldest open append of this store (its pid and age) and the age of the oldest open writing
    /// transaction in the cluster. Subscriptions see no event committed after an append that is
    /// still open started, so a long-open append delays (never loses) their delivery; alert on
    /// its age. Other writing transactions do not delay them.
    ///
    /// Also sets the gauges [`POOL_CONNECTIONS`](crate::POOL_CONNECTIONS),
    /// [`OLDEST_APPEND_AGE_SECONDS`](crate::OLDEST_APPEND_AGE_SECONDS) and
    /// [`OLDEST_TRANSACTION_AGE_SECONDS`](crate::OLDEST_TRANSACTION_AGE_SECONDS) — on a hot
    /// standby only [`REPLAY_LAG_SECONDS`](crate::REPLAY_LAG_SECONDS), so that a store on the
    /// standby and one on the primary, of the same schema, never overwrite each other's. The
    /// store's [`HealthCheck`] turns the result into a status.
    pub async fn health(&self) -> Result<PgHealth, StoreError> {
        let result = health::check(&self.inner.db, &self.inner.listener, &self.inner.horizon).await;
        match &result {
            Ok(health) => self.metrics().health(health),
            Err(_) => self.metrics().pool(self.pool_status()),
        }
        result
    }

    /// The age beyond which an open append degrades health
    /// ([`PgConfig::long_transaction_threshold`]).
    pub fn long_transaction_threshold(&self) -> Duration {
        self.inner.long_transaction_threshold
    }

    /// Streams whose id starts with `prefix` (`""`: all), in id order, after `after` (for
    /// paging: pass the last stream of the previous page), at most `limit`. Streams that only
    /// ever were checked while absent (version 0) are not streams yet and are left out; so are
    /// system streams (`$...`) unless `system` is set.
    pub async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamId>,
        limit: usize,
        system: bool,
    ) -> Result<Vec<PgStreamInfo>, StoreError> {
        inspect::list_streams(&self.inner.db, prefix, after, limit, system).await
    }

    /// How many streams start with `prefix`, and how many events they hold together (system
    /// streams only when `system` is set). Reads every matching stream's row: O(matches).
    pub async fn count_streams(
        &self,
        prefix: &str,
        system: bool,
    ) -> Result<(u64, u64), StoreError> {
        inspect::count_streams(&self.inner.db, prefix, system).await
    }

    /// The event with id `id`, wherever it is; `None` when no such event is stored. An event
    /// that is committed but not yet visible to log readers (behind an open transaction) is
    /// found too. A stored event the store cannot decode fails with the store's usual
    /// [`PgUndecodableEvent`](crate::PgUndecodableEvent) error naming its position.
    pub async fn read_event(&self, id: EventId) -> Result<Option<RecordedEvent>, StoreError> {
        inspect::read_event(&self.inner.db, id).await
    }

    /// A position after which about the last `count` events of the log that pass `filter`'s
    /// streams, categories, event types and system-stream choice lie: reading the log after
    /// it shows the end of the log, as `tail` does. [`Position::START`] when the log holds no
    /// more than `count` such events. (Events committed but not visible yet count too, so a
    /// read right after may show a few fewer.)
    pub async fn position_before_last(
        &self,
        count: usize,
        filter: &LogFilter,
    ) -> Result<Position, StoreError> {
        inspect::position_before_last(&self.inner.db, count, filter).await
    }

    /// The plan of the statement [`read_all`](EventStore::read_all) runs for these arguments,
    /// executed with `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`, as a generic plan (what a
    /// prepared statement settles on) when `generic`, else as a custom plan for these values.
    /// For checking that a read costs what it should on a real log.
    #[doc(hidden)]
    pub async fn explain_read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
        generic: bool,
    ) -> Result<String, StoreError> {
        read::explain_read_all(&self.inner.db, after, limit, filter, generic).await
    }

    /// Appends each of `requests` atomically, all in one call of the group function (one
    /// transaction, one commit) whatever [`PgConfig::group_commit`] says, applied in the order
    /// given, and returns each one's outcome in order. For tests of the group function.
    #[doc(hidden)]
    pub async fn append_together(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Appended, StoreError>> {
        self.inner
            .appender
            .append_together(&self.inner.db, &self.inner.wakeup, requests)
            .await
    }

    /// Appends waiting for a group call: those that arrived while the calls group commit allows
    /// at once were all in flight (0 without group commit). For tests of group commit.
    #[doc(hidden)]
    pub fn group_commit_waiting(&self) -> usize {
        self.inner.appender.waiting()
    }

    /// An append, on the session of `turn` when given one, timed and counted.
    async fn appending(
        &self,
        turn: Option<&turns::Held>,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        let span = tracing::debug_span!(
            "crossfold.append",
            streams = request.streams.len(),
            events = request.event_count(),
            turn = turn.is_some()
        );
        let started = Instant::now();
        let client = turn.and_then(|held| held.client(&self.inner.turns));
        let result = self
            .inner
            .appender
            .append(&self.inner.db, &self.inner.wakeup, client, request)
            .instrument(span)
            .await;
        let finished = Instant::now();
        let metrics = self.metrics();
        metrics.record(StoreOperation::Append, started, finished, &result);
        if let Ok(appended) = &result {
            if metrics.appended(appended.len(), finished) {
                metrics.pool(self.pool_status());
            }
            if let Some(last) = appended.events.last() {
                archive::after_append(&self.inner.db, last.position.commit());
            }
        }
        result
    }

    fn metrics(&self) -> &StoreMetrics {
        self.inner
            .metrics
            .get_or_init(|| StoreMetrics::new(&self.inner.db.schema))
    }

    /// Times a call and counts its failure.
    async fn timed<T>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics()
            .record(operation, started, Instant::now(), &result);
        result
    }
}

impl EventStore for PgEventStore {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        let span = tracing::debug_span!("crossfold.read_streams", streams = reads.len());
        self.timed(
            StoreOperation::ReadStreams,
            read::read_streams(&self.inner.db, reads).instrument(span),
        )
        .await
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        self.appending(None, request).await
    }

    /// On the session that holds `turn`, which the append functions let through (migration
    /// 10). A turn this store did not hand out, or whose session has ended, is no turn here:
    /// the append is made as [`append`](EventStore::append) makes it.
    async fn append_in_turn(
        &self,
        turn: &StreamTurn,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        self.appending(turn.held::<turns::Held>(), request).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let span = tracing::debug_span!("crossfold.read_all", %after, limit);
        self.timed(
            StoreOperation::ReadAll,
            read::read_all(
                &self.inner.db,
                self.inner.visibility_wait,
                after,
                limit,
                filter,
            )
            .instrument(span),
        )
        .await
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        self.timed(
            StoreOperation::HeadPosition,
            read::head_position(&self.inner.db, self.inner.visibility_wait)
                .instrument(tracing::debug_span!("crossfold.head_position")),
        )
        .await
    }

    /// Session-level advisory locks, one per stream, in one round trip, on a connection of a
    /// small pool of their own (a quarter of the pool's size, at least one). See
    /// `docs/operations.md` (contention across nodes).
    async fn take_turn(&self, streams: &[StreamId]) -> Result<StreamTurn, StoreError> {
        turns::take(&self.inner.turns, streams)
            .instrument(tracing::debug_span!(
                "crossfold.take_turn",
                streams = streams.len()
            ))
            .await
    }

    /// The pool's size less an eighth (at least one connection), which is left to what else
    /// shares the pool: the `NOTIFY` that wakes other processes' subscribers after appends,
    /// subscriptions, projections and checkpoints built on this store, health checks. Each
    /// command execution uses one connection at a time, so executions admitted up to this limit
    /// do not wait for one behind each other.
    ///
    /// With [group commit](PgConfig::group_commit) on, four times that: appends no longer need
    /// a connection each (those beyond the calls in flight go together, in one call), and
    /// gathering them is what group commit is for; reads still take a connection each, briefly.
    fn concurrency_limit(&self) -> Option<usize> {
        let served = crate::config::served_connections(self.inner.db.pool.status().max_size);
        Some(if self.inner.appender.grouped() {
            served.saturating_mul(GROUPED_ADMISSION)
        } else {
            served
        })
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        let span = tracing::debug_span!("crossfold.wait_for_events", %after);
        // Subscribed before looking, so a wake-up between the look and the wait is not lost.
        let woken = self.inner.wakeup.subscribe();
        self.timed(
            StoreOperation::Wait,
            read::wait_for_events(&self.inner.db, after, timeout, woken).instrument(span),
        )
        .await
    }

    /// Reads `pg_locks` (every backend's locks) and at most `8 × limit` events behind the
    /// visibility horizon: meant for status reports, not for every read.
    async fn held_back(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Option<HeldBack>, StoreError> {
        read::held_back(&self.inner.db, after, filter, limit)
            .instrument(tracing::debug_span!("crossfold.held_back", %after))
            .await
    }
}

/// `Unhealthy` when the server does not answer; `Degraded` when the pool is exhausted, an
/// append of this store has been open (or the log's visibility horizon has stood still) longer
/// than [`PgConfig::long_transaction_threshold`](crate::PgConfig::long_transaction_threshold),
/// a hot standby's replay trails the primary by more than that threshold, or the `LISTEN`
/// connection is down (subscribers then fall back to polling); `Healthy` otherwise. Details: `latency_seconds`, `pool_max_size`, `pool_size`, `pool_available` and
/// `pool_waiting` (the pool as the check found it, its own connection not counted),
/// `listener_connected`, `oldest_append_pid` and `oldest_append_age_seconds` (null when no
/// open append holds the horizon), `oldest_transaction_age_seconds` (any writing transaction
/// of the cluster, informational; null when none is open or none is visible to the store's
/// role), `horizon_lag_transactions`, `horizon_age_seconds` (null unless the horizon stood
/// still since an earlier check), `in_recovery` (a hot standby), `replay_lag_seconds` and
/// `replay_lag_bytes` (null on a primary) and `long_transaction_threshold_seconds`;
/// `error_kind` when the check failed.
impl HealthCheck for PgEventStore {
    async fn check_health(&self) -> HealthReport {
        let started = Instant::now();
        // Taken before the check borrows a connection of its own.
        let pool = self.pool_status();
        let result = self.health().await;
        let mut report = health::assess(result, pool, self.long_transaction_threshold())
            .detail("schema", self.schema());
        report.checked_in = started.elapsed();
        report
    }
}

// Stores that share a store's pool and schema are built from it here, in the module that owns
// the store type, so that their own modules do not depend on it.
impl PgDeadlineStore {
    /// The deadlines of `store`'s schema (migrated to version 5 or later).
    pub fn new(store: &PgEventStore) -> Self {
        Self::over(store.pool().clone(), store.schema())
    }
}

impl PgCheckpoints {
    /// Checkpoints in the schema of `store`, sharing its connection pool.
    pub fn new(store: &PgEventStore) -> Self {
        Self::over(store.pool().clone(), store.schema())
    }

    /// Connects to the store `config` names (URL and schema) and opens its checkpoints: what an
    /// operator's tool needs to list and steer projections.
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        let store = PgEventStore::connect(config).await?;
        Ok(Self::new(&store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_index::ReadIndexSet;
    use crate::sql::{Sql, shape};
    use crossfold_core::{EventData, ExpectedVersion, Payload};

    /// Prepares each case's statement under its name and explains its execution with its
    /// arguments (a generic plan, under `force_generic_plan`); fails where the plan reads the
    /// events table with a sequential scan. Returns the plans.
    async fn explain_all(
        client: &deadpool_postgres::Object,
        cases: &[(String, &str, String)],
    ) -> Vec<String> {
        let mut plans = Vec::new();
        for (name, text, args) in cases {
            let types = if name.starts_with("read_all") {
                "(xid8, int8, int8, text[], text[], text[], xid8[])"
            } else {
                ""
            };
            client
                .batch_execute(&format!("PREPARE {name}{types} AS {text}"))
                .await
                .unwrap();
            let plan: Vec<String> = client
                .query(&format!("EXPLAIN EXECUTE {name}{args}"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let plan = plan.join("\n");
            // log_state is one row: scanning it is the cheapest way to read it.
            let events_scanned = plan
                .lines()
                .any(|l| l.contains("Seq Scan") && !l.contains("log_state"));
            assert!(!events_scanned, "{name}:\n{plan}");
            plans.push(plan);
        }
        plans
    }

    /// Every statement of [`Sql`], as the generic plan a prepared statement gets after a few
    /// executions, reads the events table through an index — never a sequential scan, which
    /// would make each call cost the size of the log — and each read of the log through the
    /// index of its driving key, for every set of optional read indexes the store can have. (Here rather than in `sql`: it needs a
    /// migrated store with events, and `sql` is below the store.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn generic_plans_use_the_indexes() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let schema = format!("cf_test_{}_plans", std::process::id());
        let config = PgConfig::from_url(&url)
            .unwrap()
            .schema(&schema)
            .pool_size(2);
        let store = PgEventStore::connect(config).await.unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url} ({e}); set DATABASE_URL to a server")
        });
        store.migrate().await.unwrap();
        for batch in 0..20 {
            let mut request = AppendRequest::new();
            for n in 0..100 {
                request = request.stream(
                    StreamId::new(format!("s-{batch}-{n}")).unwrap(),
                    ExpectedVersion::NoStream,
                    (0..10)
                        .map(|_| EventData::new("E", Payload::json(&b"{}"[..])))
                        .collect(),
                );
            }
            store.append(request).await.unwrap();
        }
        let client = store.pool().get().await.unwrap();
        client
            .batch_execute(&format!(
                "ANALYZE {schema}.events; ANALYZE {schema}.streams; \
                 SET plan_cache_mode = force_generic_plan"
            ))
            .await
            .unwrap();
        let sql = Sql::new(&schema);
        let reads = sql.stream_reads(true);
        let cases: Vec<(String, &str, String)> = vec![
            ("read_stream".into(), &reads.read_stream, "('s-1-1')".into()),
            ("read_one".into(), &reads.read_one, "('s-1-1', 2, 5)".into()),
            (
                "read_many".into(),
                &reads.read_many,
                "('{s-1-1,s-2-2}', '{0,0}', '{9,9}')".into(),
            ),
            ("head".into(), &sql.head, "('{}')".into()),
            ("probe".into(), &sql.probe, "('5', 0, '{}')".into()),
            (
                "existing_event".into(),
                sql.existing_event(true),
                "('{0190b4d2-0000-7000-8000-000000000000}')".into(),
            ),
            (
                "stream_behind".into(),
                &sql.stream_behind,
                "('{s-1-1,s-2-2}')".into(),
            ),
            ("quarantined".into(), &sql.quarantined, "('5', 1)".into()),
        ];
        explain_all(&client, &cases).await;

        // The reads of the log, for every set of optional read indexes, each in a schema that
        // has exactly those indexes (after migrating, it has none).
        // Each step: an index created (true) or dropped, and the indexes there afterwards.
        type Step<'a> = (Option<(ReadIndex, bool)>, &'a [ReadIndex]);
        let steps: [Step<'_>; 6] = [
            (None, &[]),
            (Some((ReadIndex::Category, true)), &[ReadIndex::Category]),
            (
                Some((ReadIndex::Stream, true)),
                &[ReadIndex::Category, ReadIndex::Stream],
            ),
            (Some((ReadIndex::EventType, true)), &ReadIndex::ALL),
            (
                Some((ReadIndex::Category, false)),
                &[ReadIndex::Stream, ReadIndex::EventType],
            ),
            (Some((ReadIndex::Stream, false)), &[ReadIndex::EventType]),
        ];
        for (step, (change, present)) in steps.into_iter().enumerate() {
            match change {
                Some((index, true)) => assert!(store.create_read_index(index).await.unwrap()),
                Some((index, false)) => assert!(store.drop_read_index(index).await.unwrap()),
                None => {}
            }
            let set = ReadIndexSet::of(present);
            client
                .batch_execute(&format!("ANALYZE {schema}.events"))
                .await
                .unwrap();
            let cases: Vec<(String, &str, String)> = (0..shape::COUNT)
                .map(|which| {
                    (
                        format!("read_all_{step}_{which}"),
                        sql.read_all(which, set),
                        "('5', 0, 100, '{s-1-1,s-2-2}', '{s}', '{E}', '{}')".to_owned(),
                    )
                })
                .collect();
            let plans = explain_all(&client, &cases).await;
            for (which, ((name, _, _), plan)) in cases.iter().zip(plans).enumerate() {
                // A bitmap scan has no order: every matching row would be read and sorted. Only
                // a scan bounded to the log's tail at or above the horizon (the probe for
                // pending transactions) or to one stream (a stream's read without the stream
                // index, O(events of the stream) by design) may use one.
                let lines: Vec<&str> = plan.lines().collect();
                let unbounded_bitmap = lines.iter().enumerate().any(|(i, l)| {
                    l.contains("Bitmap Index Scan")
                        && !lines.get(i + 1).is_some_and(|c| {
                            c.contains("transaction_id >= ") || c.contains("(stream_id = k")
                        })
                });
                assert!(!unbounded_bitmap, "{name}:\n{plan}");
                // The filter's driving key reads through its own index, where there is one.
                let index = if which & shape::STREAMS != 0 && set.contains(ReadIndex::Stream) {
                    "events_stream_log_idx"
                } else if which & shape::STREAMS != 0 {
                    "events_pkey"
                } else if which & shape::CATEGORIES != 0 && set.contains(ReadIndex::Category) {
                    "events_category_log_idx"
                } else if which & shape::TYPES != 0 && set.contains(ReadIndex::EventType) {
                    "events_type_log_idx"
                } else {
                    "events_log_idx"
                };
                assert!(
                    plan.contains(&format!("using {index}"))
                        || plan.contains(&format!("Bitmap Index Scan on {index}")),
                    "{name} ({present:?}):\n{plan}"
                );
            }
        }
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
