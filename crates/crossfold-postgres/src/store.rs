//! [`PgEventStore`]: the [`EventStore`] on PostgreSQL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossfold_core::metrics::StoreOperation;
use crossfold_core::{
    AppendRequest, Appended, EventStore, EventType, LogFilter, Position, RecordedEvent, StoreError,
    StreamEvents, StreamId, StreamRead, StreamVersion,
};
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio::sync::watch;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Socket};
use tracing::Instrument;
use uuid::Uuid;

use crate::append::{Encoded, Refusal, Written, refusal, stream_behind};
use crate::config::PgConfig;
use crate::error::{PgUndecodableEvent, classify, classify_pool, corrupt};
use crate::health::{HorizonWatch, PgHealth, PgListenerHealth, PgPoolHealth, PgPoolStatus};
use crate::metrics::StoreMetrics;
use crate::migrate::{
    MIGRATIONS, PgMigration, PgMigrationError, PgMigrationReport, PgMigrationStatus,
    check_log_order, check_schema, grant_access, migrate, status,
};
use crate::notify::{Notifier, spawn_listener, wake};
use crate::read::{Decoder, get, position};
use crate::sql::{Sql, shape};
use crate::types::Xid8;

/// The PostgreSQL event store.
///
/// Cheap to clone: clones share one connection pool, one `LISTEN` connection and one
/// notifier. The background tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: String,
    sql: Sql,
    /// Bumped whenever events may have become readable (a local append or a notification).
    wake: Arc<watch::Sender<u64>>,
    notifier: Arc<Notifier>,
    listener_connected: Arc<AtomicBool>,
    listening: bool,
    visibility_wait: Duration,
    long_transaction_threshold: Duration,
    migration_lock_timeout: Duration,
    /// Where the visibility horizon stood at earlier health checks, to tell how long it has
    /// not moved.
    horizon: HorizonWatch,
    /// Resolved at the first call rather than at connect, so a recorder installed in between
    /// still receives them.
    metrics: OnceLock<StoreMetrics>,
    /// Dropping it stops the background tasks.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("schema", &self.inner.schema)
            .field("pool", &self.inner.pool.status())
            .finish_non_exhaustive()
    }
}

/// The parameter types of every `read_all` statement: position, limit, streams, categories,
/// event types.
const READ_ALL_TYPES: [Type; 6] = [
    Type::XID8,
    Type::INT8,
    Type::INT8,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
];

/// The longest pause between two looks at a log whose new events are committed but still
/// behind the visibility horizon.
const MAX_HORIZON_POLL: Duration = Duration::from_millis(25);

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
            .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
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
        // Every new connection checks the log's order first (see migration 0002), so a store
        // restored into another cluster starts a new log epoch before anything reads it. The
        // check is skipped, not failed, where the schema is not migrated yet or not readable.
        let check = format!(
            "SELECT epoch, advanced FROM {}.check_log_order()",
            crate::sql::quoted(&config.schema)
        );
        let schema = config.schema.clone();
        let pool = Pool::builder(manager)
            .post_create(Hook::async_fn(move |client, _| {
                let check = check.clone();
                let schema = schema.clone();
                Box::pin(async move {
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
                            tracing::debug!(error = %e, schema, "crossfold: log order not checked");
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
        drop(pool.get().await.map_err(classify_pool)?);

        let sql = Sql::new(&config.schema);
        let (shutdown, shutdown_rx) = watch::channel(());
        let wake_tx = Arc::new(watch::channel(0u64).0);
        let listener_connected = Arc::new(AtomicBool::new(false));
        if config.listen {
            spawn_listener(
                config.listen_driver_config(),
                tls,
                sql.channel.clone(),
                wake_tx.clone(),
                listener_connected.clone(),
                shutdown_rx.clone(),
            );
        }
        let notifier = Notifier::spawn(
            pool.clone(),
            sql.notify.clone(),
            sql.channel.clone(),
            config.notify_interval,
            shutdown_rx,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                schema: config.schema,
                sql,
                wake: wake_tx,
                notifier,
                listener_connected,
                listening: config.listen,
                visibility_wait: config.visibility_wait,
                long_transaction_threshold: config.long_transaction_threshold,
                migration_lock_timeout: config.migration_lock_timeout,
                horizon: HorizonWatch::default(),
                metrics: OnceLock::new(),
                _shutdown: shutdown,
            }),
        })
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
        migrate(
            &self.inner.pool,
            &self.inner.schema,
            target,
            self.inner.migration_lock_timeout,
        )
        .instrument(tracing::info_span!("crossfold.migrate", schema = %self.inner.schema))
        .await
    }

    /// Checks, changing nothing, that the schema has every migration this build needs and
    /// none it cannot work with: for application roles that may not migrate. Fails with
    /// [`PgMigrationError::Pending`] naming what is missing.
    pub async fn check_schema(&self) -> Result<PgMigrationReport, PgMigrationError> {
        check_schema(&self.inner.pool, &self.inner.schema).await
    }

    /// Where the schema's migrations stand — applied (with when), pending, newer — changing
    /// nothing: for `migrate --dry-run` and deploy scripts. Fails as
    /// [`migrate`](Self::migrate) would refuse (checksum mismatch, incompatible schema), or
    /// with [`PgMigrationError::Store`] when the database cannot be read.
    pub async fn migration_status(&self) -> Result<PgMigrationStatus, PgMigrationError> {
        status(&self.inner.pool, &self.inner.schema).await
    }

    /// Lets `role` use this store: read its tables and append through its functions, nothing
    /// more (no INSERT, UPDATE, DELETE or TRUNCATE on any table). Run by the schema's owner
    /// after [`migrate`](Self::migrate); later migrations extend the grant to what they add.
    pub async fn grant_access(&self, role: &str) -> Result<(), PgMigrationError> {
        grant_access(&self.inner.pool, &self.inner.schema, role).await
    }

    /// Checks that the log's transaction ids still sort after everything stored, and starts a
    /// new log epoch if the store was moved to another cluster or timeline (a restore, a
    /// failover) or its transaction counter went back. Returns whether it started one. Every
    /// new connection of the store and every session's first append does this already; an
    /// operator may run it after a restore to see the outcome.
    pub async fn check_log_order(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        check_log_order(&client, &self.inner.schema).await
    }

    /// Sets the event at `position` aside: every read skips it from now on. For an event the
    /// store cannot decode ([`PgUndecodableEvent`]), which would otherwise stop every
    /// subscriber at that position. Needs INSERT on the schema's `quarantined_events` table
    /// (the schema's owner). The event itself stays stored, unchanged.
    pub async fn quarantine(&self, position: Position, reason: &str) -> Result<(), StoreError> {
        let (commit, sequence) = position_params(position);
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO {}.quarantined_events (transaction_id, sequence, reason) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    crate::sql::quoted(&self.inner.schema)
                ),
                &[&commit, &sequence, &reason],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// `Ok` when `error` is an undecodable event that was quarantined (the read skips it);
    /// the error otherwise.
    async fn skip_quarantined(&self, error: StoreError) -> Result<(), StoreError> {
        let Some(bad) = PgUndecodableEvent::find(&error) else {
            return Err(error);
        };
        let (commit, sequence) = position_params(bad.position());
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.quarantined)
            .await
            .map_err(classify)?;
        match client.query_opt(&statement, &[&commit, &sequence]).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(error),
            Err(e) => Err(classify(e)),
        }
    }

    /// The migrations this build embeds, in order.
    pub fn migrations() -> &'static [PgMigration] {
        MIGRATIONS
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool, for work that must share the store's connections (for example
    /// a read model updated in the same database).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Round-trips a trivial query and returns how long it took.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let client = self.client().await?;
        client.simple_query("").await.map_err(classify)?;
        Ok(start.elapsed())
    }

    /// The pool's current state.
    pub fn pool_status(&self) -> PgPoolStatus {
        PgPoolStatus::from(self.inner.pool.status())
    }

    /// The pool as a health component of its own (`"pool"`), for a readiness answer that
    /// lists store, pool and listener separately; see [`PgPoolHealth`].
    pub fn pool_health(&self) -> PgPoolHealth {
        PgPoolHealth(self.clone())
    }

    /// The `LISTEN` connection as a health component of its own (`"listener"`); see
    /// [`PgListenerHealth`].
    pub fn listener_health(&self) -> PgListenerHealth {
        PgListenerHealth(self.clone())
    }

    /// Whether the store listens for notifications, and whether that connection is up now.
    pub(crate) fn listener_state(&self) -> (bool, bool) {
        (
            self.inner.listening,
            self.inner.listener_connected.load(Ordering::Relaxed),
        )
    }

    /// Health: round-trip latency, pool state, whether the `LISTEN` connection is up, and the
    /// age of the oldest open writing transaction in the cluster. Subscriptions only see events
    /// of transactions that started writing before every open one, so a long-open transaction
    /// delays (never loses) their delivery; alert on that age.
    ///
    /// Also sets the gauges [`POOL_CONNECTIONS`](crate::POOL_CONNECTIONS) and
    /// [`OLDEST_TRANSACTION_AGE_SECONDS`](crate::OLDEST_TRANSACTION_AGE_SECONDS). The store's
    /// [`HealthCheck`](crossfold_core::HealthCheck) turns the result into a status.
    pub async fn health(&self) -> Result<PgHealth, StoreError> {
        let result = self.query_health().await;
        match &result {
            Ok(health) => self.metrics().health(health),
            Err(_) => self.metrics().pool(self.pool_status()),
        }
        result
    }

    /// The age beyond which an open writing transaction degrades health
    /// ([`PgConfig::long_transaction_threshold`]).
    pub fn long_transaction_threshold(&self) -> Duration {
        self.inner.long_transaction_threshold
    }

    async fn query_health(&self) -> Result<PgHealth, StoreError> {
        let start = Instant::now();
        let client = self.client().await?;
        // Only transactions holding a transaction id hold the horizon back. Other roles'
        // sessions show in pg_stat_activity only with pg_read_all_stats; the snapshot's bounds
        // are readable by every role, and tell how far the horizon trails.
        let statement = client
            .prepare_cached(
                "SELECT extract(epoch FROM now() - least( \
                     (SELECT min(xact_start) FROM pg_stat_activity \
                      WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()), \
                     (SELECT min(prepared) FROM pg_prepared_xacts)))::float8, \
                        pg_snapshot_xmin(s), pg_snapshot_xmax(s) \
                 FROM pg_current_snapshot() AS s",
            )
            .await
            .map_err(classify)?;
        let row = client.query_one(&statement, &[]).await.map_err(classify)?;
        let latency = start.elapsed();
        // Returned first, so the pool state does not count the health check's own connection.
        drop(client);
        let age: Option<f64> = get(&row, 0)?;
        let xmin: Xid8 = get(&row, 1)?;
        let xmax: Xid8 = get(&row, 2)?;
        let (horizon_lag, horizon_age) = self.inner.horizon.observe(xmin.0, xmax.0, start);
        Ok(PgHealth {
            latency,
            pool: self.pool_status(),
            listener_connected: !self.inner.listening
                || self.inner.listener_connected.load(Ordering::Relaxed),
            oldest_transaction_age: age
                .filter(|s| s.is_finite())
                .map(|s| Duration::from_secs_f64(s.max(0.0))),
            horizon_lag,
            horizon_age,
        })
    }

    fn metrics(&self) -> &StoreMetrics {
        self.inner
            .metrics
            .get_or_init(|| StoreMetrics::new(&self.inner.schema))
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

    async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(classify_pool)
    }

    async fn run_append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        request.validate()?;
        if request.streams.is_empty() {
            return Ok(Appended::default());
        }
        let written = self.call_append(&request).await?;
        if written.wrote_events() {
            wake(&self.inner.wake);
            self.inner.notifier.poke();
        }
        written.record(request)
    }

    /// One call of the append function: what it wrote, or why it refused.
    async fn call_append(&self, request: &AppendRequest) -> Result<Written, StoreError> {
        let encoded = Encoded::new(request)?;
        let metadata = encoded.metadata_params();
        let client = self.client().await?;
        let single = encoded.single_params(&metadata);
        let sql = &self.inner.sql;
        let statement = client
            .prepare_cached(if single.is_some() {
                &sql.append_one
            } else {
                &sql.append
            })
            .await
            .map_err(classify)?;
        let result = match &single {
            Some(params) => client.query_one(&statement, params).await,
            None => {
                client
                    .query_one(&statement, &encoded.params(&metadata))
                    .await
            }
        };
        match result {
            Ok(row) => encoded.written(&row, single.is_some()),
            Err(e) => match refusal(e, request) {
                Refusal::Explained(e) => Err(e),
                Refusal::Other(e) => Err(classify(e)),
                Refusal::DuplicateUnknown => {
                    Err(self.find_duplicate(&client, encoded.event_ids()).await)
                }
                Refusal::StreamBehind(index) => {
                    let Some(stream) = request.streams.get(index).map(|s| s.stream.as_str()) else {
                        return Err(corrupt("a conflict on a stream outside the request"));
                    };
                    let head = async {
                        let statement = client.prepare_cached(&self.inner.sql.stream_head).await?;
                        client.query_one(&statement, &[&stream]).await
                    }
                    .await
                    .map_err(classify)?;
                    Err(stream_behind(request, index, get(&head, 0)?))
                }
            },
        }
    }

    /// Which of `ids` is stored, when the server's error did not say.
    async fn find_duplicate(&self, client: &Object, ids: &[Uuid]) -> StoreError {
        let found = async {
            let statement = client
                .prepare_cached(&self.inner.sql.existing_event)
                .await?;
            client.query_opt(&statement, &[&ids]).await
        }
        .await;
        match found {
            Ok(Some(row)) => match get::<Uuid>(&row, 0).map(crossfold_core::EventId::from_uuid) {
                Ok(Ok(id)) => StoreError::DuplicateEvent(id),
                _ => corrupt("a duplicate event id could not be read back"),
            },
            Ok(None) => corrupt("an event id was reported as duplicate but is not stored"),
            Err(e) => classify(e),
        }
    }

    async fn run_read_streams(
        &self,
        reads: &[StreamRead],
    ) -> Result<Vec<StreamEvents>, StoreError> {
        match reads {
            [] => Ok(Vec::new()),
            [one] => Ok(vec![self.read_one(one).await?]),
            _ => self.read_many(reads).await,
        }
    }

    async fn read_one(&self, read: &StreamRead) -> Result<StreamEvents, StoreError> {
        let whole = read.after.is_empty() && read.limit == usize::MAX;
        let client = self.client().await?;
        let sql = &self.inner.sql;
        let statement = client
            .prepare_cached(if whole {
                &sql.read_stream
            } else {
                &sql.read_one
            })
            .await
            .map_err(classify)?;
        let (after, limit) = (version_param(read.after)?, limit_param(read.limit));
        let stream = read.stream.as_str();
        let rows = if whole {
            client.query(&statement, &[&stream]).await
        } else {
            client.query(&statement, &[&stream, &after, &limit]).await
        }
        .map_err(classify)?;
        drop(client);
        let mut decoder = Decoder::for_stream(read.stream.clone());
        let mut version = StreamVersion::EMPTY;
        let mut events = Vec::with_capacity(rows.len());
        let at = if whole { 0 } else { 1 };
        for row in &rows {
            if !whole {
                version = stream_version(row, 0)?;
            }
            match decoder.decode(row, at) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(e) => self.skip_quarantined(e).await?,
            }
        }
        if whole {
            version = events
                .last()
                .map_or(StreamVersion::EMPTY, |e| e.stream_version);
        }
        Ok(StreamEvents {
            stream: read.stream.clone(),
            version,
            events,
        })
    }

    async fn read_many(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        let streams: Vec<&str> = reads.iter().map(|r| r.stream.as_str()).collect();
        let afters = reads
            .iter()
            .map(|r| version_param(r.after))
            .collect::<Result<Vec<_>, _>>()?;
        let limits: Vec<i64> = reads.iter().map(|r| limit_param(r.limit)).collect();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.read_many)
            .await
            .map_err(classify)?;
        let rows = client
            .query(&statement, &[&streams, &afters, &limits])
            .await
            .map_err(classify)?;
        drop(client);
        let mut out: Vec<StreamEvents> = reads
            .iter()
            .map(|r| StreamEvents {
                stream: r.stream.clone(),
                version: StreamVersion::EMPTY,
                events: Vec::new(),
            })
            .collect();
        let mut decoder = Decoder::default();
        for row in &rows {
            let ord: i64 = get(row, 0)?;
            let slot = usize::try_from(ord)
                .ok()
                .and_then(|o| o.checked_sub(1))
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| corrupt(format!("read returned stream number {ord}")))?;
            slot.version = stream_version(row, 1)?;
            match decoder.decode(row, 2) {
                Ok(Some(event)) => slot.events.push(event),
                Ok(None) => {}
                Err(e) => self.skip_quarantined(e).await?,
            }
        }
        Ok(out)
    }

    async fn run_read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let args = ReadAllArgs::new(after, limit, filter);
        let text = &self.inner.sql.read_all[args.shape];
        let params = args.params();
        let mut visibility = VisibilityWait::new(self.inner.visibility_wait);
        loop {
            let client = self.client().await?;
            // Typed, so the shapes that leave some filter parameters unused prepare too.
            let statement = client
                .prepare_typed_cached(text, &READ_ALL_TYPES)
                .await
                .map_err(classify)?;
            let rows = client.query(&statement, &params).await.map_err(classify)?;
            drop(client);
            let mut decoder = Decoder::default();
            let mut events = Vec::with_capacity(rows.len());
            let mut read = 0;
            for row in &rows {
                match decoder.decode(row, 2) {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => continue,
                    Err(e) => self.skip_quarantined(e).await?,
                }
                read += 1;
            }
            if read < limit
                && let Some(row) = rows.first()
                && visibility.must_wait(row)?
                && visibility.pause().await
            {
                continue;
            }
            // The lateral join keeps the inner ORDER BY; sorting an ordered batch is a
            // single pass, and keeps the order a guarantee rather than a plan detail.
            if !events.is_sorted_by_key(|e| e.position) {
                events.sort_by_key(|e| e.position);
            }
            return Ok(events);
        }
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
        let args = ReadAllArgs::new(after, limit, filter);
        let text = format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
            self.inner.sql.read_all[args.shape]
        );
        let client = self.client().await?;
        let mode = if generic {
            "force_generic_plan"
        } else {
            "force_custom_plan"
        };
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .map_err(classify)?;
        let statement = client.prepare_typed(&text, &READ_ALL_TYPES).await;
        let result = match statement {
            Ok(statement) => client.query(&statement, &args.params()).await,
            Err(e) => Err(e),
        };
        client
            .batch_execute("RESET plan_cache_mode")
            .await
            .map_err(classify)?;
        let rows = result.map_err(classify)?;
        let mut plan = String::new();
        for row in &rows {
            let line: serde_json::Value = get(row, 0)?;
            plan.push_str(&line.to_string());
        }
        Ok(plan)
    }

    async fn run_head(&self) -> Result<Position, StoreError> {
        let mut visibility = VisibilityWait::new(self.inner.visibility_wait);
        loop {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&self.inner.sql.head)
                .await
                .map_err(classify)?;
            let row = client.query_one(&statement, &[]).await.map_err(classify)?;
            drop(client);
            if visibility.must_wait(&row)? && visibility.pause().await {
                continue;
            }
            return match get::<Option<Xid8>>(&row, 2)? {
                Some(_) => position(&row, 2),
                None => Ok(Position::START),
            };
        }
    }

    /// Whether events after `after` are visible, and whether any are committed at all.
    async fn probe(&self, after: Position) -> Result<(bool, bool), StoreError> {
        let (commit, sequence) = position_params(after);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.probe)
            .await
            .map_err(classify)?;
        let row = client
            .query_opt(&statement, &[&commit, &sequence])
            .await
            .map_err(classify)?;
        match row {
            Some(row) => Ok((get(&row, 0)?, true)),
            None => Ok((false, false)),
        }
    }

    async fn run_wait(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribed before looking, so a wake-up between the look and the wait is not lost.
        let mut woken = self.inner.wake.subscribe();
        let mut horizon_poll = Duration::from_millis(1);
        loop {
            let (visible, committed) = self.probe(after).await?;
            if visible {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            if committed {
                // Committed, but an older transaction is still open somewhere: the horizon
                // usually passes within a millisecond or two, unless that transaction is long.
                tokio::time::sleep(horizon_poll.min(deadline - now)).await;
                horizon_poll = (horizon_poll * 2).min(MAX_HORIZON_POLL);
                continue;
            }
            match tokio::time::timeout_at(deadline, woken.changed()).await {
                Ok(Ok(())) => {
                    woken.borrow_and_update();
                }
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
        }
    }
}

/// Bounded waiting for committed events to pass the visibility horizon, so a read sees what
/// committed before it started (read-your-writes). It waits only for the transactions that
/// were already running when the read started (the newest committed-but-invisible transaction
/// the first look found), never for later commits, so steady traffic cannot keep it waiting;
/// and at most `limit`, after which the read returns what is visible and the rest follows
/// later (never lost).
struct VisibilityWait {
    deadline: tokio::time::Instant,
    pause: Duration,
    /// The newest transaction whose committed events the first look could not see yet.
    target: Option<Option<Xid8>>,
}

impl VisibilityWait {
    fn new(limit: Duration) -> Self {
        Self {
            deadline: tokio::time::Instant::now() + limit,
            pause: Duration::from_millis(1),
            target: None,
        }
    }

    /// Whether the events committed before the first look are still not all visible, from a
    /// row whose first two columns are the horizon and the newest pending transaction.
    fn must_wait(&mut self, row: &tokio_postgres::Row) -> Result<bool, StoreError> {
        let horizon: Xid8 = get(row, 0)?;
        if self.target.is_none() {
            self.target = Some(get::<Option<Xid8>>(row, 1)?);
        }
        Ok(matches!(self.target, Some(Some(target)) if horizon <= target))
    }

    /// Sleeps before the next look; `false` once the time is up.
    async fn pause(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause.min(self.deadline - now)).await;
        self.pause = (self.pause * 2).min(MAX_HORIZON_POLL);
        true
    }
}

/// The parameters of a `read_all` statement, and which statement (the filter's shape).
struct ReadAllArgs<'a> {
    shape: usize,
    commit: Xid8,
    sequence: i64,
    limit: i64,
    streams: Option<Vec<&'a str>>,
    categories: Option<Vec<&'a str>>,
    types: Option<Vec<&'a str>>,
}

impl<'a> ReadAllArgs<'a> {
    fn new(after: Position, limit: usize, filter: &'a LogFilter) -> Self {
        let (commit, sequence) = position_params(after);
        let streams = keys(
            filter
                .streams
                .as_ref()
                .map(|s| s.iter().map(StreamId::as_str).collect()),
        );
        let categories = keys(
            filter
                .categories
                .as_ref()
                .map(|c| c.iter().map(String::as_str).collect()),
        );
        let types = keys(
            filter
                .event_types
                .as_ref()
                .map(|t| t.iter().map(EventType::as_str).collect()),
        );
        Self {
            shape: usize::from(streams.is_some()) * shape::STREAMS
                + usize::from(categories.is_some()) * shape::CATEGORIES
                + usize::from(types.is_some()) * shape::TYPES
                + usize::from(streams.is_none() && !filter.system_streams) * shape::NO_SYSTEM,
            commit,
            sequence,
            limit: limit_param(limit),
            streams,
            categories,
            types,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.commit,
            &self.sequence,
            &self.limit,
            &self.streams,
            &self.categories,
            &self.types,
        ]
    }
}

/// Each key of a filter once: the read goes key by key.
fn keys(items: Option<Vec<&str>>) -> Option<Vec<&str>> {
    items.map(|mut v| {
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// A stream version column.
fn stream_version(row: &tokio_postgres::Row, at: usize) -> Result<StreamVersion, StoreError> {
    let v: i64 = get(row, at)?;
    StreamVersion::try_from_i64(v).map_err(|e| corrupt(format!("stream version: {e}")))
}

fn version_param(v: StreamVersion) -> Result<i64, StoreError> {
    i64::try_from(v.get())
        .map_err(|_| StoreError::InvalidRequest(format!("stream version {v} is out of range")))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A position as the `(xid8, bigint)` pair it is compared with. Sequences above `i64::MAX` do
/// not exist, so clamping keeps "after" meaning "after everything".
fn position_params(p: Position) -> (Xid8, i64) {
    (
        Xid8(p.commit()),
        i64::try_from(p.sequence()).unwrap_or(i64::MAX),
    )
}

impl EventStore for PgEventStore {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        let span = tracing::debug_span!("crossfold.read_streams", streams = reads.len());
        self.timed(
            StoreOperation::ReadStreams,
            self.run_read_streams(reads).instrument(span),
        )
        .await
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        let span = tracing::debug_span!(
            "crossfold.append",
            streams = request.streams.len(),
            events = request.event_count()
        );
        let started = Instant::now();
        let result = self.run_append(request).instrument(span).await;
        let finished = Instant::now();
        let metrics = self.metrics();
        metrics.record(StoreOperation::Append, started, finished, &result);
        if let Ok(appended) = &result
            && metrics.appended(appended.len(), finished)
        {
            metrics.pool(self.pool_status());
        }
        result
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
            self.run_read_all(after, limit, filter).instrument(span),
        )
        .await
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        self.timed(
            StoreOperation::HeadPosition,
            self.run_head()
                .instrument(tracing::debug_span!("crossfold.head_position")),
        )
        .await
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        let span = tracing::debug_span!("crossfold.wait_for_events", %after);
        self.timed(
            StoreOperation::Wait,
            self.run_wait(after, timeout).instrument(span),
        )
        .await
    }
}
