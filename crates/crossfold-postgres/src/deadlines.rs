//! Deadlines in the store's schema (migration 0005): scheduled, claimed, cancelled and
//! completed through its functions, so the application role needs no write privilege on the
//! table and two nodes polling at once never claim the same deadline.

use std::time::Duration;

use crossfold_core::deadline::{
    ClaimedDeadline, Deadline, DeadlineCounts, DeadlineId, DeadlineOutcome, DeadlineRecord,
    DeadlineStatus, DeadlineStore,
};
use crossfold_core::{StoreError, Timestamp};
use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{classify, classify_pool, corrupt};
use crate::sql::quoted;

/// A [`DeadlineStore`] in the schema of a [`PgEventStore`](crate::PgEventStore), sharing its
/// connection pool ([`PgDeadlineStore::new`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgDeadlineStore {
    pool: Pool,
    schema: String,
}

impl PgDeadlineStore {
    /// The deadlines of `schema`, through `pool`.
    pub(crate) fn over(pool: Pool, schema: &str) -> Self {
        Self {
            pool,
            schema: quoted(schema),
        }
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(classify_pool)
    }

    /// Up to `limit` pending deadlines, earliest due first, with their state (for operators).
    pub async fn pending(&self, limit: usize) -> Result<Vec<DeadlineRecord>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT * FROM {}.deadlines WHERE status = 'pending' \
                     ORDER BY due_at, deadline_id LIMIT $1",
                    self.schema
                ),
                &[&limit],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(record_of).collect()
    }
}

fn record_of(row: &Row) -> Result<DeadlineRecord, StoreError> {
    let mut record = DeadlineRecord::pending(deadline_of(row)?);
    let status: String = get(row, "status")?;
    record.status = DeadlineStatus::parse(&status)
        .ok_or_else(|| corrupt(format!("deadline status {status:?}")))?;
    record.claims = get::<i64>(row, "claim_token")?.unsigned_abs();
    record.finished_at =
        get::<Option<std::time::SystemTime>>(row, "finished_at")?.map(Timestamp::from);
    record.note = get(row, "note")?;
    Ok(record)
}

fn time(at: Timestamp) -> std::time::SystemTime {
    at.to_system_time()
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column)
        .map_err(|e| corrupt(format!("deadline column {column}: {e}")))
}

fn deadline_of(row: &Row) -> Result<Deadline, StoreError> {
    let id: String = get(row, "deadline_id")?;
    let id = DeadlineId::new(id).map_err(|e| corrupt(format!("deadline id: {e}")))?;
    let kind: String = get(row, "kind")?;
    let due: std::time::SystemTime = get(row, "due_at")?;
    let mut deadline = Deadline::new(id, kind, Timestamp::from(due))
        .payload(get::<serde_json::Value>(row, "payload")?);
    deadline.correlation_id = get::<Option<Uuid>>(row, "correlation_id")?;
    deadline.causation_id = get::<Option<Uuid>>(row, "causation_id")?;
    Ok(deadline)
}

impl DeadlineStore for PgDeadlineStore {
    async fn schedule(&self, deadline: Deadline) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT {}.schedule_deadline($1, $2, $3, $4, $5, $6)",
                    self.schema
                ),
                &[
                    &deadline.id.as_str(),
                    &deadline.kind,
                    &time(deadline.due_at),
                    &deadline.payload,
                    &deadline.correlation_id,
                    &deadline.causation_id,
                ],
            )
            .await
            .map_err(classify)?;
        row.try_get(0).map_err(|e| corrupt(e.to_string()))
    }

    async fn cancel(&self, id: &DeadlineId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!("SELECT {}.cancel_deadline($1, $2)", self.schema),
                &[&id.as_str(), &time(Timestamp::now())],
            )
            .await
            .map_err(classify)?;
        row.try_get(0).map_err(|e| corrupt(e.to_string()))
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedDeadline>, StoreError> {
        let client = self.client().await?;
        let until = now.saturating_add(lease);
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = client
            .query(
                &format!("SELECT * FROM {}.claim_deadlines($1, $2, $3)", self.schema),
                &[&time(now), &limit, &time(until)],
            )
            .await
            .map_err(classify)?;
        let mut claims: Vec<ClaimedDeadline> = rows
            .iter()
            .map(|row| {
                let token: i64 = get(row, "claim_token")?;
                Ok(ClaimedDeadline::new(
                    deadline_of(row)?,
                    token.unsigned_abs(),
                    until,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        // RETURNING does not keep the order of the claiming query.
        claims.sort_by(|a, b| {
            (a.deadline.due_at, &a.deadline.id).cmp(&(b.deadline.due_at, &b.deadline.id))
        });
        Ok(claims)
    }

    async fn complete(
        &self,
        claim: &ClaimedDeadline,
        outcome: &DeadlineOutcome,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let (status, note) = match outcome {
            DeadlineOutcome::Refused(why) => (DeadlineStatus::Refused, Some(why.as_str())),
            _ => (DeadlineStatus::Fired, None),
        };
        let token = i64::try_from(claim.token).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT {}.complete_deadline($1, $2, $3, $4, $5)",
                    self.schema
                ),
                &[
                    &claim.deadline.id.as_str(),
                    &token,
                    &status.as_str(),
                    &note,
                    &time(at),
                ],
            )
            .await
            .map_err(classify)?;
        row.try_get(0).map_err(|e| corrupt(e.to_string()))
    }

    async fn deadline(&self, id: &DeadlineId) -> Result<Option<DeadlineRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT * FROM {}.deadlines WHERE deadline_id = $1",
                    self.schema
                ),
                &[&id.as_str()],
            )
            .await
            .map_err(classify)?;
        row.as_ref().map(record_of).transpose()
    }

    async fn deadline_counts(&self, now: Timestamp) -> Result<DeadlineCounts, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), count(*) FILTER (WHERE due_at <= $1) \
                     FROM {}.deadlines WHERE status = 'pending'",
                    self.schema
                ),
                &[&time(now)],
            )
            .await
            .map_err(classify)?;
        let pending: i64 = row.try_get(0).map_err(|e| corrupt(e.to_string()))?;
        let overdue: i64 = row.try_get(1).map_err(|e| corrupt(e.to_string()))?;
        Ok(DeadlineCounts::new(
            pending.unsigned_abs(),
            overdue.unsigned_abs(),
        ))
    }
}
