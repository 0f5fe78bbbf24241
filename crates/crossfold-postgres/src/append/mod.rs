//! The append path, whole: a request is encoded into the array arguments of the store's append
//! function ([`encode`]), sent in one call through a prepared statement (one round trip), and
//! the function's answer read back into the recorded events — or its refusal explained
//! ([`refusal`]): a conflict, a duplicate event id, a stream row set back below its events.

mod encode;
mod refusal;

use crossfold_core::{AppendRequest, Appended, StoreError};

use crate::db::Db;
use crate::error::classify;
use crate::notify::Wakeup;
use encode::{Encoded, Written};

/// Appends `request` atomically; once events are committed, wakes readers through `wakeup`.
pub(crate) async fn append(
    db: &Db,
    wakeup: &Wakeup,
    request: AppendRequest,
) -> Result<Appended, StoreError> {
    request.validate()?;
    if request.streams.is_empty() {
        return Ok(Appended::default());
    }
    let written = call(db, &request).await?;
    if written.wrote_events() {
        wakeup.appended();
    }
    written.record(request)
}

/// One call of the append function: what it wrote, or why it refused.
async fn call(db: &Db, request: &AppendRequest) -> Result<Written, StoreError> {
    let encoded = Encoded::new(request)?;
    let metadata = encoded.metadata_params();
    let client = db.client().await?;
    let single = encoded.single_params(&metadata);
    let sql = &db.sql;
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
        Err(e) => Err(refusal::explain(e, request, encoded.event_ids(), &client, sql).await),
    }
}
