//! Deadlines in memory: the same claims, fencing tokens and idempotent scheduling as the
//! PostgreSQL table, for embedded use and tests. "Durable" here means: for as long as the
//! process (and this store) lives, whatever workers come and go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossfold_core::deadline::{
    ClaimedDeadline, Deadline, DeadlineCounts, DeadlineId, DeadlineOutcome, DeadlineRecord,
    DeadlineStatus, DeadlineStore,
};
use crossfold_core::{StoreError, Timestamp};

#[derive(Debug)]
struct Row {
    record: DeadlineRecord,
    token: u64,
    claimed_until: Option<Timestamp>,
}

/// An in-memory [`DeadlineStore`]. Clones share the same deadlines.
#[derive(Clone, Debug, Default)]
pub struct MemoryDeadlineStore {
    rows: Arc<Mutex<HashMap<DeadlineId, Row>>>,
}

impl MemoryDeadlineStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn rows(&self) -> MutexGuard<'_, HashMap<DeadlineId, Row>> {
        // A panic while holding the lock cannot leave a row half-written (every change is one
        // assignment), so a poisoned lock is still usable.
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DeadlineStore for MemoryDeadlineStore {
    async fn schedule(&self, deadline: Deadline) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        if rows.contains_key(&deadline.id) {
            return Ok(false);
        }
        rows.insert(
            deadline.id.clone(),
            Row {
                record: DeadlineRecord::pending(deadline),
                token: 0,
                claimed_until: None,
            },
        );
        Ok(true)
    }

    async fn cancel(&self, id: &DeadlineId) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        match rows.get_mut(id) {
            Some(row) if row.record.status == DeadlineStatus::Pending => {
                row.record.status = DeadlineStatus::Cancelled;
                row.record.finished_at = Some(Timestamp::now());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedDeadline>, StoreError> {
        let mut rows = self.rows();
        let mut due: Vec<&mut Row> = rows
            .values_mut()
            .filter(|r| {
                r.record.status == DeadlineStatus::Pending
                    && r.record.deadline.due_at <= now
                    && r.claimed_until.is_none_or(|until| until <= now)
            })
            .collect();
        due.sort_by(|a, b| {
            (a.record.deadline.due_at, &a.record.deadline.id)
                .cmp(&(b.record.deadline.due_at, &b.record.deadline.id))
        });
        let until = now.saturating_add(lease);
        Ok(due
            .into_iter()
            .take(limit)
            .map(|row| {
                row.token += 1;
                row.record.claims += 1;
                row.claimed_until = Some(until);
                ClaimedDeadline::new(row.record.deadline.clone(), row.token, until)
            })
            .collect())
    }

    async fn complete(
        &self,
        claim: &ClaimedDeadline,
        outcome: &DeadlineOutcome,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(&claim.deadline.id) else {
            return Ok(false);
        };
        if row.token != claim.token || row.record.status != DeadlineStatus::Pending {
            return Ok(false);
        }
        (row.record.status, row.record.note) = match outcome {
            DeadlineOutcome::Refused(why) => (DeadlineStatus::Refused, Some(why.clone())),
            _ => (DeadlineStatus::Fired, None),
        };
        row.record.finished_at = Some(at);
        row.claimed_until = None;
        Ok(true)
    }

    async fn deadline(&self, id: &DeadlineId) -> Result<Option<DeadlineRecord>, StoreError> {
        Ok(self.rows().get(id).map(|r| r.record.clone()))
    }

    async fn deadline_counts(&self, now: Timestamp) -> Result<DeadlineCounts, StoreError> {
        let rows = self.rows();
        let pending = rows
            .values()
            .filter(|r| r.record.status == DeadlineStatus::Pending);
        let (mut all, mut overdue) = (0, 0);
        for row in pending {
            all += 1;
            if row.record.deadline.due_at <= now {
                overdue += 1;
            }
        }
        Ok(DeadlineCounts::new(all, overdue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_micros(secs * 1_000_000)
    }

    fn deadline(name: &str, due: i64) -> Deadline {
        Deadline::new(DeadlineId::new(name).unwrap(), "test", at(due))
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn claims_are_exclusive_until_they_expire_and_fenced_after() {
        run(async {
            let store = MemoryDeadlineStore::new();
            assert!(store.schedule(deadline("a", 10)).await.unwrap());
            assert!(!store.schedule(deadline("a", 99)).await.unwrap());
            assert!(store.schedule(deadline("b", 20)).await.unwrap());
            let lease = Duration::from_secs(30);
            assert!(store.claim_due(at(9), 10, lease).await.unwrap().is_empty());
            let first = store.claim_due(at(15), 10, lease).await.unwrap();
            assert_eq!(first.len(), 1);
            assert!(store.claim_due(at(16), 10, lease).await.unwrap().is_empty());
            let counts = store.deadline_counts(at(16)).await.unwrap();
            assert_eq!((counts.pending, counts.overdue), (2, 1));
            // The first claim expired: another worker takes over, the first one is fenced.
            let second = store.claim_due(at(50), 10, lease).await.unwrap();
            assert_eq!(second.len(), 2);
            assert!(
                !store
                    .complete(&first[0], &DeadlineOutcome::Fired, at(50))
                    .await
                    .unwrap()
            );
            for claim in &second {
                assert!(
                    store
                        .complete(claim, &DeadlineOutcome::Fired, at(51))
                        .await
                        .unwrap()
                );
            }
            let a = store
                .deadline(&DeadlineId::new("a").unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((a.status, a.claims), (DeadlineStatus::Fired, 2));
            assert_eq!(
                store.deadline_counts(at(99)).await.unwrap(),
                DeadlineCounts::new(0, 0)
            );
        });
    }

    #[test]
    fn a_cancelled_deadline_is_never_claimed() {
        run(async {
            let store = MemoryDeadlineStore::new();
            store.schedule(deadline("a", 10)).await.unwrap();
            let id = DeadlineId::new("a").unwrap();
            assert!(store.cancel(&id).await.unwrap());
            assert!(!store.cancel(&id).await.unwrap());
            let claims = store.claim_due(at(99), 10, Duration::from_secs(1)).await;
            assert!(claims.unwrap().is_empty());
        });
    }
}
