//! Many tenants on one database (`PgEventStore::tenant`): each in a schema of its own, on
//! shared connections. Two tenants writing the same stream ids never see each other's events
//! through any public API — stream reads, the whole log, a subscription with an "all" filter,
//! projections' checkpoints, deadlines, snapshots, archives — and a command run through one
//! tenant's executor writes only there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{SchemaGuard, events, fresh_schema, fresh_store, sid};
use crossfold_core::checkpoint::{Leases, ProjectionControl};
use crossfold_core::deadline::{Deadline, DeadlineId, DeadlineStore};
use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, LogFilter, Position, SubscriptionExt,
    SubscriptionOptions, Timestamp,
};
use crossfold_postgres::{PgCheckpoints, PgDeadlineStore, PgEventStore};

async fn ids_in_log(store: &PgEventStore) -> HashSet<EventId> {
    store
        .read_all(
            Position::START,
            1_000,
            &LogFilter::all().with_system_streams(),
        )
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_only_its_own_events() {
    let base = fresh_store().await;
    let (schema_a, schema_b) = (fresh_schema(), fresh_schema());
    let _guards = (SchemaGuard(schema_a.clone()), SchemaGuard(schema_b.clone()));
    let a = base.tenant(&schema_a).await.unwrap();
    let b = base.tenant(&schema_b).await.unwrap();
    a.migrate().await.unwrap();
    b.migrate().await.unwrap();
    assert!(base.tenant("Not-A-Schema").await.is_err());

    // A subscription of each, with an "all" filter, from before anything is written.
    let mut live_a = a.subscribe(SubscriptionOptions::all().max_wait(Duration::from_millis(100)));

    // The same stream ids in both.
    let mut written_a = HashSet::new();
    let mut written_b = HashSet::new();
    for (store, written, n) in [(&a, &mut written_a, 3), (&b, &mut written_b, 5)] {
        let appended = store
            .append(
                AppendRequest::new()
                    .stream(sid("account-1"), ExpectedVersion::NoStream, events("E", n))
                    .stream(sid("account-2"), ExpectedVersion::NoStream, events("E", 1)),
            )
            .await
            .unwrap();
        written.extend(appended.events.iter().map(|e| e.event_id));
    }
    // Only B has this one.
    let only_b = b
        .append(AppendRequest::new().stream(
            sid("only-b"),
            ExpectedVersion::NoStream,
            events("E", 2),
        ))
        .await
        .unwrap();
    written_b.extend(only_b.events.iter().map(|e| e.event_id));
    // The base store's schema is a tenant too, and empty.
    assert!(ids_in_log(&base).await.is_empty());

    // Stream reads.
    let one = a
        .read_stream(&sid("account-1"), Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(one.events.len(), 3);
    assert!(one.events.iter().all(|e| written_a.contains(&e.event_id)));
    let none = a
        .read_stream(&sid("only-b"), Default::default(), usize::MAX)
        .await
        .unwrap();
    assert!(none.events.is_empty());
    assert_eq!(none.version.get(), 0);
    for id in &written_b {
        assert!(a.read_event(*id).await.unwrap().is_none());
    }

    // The whole log, system streams included, and the subscription.
    assert_eq!(ids_in_log(&a).await, written_a);
    assert_eq!(ids_in_log(&b).await, written_b);
    let mut delivered = HashSet::new();
    while delivered.len() < written_a.len() {
        delivered.insert(live_a.next_event().await.unwrap().event_id);
    }
    assert_eq!(delivered, written_a);
    // Nothing more comes: B's later writes stay B's.
    b.append(AppendRequest::new().stream(
        sid("account-3"),
        ExpectedVersion::NoStream,
        events("E", 1),
    ))
    .await
    .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(500), live_a.next_event()).await;
    assert!(quiet.is_err(), "A's subscription delivered {quiet:?}");

    // Writes: an append through A never lands in B.
    assert!(
        a.append(AppendRequest::new().stream(
            sid("only-b"),
            ExpectedVersion::Exact(2.into()),
            events("E", 1)
        ))
        .await
        .unwrap_err()
        .is_conflict(),
        "A has no stream only-b at version 2"
    );
    assert_eq!(
        b.read_stream(&sid("only-b"), Default::default(), usize::MAX)
            .await
            .unwrap()
            .events
            .len(),
        2
    );

    // Projections' checkpoints, deadlines and archives are the tenant's own.
    let checkpoints_a = PgCheckpoints::new(&a);
    let lease = checkpoints_a
        .acquire("balances", "node-1", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(
        PgCheckpoints::new(&b)
            .get("balances")
            .await
            .unwrap()
            .is_none()
    );
    checkpoints_a.release(&lease).await.unwrap();
    let id = DeadlineId::new("payment/1").unwrap();
    assert!(
        PgDeadlineStore::new(&a)
            .schedule(Deadline::new(
                id.clone(),
                "payment",
                Timestamp::from_unix_micros(1)
            ))
            .await
            .unwrap()
    );
    assert!(!PgDeadlineStore::new(&b).cancel(&id).await.unwrap());
    assert_eq!(a.archive_stream(&sid("account-2"), true).await.unwrap(), 1);
    assert_eq!(
        b.read_stream(&sid("account-2"), Default::default(), usize::MAX)
            .await
            .unwrap()
            .events
            .len(),
        1,
        "B's account-2 stays in B's log"
    );
    assert!(
        b.read_archived_stream(&sid("account-2"))
            .await
            .unwrap()
            .is_none()
    );

    // Another process's store of tenant A, listening, is woken by A's appends here: the
    // notifier this store shares with its tenants notifies A's channel.
    let elsewhere = PgEventStore::connect(common::config(&schema_a))
        .await
        .unwrap();
    let head = elsewhere.head_position().await.unwrap();
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        elsewhere
            .wait_for_events(head, Duration::from_secs(20))
            .await
            .unwrap();
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.append(AppendRequest::new().stream(
        sid("account-4"),
        ExpectedVersion::NoStream,
        events("E", 1),
    ))
    .await
    .unwrap();
    let waited = waiter.await.unwrap();
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
}
