//! What the application role may do in a migrated schema, and the log-order check every
//! migration ends with.

use crossfold_core::StoreError;
use deadpool_postgres::Pool;

use super::report::PgMigrationError;
use crate::error::{classify, classify_pool};
use crate::sql::quoted;

/// The tables the application role may insert into and update: projections' checkpoints,
/// leases, control state and dead letters (from migration 4 on).
const APP_WRITABLE_TABLES: &str = "projections, projection_dead_letters";

/// The functions the application role may call (besides reading every table of the schema).
const APP_FUNCTIONS: &str = "append, append_one, check_log_order";

/// The deadline functions the application role may call (from migration 5 on).
const DEADLINE_FUNCTIONS: &str =
    "schedule_deadline, cancel_deadline, claim_deadlines, complete_deadline";

/// The functions of the log's visibility horizon the application role may call (from
/// migration 6 on): appends register, readers ask which open transactions are foreign, status
/// and health ask what holds the horizon.
const HORIZON_FUNCTIONS: &str = "register_append, foreign_writers, log_horizon, oldest_append";

/// The group commit function the application role may call (from migration 8 on).
const GROUP_FUNCTIONS: &str = "append_group";

/// The function the application role saves snapshots of command state with (from migration
/// 11 on). It reads them like every table, and deletes none: dropping snapshots is an
/// operator's action, left to the schema's owner.
const SNAPSHOT_FUNCTIONS: &str = "save_snapshot";

/// The functions the application role archives streams and keeps partitions of a partitioned
/// log ahead of its appends with (from migration 14 on). Converting the log and detaching or
/// attaching partitions are the owner's.
const ARCHIVE_FUNCTIONS: &str = "archive_stream, ensure_log_partitions";

/// What a schema has that the application role is granted, beyond the append functions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Present {
    pub(super) projections: bool,
    pub(super) deadlines: bool,
    pub(super) horizon: bool,
    pub(super) group: bool,
    pub(super) snapshots: bool,
    pub(super) archives: bool,
}

impl Present {
    /// What a schema migrated to `version` has.
    pub(super) fn at(version: u32) -> Self {
        Self {
            projections: version >= 4,
            deadlines: version >= 5,
            horizon: version >= 6,
            group: version >= 8,
            snapshots: version >= 11,
            archives: version >= 14,
        }
    }
}

/// The statements that let `role` use the store in `schema`: read every table, call the
/// append functions and the log-order check, and (when the schema has them) write the
/// projections' tables and call the deadline, horizon, group commit, snapshot and archive
/// functions, nothing else.
pub(super) fn grants(schema: &str, role: &str, present: Present) -> String {
    let Present {
        projections,
        deadlines,
        horizon,
        group,
        snapshots,
        archives,
    } = present;
    let q = quoted(schema);
    let r = quoted(role);
    let functions: Vec<String> = APP_FUNCTIONS
        .split(", ")
        .chain(DEADLINE_FUNCTIONS.split(", ").filter(|_| deadlines))
        .chain(HORIZON_FUNCTIONS.split(", ").filter(|_| horizon))
        .chain(GROUP_FUNCTIONS.split(", ").filter(|_| group))
        .chain(SNAPSHOT_FUNCTIONS.split(", ").filter(|_| snapshots))
        .chain(ARCHIVE_FUNCTIONS.split(", ").filter(|_| archives))
        .map(|f| format!("{q}.{f}"))
        .collect();
    let mut sql = format!(
        "GRANT USAGE ON SCHEMA {q} TO {r}; \
         GRANT SELECT ON ALL TABLES IN SCHEMA {q} TO {r}; \
         GRANT EXECUTE ON FUNCTION {} TO {r}",
        functions.join(", ")
    );
    if projections {
        let tables: Vec<String> = APP_WRITABLE_TABLES
            .split(", ")
            .map(|t| format!("{q}.{t}"))
            .collect();
        sql.push_str(&format!(
            "; GRANT INSERT, UPDATE ON TABLE {} TO {r}",
            tables.join(", ")
        ));
    }
    sql
}

/// Grants `role` what an application role needs on the migrated store in `schema`.
pub(crate) async fn grant_access(
    pool: &Pool,
    schema: &str,
    role: &str,
) -> Result<(), PgMigrationError> {
    let client = pool.get().await.map_err(classify_pool)?;
    let row = client
        .query_one(
            "SELECT to_regclass(format('%I.projections', $1::text)) IS NOT NULL, \
                    to_regclass(format('%I.deadlines', $1::text)) IS NOT NULL, \
                    to_regprocedure(format('%I.log_horizon(pg_snapshot)', $1::text)) IS NOT NULL, \
                    EXISTS (SELECT FROM pg_proc p \
                            JOIN pg_namespace n ON n.oid = p.pronamespace \
                            WHERE n.nspname = $1 AND p.proname = 'append_group'), \
                    EXISTS (SELECT FROM pg_proc p \
                            JOIN pg_namespace n ON n.oid = p.pronamespace \
                            WHERE n.nspname = $1 AND p.proname = 'save_snapshot'), \
                    EXISTS (SELECT FROM pg_proc p \
                            JOIN pg_namespace n ON n.oid = p.pronamespace \
                            WHERE n.nspname = $1 AND p.proname = 'archive_stream')",
            &[&schema],
        )
        .await?;
    let present = Present {
        projections: row.try_get(0)?,
        deadlines: row.try_get(1)?,
        horizon: row.try_get(2)?,
        group: row.try_get(3)?,
        snapshots: row.try_get(4)?,
        archives: row.try_get(5)?,
    };
    client.batch_execute(&grants(schema, role, present)).await?;
    Ok(())
}

/// Runs the log-order check (see migration 0002), starting a new log epoch if the store was
/// moved to another cluster or timeline. Returns whether it did.
pub(crate) async fn check_log_order(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            &format!(
                "SELECT epoch, advanced FROM {}.check_log_order()",
                quoted(schema)
            ),
            &[],
        )
        .await
        .map_err(classify)?;
    let epoch: i32 = row
        .try_get(0)
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    let advanced: bool = row
        .try_get(1)
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    if advanced {
        tracing::warn!(
            schema,
            epoch,
            "crossfold: the event log started a new epoch (the store moved to another cluster \
             or timeline); positions of new events jump ahead so that no subscriber skips them"
        );
    }
    Ok(advanced)
}
