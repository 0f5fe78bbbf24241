//! Setting a workload up: the accounts, streams and payloads it needs before measuring.

use std::sync::Arc;

use crossfold_core::{
    AppendRequest, Codec, EventData, EventId, EventStore, EventType, ExpectedVersion, Json,
    Metadata, StreamId, StreamVersion,
};
use crossfold_executor::{Error, Executor};

use crate::bank::{BankEvent, Open};
use crate::{LoadError, Workload};

/// Opening balance of every account, in cents.
pub(super) const INITIAL_BALANCE: i64 = 1_000_000;
/// Events per account stream for the read and catch-up workloads.
pub(super) const READ_STREAM_EVENTS: u64 = 10;
/// Events per account stream for W8.
pub(super) const LONG_STREAM_EVENTS: u64 = 10_000;

/// What setting a workload up wrote.
#[derive(Clone, Copy, Default)]
pub(super) struct Prepared {
    /// Money put in the accounts.
    pub(super) money: i64,
    /// Events written.
    pub(super) events: u64,
}

/// Prepares the data a workload needs.
pub(super) async fn setup<S: EventStore + Clone + 'static>(
    executor: &Executor<S>,
    store: &S,
    workload: Workload,
    accounts: &Arc<Vec<StreamId>>,
    concurrency: usize,
) -> Result<Prepared, LoadError> {
    match workload {
        // The counter starts empty: its first command creates it.
        Workload::BatchAppend | Workload::HotCounter => Ok(Prepared::default()),
        Workload::ReadOne | Workload::ReadThree | Workload::CatchUp => {
            fill_streams(store, accounts, READ_STREAM_EVENTS, concurrency).await
        }
        Workload::LongStreams => {
            fill_streams(store, accounts, LONG_STREAM_EVENTS, concurrency).await
        }
        _ => {
            let workers = concurrency.clamp(1, 32);
            let mut handles = Vec::new();
            for w in 0..workers {
                let executor = executor.clone();
                let accounts = accounts.clone();
                handles.push(tokio::spawn(async move {
                    for account in accounts.iter().skip(w).step_by(workers) {
                        executor
                            .execute(Open {
                                account: account.clone(),
                                initial: INITIAL_BALANCE,
                            })
                            .await?;
                    }
                    Ok::<(), Error>(())
                }));
            }
            for handle in handles {
                handle
                    .await
                    .map_err(|e| LoadError::Setup(e.into()))?
                    .map_err(|e| LoadError::Setup(e.into()))?;
            }
            Ok(Prepared {
                money: INITIAL_BALANCE * accounts.len() as i64,
                events: accounts.len() as u64,
            })
        }
    }
}

/// Writes `per_stream` events (an opening and deposits of 1) to every account directly through
/// the store, in chunks.
pub(super) async fn fill_streams<S: EventStore + Clone + 'static>(
    store: &S,
    accounts: &Arc<Vec<StreamId>>,
    per_stream: u64,
    concurrency: usize,
) -> Result<Prepared, LoadError> {
    let encode = |e: &BankEvent| -> Result<EventData, LoadError> {
        let payload = Json.encode(e).map_err(LoadError::Setup)?;
        Ok(EventData {
            event_id: EventId::generate(),
            event_type: EventType::from_static(crossfold_core::DomainEvent::event_type(e)),
            schema_version: 1,
            payload,
            metadata: Arc::new(Metadata::now()),
        })
    };
    let opened = encode(&BankEvent::Opened {
        initial: INITIAL_BALANCE,
    })?;
    let deposit = encode(&BankEvent::Deposited { amount: 1 })?;
    let workers = concurrency.clamp(1, 16);
    let mut handles = Vec::new();
    for w in 0..workers {
        let (store, accounts, opened, deposit) = (
            store.clone(),
            accounts.clone(),
            opened.clone(),
            deposit.clone(),
        );
        handles.push(tokio::spawn(async move {
            for account in accounts.iter().skip(w).step_by(workers) {
                let mut version = StreamVersion::EMPTY;
                while version.get() < per_stream {
                    let chunk = (per_stream - version.get()).min(1_000);
                    let events: Vec<EventData> = (0..chunk)
                        .map(|k| {
                            let template = if version.get() + k == 0 {
                                &opened
                            } else {
                                &deposit
                            };
                            EventData {
                                event_id: EventId::generate(),
                                ..template.clone()
                            }
                        })
                        .collect();
                    store
                        .append(AppendRequest::new().stream(
                            account.clone(),
                            ExpectedVersion::Exact(version),
                            events,
                        ))
                        .await?;
                    version = version.advance(chunk);
                }
            }
            Ok::<(), crossfold_core::StoreError>(())
        }));
    }
    for handle in handles {
        handle
            .await
            .map_err(|e| LoadError::Setup(e.into()))?
            .map_err(|e| LoadError::Setup(e.into()))?;
    }
    let per_account = INITIAL_BALANCE + (per_stream as i64 - 1);
    Ok(Prepared {
        money: per_account * accounts.len() as i64,
        events: per_stream * accounts.len() as u64,
    })
}

/// The 100 events of a W5 batch (ids are replaced per append).
pub(super) fn batch_events() -> Result<Vec<EventData>, LoadError> {
    let payload = Json
        .encode(&serde_json::json!({"sku": "abc", "qty": 1}))
        .map_err(LoadError::Setup)?;
    let metadata = Arc::new(Metadata::now());
    Ok((0..100)
        .map(|_| EventData {
            event_id: EventId::generate(),
            event_type: EventType::from_static("ItemAdded"),
            schema_version: 1,
            payload: payload.clone(),
            metadata: metadata.clone(),
        })
        .collect())
}
