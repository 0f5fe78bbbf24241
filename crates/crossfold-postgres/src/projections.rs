//! Projections' checkpoints, leases, control state and dead letters in the store's schema
//! (migration 4), with the checkpoint committed in the read model's transaction.

use std::fmt;
use std::time::Duration;

use crossfold_core::checkpoint::{
    CheckpointCommit, CheckpointError, ControlRequest, DeadLetter, Lease, Leases,
    ProjectionControl, ProjectionRecord, ProjectionStatus, UnitOfWork,
};
use crossfold_core::{EventId, Position, StoreError, StreamId, StreamVersion, Timestamp};
use deadpool_postgres::{ClientWrapper, Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use crate::error::{classify, classify_pool, corrupt};
use crate::sql::quoted;

/// A projection's transaction: the handler writes its read model through
/// [`client`](Self::client), and the runner commits the checkpoint in the same transaction.
///
/// The transaction runs at READ COMMITTED on a connection of the store's pool. A unit dropped
/// without commit (a handler error, a crash of the task) takes its connection out of the pool
/// and closes it, so the server rolls it back.
pub struct PgUnit {
    client: Option<Object>,
}

impl fmt::Debug for PgUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUnit")
            .field("open", &self.client.is_some())
            .finish()
    }
}

impl PgUnit {
    /// The connection, inside the transaction: write the read model through it (its
    /// `prepare_cached` keeps statements per connection).
    pub fn client(&self) -> Result<&ClientWrapper, StoreError> {
        self.client
            .as_deref()
            .ok_or_else(|| StoreError::Backend("the projection's transaction has ended".into()))
    }

    fn take(&mut self) -> Option<Object> {
        self.client.take()
    }
}

impl Drop for PgUnit {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Closing the connection rolls the transaction back; back in the pool, it would
            // hand the open transaction to the next caller.
            drop(Object::take(client));
        }
    }
}

/// Checkpoints, leases, control state and dead letters of projections in PostgreSQL, in the
/// schema of a [`PgEventStore`](crate::PgEventStore) (migration 4 creates the tables).
///
/// It is also the control API an operator's tool needs: open it with
/// [`connect`](Self::connect) from a URL naming the schema, then
/// [`list`](ProjectionControl::list), [`get`](ProjectionControl::get) and
/// [`request`](ProjectionControl::request) a pause, resume, stop, reset or rebuild.
#[derive(Clone)]
pub struct PgCheckpoints {
    pool: Pool,
    schema: String,
    unit_idle_timeout: Duration,
}

impl fmt::Debug for PgCheckpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCheckpoints")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

const RECORD: &str = "p.name, p.position_commit::text, p.position_sequence, p.generation, \
     p.serving_generation, p.desired, p.replay, p.control_seq, \
     CASE WHEN p.lease_expires_at > now() THEN p.lease_owner END, \
     CASE WHEN p.lease_expires_at > now() \
          THEN (extract(epoch FROM p.lease_expires_at) * 1000000)::bigint END, \
     p.lease_token, p.status, \
     (SELECT count(*) FROM {s}.projection_dead_letters d WHERE d.projection = p.name)";

fn millis(ttl: Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

fn int(value: u64, what: &str) -> Result<i64, CheckpointError> {
    i64::try_from(value)
        .map_err(|_| CheckpointError::Store(corrupt(format!("{what} {value} is out of range"))))
}

fn uint(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("stored {what} {value} is negative")))
}

fn db(error: tokio_postgres::Error) -> CheckpointError {
    CheckpointError::Store(classify(error))
}

fn record(row: &Row) -> Result<ProjectionRecord, StoreError> {
    let get = |e: tokio_postgres::Error| corrupt(format!("projection row: {e}"));
    let name: String = row.try_get(0).map_err(get)?;
    let commit: String = row.try_get(1).map_err(get)?;
    let mut r = ProjectionRecord::new(name);
    r.position = Position::new(
        commit
            .parse()
            .map_err(|_| corrupt(format!("stored position commit {commit:?}")))?,
        uint(row.try_get(2).map_err(get)?, "position sequence")?,
    );
    r.generation = uint(row.try_get(3).map_err(get)?, "generation")?;
    r.serving_generation = uint(row.try_get(4).map_err(get)?, "serving generation")?;
    let desired: String = row.try_get(5).map_err(get)?;
    r.desired = desired
        .parse()
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    let replay: Option<String> = row.try_get(6).map_err(get)?;
    r.replay = replay
        .map(|s| s.parse())
        .transpose()
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    r.control_seq = uint(row.try_get(7).map_err(get)?, "control sequence")?;
    r.lease_owner = row.try_get(8).map_err(get)?;
    let expires: Option<i64> = row.try_get(9).map_err(get)?;
    r.lease_expires_at = expires.map(Timestamp::from_unix_micros);
    r.lease_token = uint(row.try_get(10).map_err(get)?, "lease token")?;
    let status: serde_json::Value = row.try_get(11).map_err(get)?;
    // A report this build cannot read (written by another version) reads as no report.
    r.status = serde_json::from_value::<ProjectionStatus>(status).unwrap_or_default();
    r.dead_letters = uint(row.try_get(12).map_err(get)?, "dead letter count")?;
    Ok(r)
}

impl PgCheckpoints {
    /// Checkpoints in `schema`, through `pool` (see `PgCheckpoints::new` with the store).
    pub(crate) fn over(pool: Pool, schema: &str) -> Self {
        Self {
            pool,
            schema: quoted(schema),
            unit_idle_timeout: Duration::from_secs(5),
        }
    }

    /// How long a projection's transaction may sit idle — its process frozen, cut off, or
    /// busy elsewhere — before the server ends it (`idle_in_transaction_session_timeout`,
    /// default 5 s). It bounds how long a stale owner's locks can hold up the process that
    /// took its lease over: keep it below the runner's lease time to live.
    pub fn unit_idle_timeout(mut self, timeout: Duration) -> Self {
        // PostgreSQL takes the setting in milliseconds as a 32-bit integer.
        self.unit_idle_timeout = timeout
            .max(Duration::from_millis(1))
            .min(Duration::from_millis(i32::MAX as u64));
        self
    }

    async fn connection(&self) -> Result<Object, CheckpointError> {
        self.pool
            .get()
            .await
            .map_err(|e| CheckpointError::Store(classify_pool(e)))
    }

    fn sql(&self, sql: &str) -> String {
        sql.replace("{s}", &self.schema)
    }

    async fn ensure(&self, client: &Object, name: &str) -> Result<(), CheckpointError> {
        client
            .execute(
                &self.sql("INSERT INTO {s}.projections (name) VALUES ($1) ON CONFLICT DO NOTHING"),
                &[&name],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn one(
        &self,
        client: &Object,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<ProjectionRecord>, CheckpointError> {
        let row = client.query_opt(&self.sql(sql), params).await.map_err(db)?;
        Ok(row.as_ref().map(record).transpose()?)
    }
}

impl ProjectionControl for PgCheckpoints {
    async fn list(&self) -> Result<Vec<ProjectionRecord>, CheckpointError> {
        let client = self.connection().await?;
        let rows = client
            .query(
                &self.sql(&format!(
                    "SELECT {RECORD} FROM {{s}}.projections p ORDER BY p.name"
                )),
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    async fn get(&self, name: &str) -> Result<Option<ProjectionRecord>, CheckpointError> {
        let client = self.connection().await?;
        self.one(
            &client,
            &format!("SELECT {RECORD} FROM {{s}}.projections p WHERE p.name = $1"),
            &[&name],
        )
        .await
    }

    async fn request(
        &self,
        name: &str,
        request: ControlRequest,
    ) -> Result<ProjectionRecord, CheckpointError> {
        let desired = request.desired().map(|d| d.as_str());
        let replay = request.replay().map(|r| r.as_str());
        let client = self.connection().await?;
        self.ensure(&client, name).await?;
        self.one(
            &client,
            &format!(
                "UPDATE {{s}}.projections p SET desired = coalesce($2, p.desired), \
                 replay = coalesce($3, p.replay), control_seq = p.control_seq + 1, \
                 updated_at = now() WHERE p.name = $1 RETURNING {RECORD}"
            ),
            &[&name, &desired, &replay],
        )
        .await?
        .ok_or_else(|| CheckpointError::UnknownProjection(name.to_owned()))
    }

    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, CheckpointError> {
        let client = self.connection().await?;
        let rows = client
            .query(
                &self.sql(
                    "SELECT position_commit::text, position_sequence, event_id, stream_id, \
                     stream_version, event_type, error FROM {s}.projection_dead_letters \
                     WHERE projection = $1 ORDER BY position_commit, position_sequence",
                ),
                &[&name],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let get = |e: tokio_postgres::Error| corrupt(format!("dead letter row: {e}"));
                let commit: String = row.try_get(0).map_err(get)?;
                let position = Position::new(
                    commit
                        .parse()
                        .map_err(|_| corrupt(format!("stored position commit {commit:?}")))?,
                    uint(row.try_get(1).map_err(get)?, "position sequence")?,
                );
                let event_id = EventId::from_uuid(row.try_get(2).map_err(get)?)
                    .map_err(|e| StoreError::Backend(Box::new(e)))?;
                let stream: String = row.try_get(3).map_err(get)?;
                let stream_id =
                    StreamId::from_stored(stream).map_err(|e| StoreError::Backend(Box::new(e)))?;
                let version = StreamVersion::try_from_i64(row.try_get(4).map_err(get)?)
                    .map_err(|e| StoreError::Backend(Box::new(e)))?;
                let event_type: String = row.try_get(5).map_err(get)?;
                let error: String = row.try_get(6).map_err(get)?;
                Ok(DeadLetter::stored(
                    name,
                    position,
                    event_id,
                    stream_id,
                    version,
                    event_type.into(),
                    error,
                ))
            })
            .collect::<Result<_, StoreError>>()
            .map_err(CheckpointError::Store)
    }
}

impl Leases for PgCheckpoints {
    async fn acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, CheckpointError> {
        let client = self.connection().await?;
        self.ensure(&client, name).await?;
        let row = client
            .query_opt(
                &self.sql(
                    "UPDATE {s}.projections SET lease_owner = $2, \
                     lease_expires_at = now() + $3 * interval '1 millisecond', \
                     lease_token = lease_token + 1, updated_at = now() \
                     WHERE name = $1 AND (lease_expires_at IS NULL OR lease_expires_at <= now() \
                     OR lease_owner = $2) \
                     RETURNING lease_token",
                ),
                &[&name, &owner, &millis(ttl)],
            )
            .await
            .map_err(db)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let token: i64 = row.try_get(0).map_err(db)?;
                Ok(Some(Lease::new(name, owner, uint(token, "lease token")?)))
            }
        }
    }

    async fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<ProjectionRecord>, CheckpointError> {
        let client = self.connection().await?;
        let token = int(lease.token, "lease token")?;
        self.one(
            &client,
            &format!(
                "UPDATE {{s}}.projections p SET lease_owner = $3, \
                 lease_expires_at = now() + $4 * interval '1 millisecond' \
                 WHERE p.name = $1 AND p.lease_token = $2 RETURNING {RECORD}"
            ),
            &[&lease.name, &token, &lease.owner, &millis(ttl)],
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), CheckpointError> {
        let client = self.connection().await?;
        let token = int(lease.token, "lease token")?;
        client
            .execute(
                &self.sql(
                    "UPDATE {s}.projections SET lease_owner = NULL, lease_expires_at = NULL \
                     WHERE name = $1 AND lease_token = $2",
                ),
                &[&lease.name, &token],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn report(
        &self,
        lease: &Lease,
        status: &ProjectionStatus,
    ) -> Result<(), CheckpointError> {
        let client = self.connection().await?;
        let token = int(lease.token, "lease token")?;
        client
            .execute(
                &self.sql(
                    "UPDATE {s}.projections SET status = $3 \
                     WHERE name = $1 AND lease_token = $2",
                ),
                &[&lease.name, &token, &Json(status)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}

impl UnitOfWork for PgCheckpoints {
    type Unit = PgUnit;

    async fn begin(&self, _lease: &Lease) -> Result<PgUnit, CheckpointError> {
        let client = self.connection().await?;
        let unit = PgUnit {
            client: Some(client),
        };
        unit.client()?
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; \
                 SET LOCAL idle_in_transaction_session_timeout = {}",
                self.unit_idle_timeout.as_millis()
            ))
            .await
            .map_err(db)?;
        Ok(unit)
    }

    async fn commit(
        &self,
        lease: &Lease,
        mut unit: PgUnit,
        commit: CheckpointCommit,
    ) -> Result<(), CheckpointError> {
        let token = int(lease.token, "lease token")?;
        let client = unit.client()?;
        let position_commit = commit.position.commit().to_string();
        let sequence = int(commit.position.sequence(), "position sequence")?;
        let generation = int(commit.generation, "generation")?;
        let serving = int(commit.serving_generation, "serving generation")?;
        let updated = client
            .execute(
                &self.sql(
                    "UPDATE {s}.projections SET position_commit = $3::text::numeric, \
                     position_sequence = $4, generation = $5, serving_generation = $6, \
                     replay = CASE WHEN $7 THEN NULL ELSE replay END, updated_at = now() \
                     WHERE name = $1 AND lease_token = $2",
                ),
                &[
                    &lease.name,
                    &token,
                    &position_commit,
                    &sequence,
                    &generation,
                    &serving,
                    &commit.clears_replay,
                ],
            )
            .await
            .map_err(db)?;
        if updated == 0 {
            // Dropping the unit rolls the read model's writes back.
            return Err(CheckpointError::Fenced {
                name: lease.name.clone(),
                token: lease.token,
            });
        }
        for letter in &commit.dead_letters {
            let version = int(letter.stream_version.get(), "stream version")?;
            let sequence = int(letter.position.sequence(), "position sequence")?;
            client
                .execute(
                    &self.sql(
                        "INSERT INTO {s}.projection_dead_letters (projection, position_commit, \
                         position_sequence, event_id, stream_id, stream_version, event_type, \
                         error) VALUES ($1, $2::text::numeric, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT DO NOTHING",
                    ),
                    &[
                        &letter.projection,
                        &letter.position.commit().to_string(),
                        &sequence,
                        &letter.event_id.as_uuid(),
                        &letter.stream_id.as_str(),
                        &version,
                        &letter.event_type.as_str(),
                        &letter.error,
                    ],
                )
                .await
                .map_err(db)?;
        }
        client.batch_execute("COMMIT").await.map_err(db)?;
        // Committed: the connection goes back to the pool.
        drop(unit.take());
        Ok(())
    }
}
