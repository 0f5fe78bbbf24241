//! Undecodable events an operator sets aside, and reads skipping them.

use crossfold_core::{Position, StoreError};

use crate::db::Db;
use crate::error::{PgUndecodableEvent, classify};
use crate::sql::quoted;
use crate::types::position_params;

/// Records the event at `position` as set aside, with `reason`; reads skip it from then on.
pub(crate) async fn quarantine(
    db: &Db,
    position: Position,
    reason: &str,
) -> Result<(), StoreError> {
    let (commit, sequence) = position_params(position);
    let client = db.client().await?;
    client
        .execute(
            &format!(
                "INSERT INTO {}.quarantined_events (transaction_id, sequence, reason) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                quoted(&db.schema)
            ),
            &[&commit, &sequence, &reason],
        )
        .await
        .map_err(classify)?;
    Ok(())
}

/// `Ok` when `error` is an undecodable event that was quarantined (the read skips it);
/// the error otherwise.
pub(super) async fn skip_quarantined(db: &Db, error: StoreError) -> Result<(), StoreError> {
    let Some(bad) = PgUndecodableEvent::find(&error) else {
        return Err(error);
    };
    let (commit, sequence) = position_params(bad.position());
    let client = db.client().await?;
    let statement = client
        .prepare_cached(&db.sql.quarantined)
        .await
        .map_err(classify)?;
    match client.query_opt(&statement, &[&commit, &sequence]).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(error),
        Err(e) => Err(classify(e)),
    }
}
