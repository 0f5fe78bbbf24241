//! The two-role setup: an owner that migrates, and an application role that appends, reads
//! and subscribes through the store but cannot write any table directly — so it can neither
//! forge an event with a chosen transaction id nor rewrite a stream's version — and that may
//! call `migrate()` when there is nothing to do. The tables' protections hold for everyone,
//! even with `session_replication_role = replica`. Runs a cluster of its own (roles are
//! cluster-wide). It runs projections: their checkpoint tables are the only ones it may insert
//! into and update.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{events, raw_client_at, sid, store_at};
use crossfold_core::checkpoint::{
    CheckpointCommit, ControlRequest, DeadLetter, Leases, ProjectionControl, ProjectionStatus,
    UnitOfWork,
};
use crossfold_core::deadline::{Deadline, DeadlineId, DeadlineOutcome, DeadlineStore};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion, LogFilter, Position, Timestamp};
use crossfold_postgres::{PgCheckpoints, PgDeadlineStore};
use crossfold_testkit::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_cannot_forge_events() {
    let cluster = TestCluster::start_new().unwrap();
    let admin = raw_client_at(&cluster.url()).await;
    admin
        .batch_execute(
            "CREATE ROLE bank_owner LOGIN; CREATE ROLE bank_app LOGIN; \
             GRANT CREATE ON DATABASE postgres TO bank_owner",
        )
        .await
        .unwrap();

    let owner = store_at(&cluster.url_for("bank_owner", "postgres"), "bank").await;
    // The role is let in before the deadlines exist (migration 5): migrating later extends
    // its grant to them.
    let report = owner.migrate_to(4).await.unwrap();
    assert_eq!(report.applied, [1, 2, 3, 4]);
    owner.grant_access("bank_app").await.unwrap();
    let report = owner.migrate().await.unwrap();
    assert_eq!(
        report.applied.len(),
        crossfold_postgres::PgEventStore::migrations().len() - 4
    );

    let app_url = cluster.url_for("bank_app", "postgres");
    let app = store_at(&app_url, "bank").await;
    // Nothing to do: succeeds without any CREATE privilege.
    let report = app.migrate().await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    app.check_schema().await.unwrap();

    // The application role appends (one stream and several), reads and follows the log.
    app.append(AppendRequest::new().stream(
        sid("account-1"),
        ExpectedVersion::NoStream,
        events("Opened", 1),
    ))
    .await
    .unwrap();
    app.append(
        AppendRequest::new()
            .stream(
                sid("account-1"),
                ExpectedVersion::Exact(1.into()),
                events("Withdrawn", 1),
            )
            .stream(
                sid("account-2"),
                ExpectedVersion::NoStream,
                events("Deposited", 2),
            ),
    )
    .await
    .unwrap();
    let stream = app
        .read_stream(&sid("account-1"), Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(stream.version.get(), 2);
    let log = app
        .read_all(Position::START, 100, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(log.len(), 4);
    let head = app.head_position().await.unwrap();
    assert_eq!(head, log[3].position);
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { app.wait_for_events(head, Duration::from_secs(10)).await })
    };
    owner
        .append(AppendRequest::new().stream(
            sid("account-3"),
            ExpectedVersion::NoStream,
            events("Opened", 1),
        ))
        .await
        .unwrap();
    waiter.await.unwrap().unwrap();
    let next = app
        .read_all(head, 100, &LogFilter::categories(["account"]))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    // It appends through the group function too (group commit): the migration that made it
    // extended the role's grant.
    let grouped = app
        .append_together(vec![
            AppendRequest::new().stream(
                sid("account-4"),
                ExpectedVersion::NoStream,
                events("Opened", 1),
            ),
            AppendRequest::new().stream(
                sid("account-5"),
                ExpectedVersion::NoStream,
                events("Opened", 1),
            ),
        ])
        .await;
    for outcome in &grouped {
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    // It schedules, claims and completes deadlines through their functions.
    let deadlines = PgDeadlineStore::new(&app);
    let id = DeadlineId::new("payment-timeout/1").unwrap();
    let due = Timestamp::from_unix_micros(1_000_000);
    assert!(
        deadlines
            .schedule(Deadline::new(id.clone(), "payment-timeout", due))
            .await
            .unwrap()
    );
    let claims = deadlines
        .claim_due(
            Timestamp::from_unix_micros(2_000_000),
            5,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].deadline.due_at, due);
    assert!(
        deadlines
            .complete(&claims[0], &DeadlineOutcome::Fired, due)
            .await
            .unwrap()
    );
    assert!(!deadlines.cancel(&id).await.unwrap());

    // It runs projections: leases, checkpoints committed in its own transactions, dead
    // letters, status reports and operators' requests.
    let checkpoints = PgCheckpoints::new(&app);
    let lease = checkpoints
        .acquire("balances", "app", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let unit = checkpoints.begin(&lease).await.unwrap();
    let mut commit = CheckpointCommit::new(head, 1, 1);
    commit
        .dead_letters
        .push(DeadLetter::new("balances", &log[0], "bad"));
    checkpoints.commit(&lease, unit, commit).await.unwrap();
    checkpoints
        .report(&lease, &ProjectionStatus::default())
        .await
        .unwrap();
    checkpoints
        .request("balances", ControlRequest::Pause)
        .await
        .unwrap();
    let record = checkpoints.get("balances").await.unwrap().unwrap();
    assert_eq!((record.position, record.dead_letters), (head, 1));
    checkpoints.release(&lease).await.unwrap();

    // Directly, it can write nothing else, and remove nothing.
    let raw = raw_client_at(&app_url).await;
    for statement in [
        "INSERT INTO bank.events (transaction_id, event_id, stream_id, stream_version, \
         event_type, schema_version, payload_json, metadata) VALUES ('1', \
         '0190b4d2-0000-7000-8000-000000000001', 'account-1', 3, 'Forged', 1, '{}', '{}')",
        "UPDATE bank.events SET event_type = 'Forged'",
        "DELETE FROM bank.events",
        "TRUNCATE bank.events",
        "INSERT INTO bank.streams (stream_id, version) VALUES ('account-9', 7)",
        "UPDATE bank.streams SET version = 0",
        "DELETE FROM bank.streams",
        "TRUNCATE bank.streams",
        "UPDATE bank.log_state SET shift = 0",
        "UPDATE bank.deadlines SET status = 'pending'",
        "INSERT INTO bank.deadlines (deadline_id, kind, due_at) VALUES ('x', 'x', now())",
        "DELETE FROM bank.deadlines",
        "INSERT INTO bank.quarantined_events (transaction_id, sequence, reason) VALUES ('1', 1, 'x')",
        "ALTER TABLE bank.events DISABLE TRIGGER ALL",
        "CREATE TABLE bank.mine (a int)",
        "SELECT bank.log_discontinuity(s) FROM bank.log_state s",
        "DELETE FROM bank.projections",
        "DELETE FROM bank.projection_dead_letters",
        "TRUNCATE bank.projections",
        // Archives and partitions (migration 14): archived events, event ids, the partition
        // records and the owner's functions.
        "INSERT INTO bank.archived_events SELECT *, now() FROM bank.events",
        "DELETE FROM bank.archived_events",
        "INSERT INTO bank.event_ids VALUES ('0190b4d2-0000-7000-8000-000000000001', '1', 1)",
        "UPDATE bank.streams SET archived = false",
        "INSERT INTO bank.log_partitioning (size, ahead) VALUES (1, 1)",
        "DELETE FROM bank.log_partitions",
        "CALL bank.partition_log(100)",
        "SELECT bank.detach_log_partition('events_000000', true)",
        "SELECT bank.attach_log_partition('events_000000')",
        "SELECT bank.add_log_partition(1, 2)",
    ] {
        let err = raw.batch_execute(statement).await.unwrap_err();
        let code = err.code().map(|c| c.code().to_owned());
        // insufficient_privilege, or "must be owner" for ALTER TABLE (also 42501).
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {err:?}");
    }

    // For everyone, events stay immutable and stream rows stay, even as a replica.
    admin
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    for statement in [
        "UPDATE bank.events SET event_type = 'Forged'",
        "DELETE FROM bank.events",
        "TRUNCATE bank.events",
        "DELETE FROM bank.streams",
        "TRUNCATE bank.streams",
    ] {
        let err = admin.batch_execute(statement).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("CF002"),
            "{statement}: {err:?}"
        );
    }
    let log = app
        .read_all(Position::START, 100, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(log.len(), 7);
    assert!(log.iter().all(|e| e.event_type != "Forged"));

    // It archives a stream (through its function), and keeps a partitioned log's partitions
    // ahead; converting the log is the owner's.
    assert!(matches!(
        app.partition_log(crossfold_postgres::PgLogPartitioning::new(1_000))
            .await
            .unwrap_err(),
        crossfold_core::StoreError::Backend(_)
    ));
    owner
        .partition_log(crossfold_postgres::PgLogPartitioning::new(1_000).margin(50))
        .await
        .unwrap();
    assert_eq!(app.ensure_log_partitions().await.unwrap(), 0);
    // It may archive, but not past a projection that has not read the stream: forcing is the
    // owner's ("balances" stopped before account-3's event).
    let refused = app
        .archive_stream(&sid("account-3"), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, crossfold_core::StoreError::InvalidRequest(m) if m.contains("balances")),
        "{refused:?}"
    );
    assert!(matches!(
        app.archive_stream(&sid("account-3"), true)
            .await
            .unwrap_err(),
        crossfold_core::StoreError::Backend(_)
    ));
    assert_eq!(
        owner.archive_stream(&sid("account-3"), true).await.unwrap(),
        1
    );
    let archived = app
        .read_archived_stream(&sid("account-3"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archived.events.len(), 1);
    app.append(AppendRequest::new().stream(
        sid("account-6"),
        ExpectedVersion::NoStream,
        events("Opened", 1),
    ))
    .await
    .unwrap();
    assert_eq!(
        app.read_all(Position::START, 100, &LogFilter::all())
            .await
            .unwrap()
            .len(),
        7
    );
    let err = app
        .detach_log_partition("events_000000", true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, crossfold_core::StoreError::Backend(_)),
        "{err:?}"
    );
}
