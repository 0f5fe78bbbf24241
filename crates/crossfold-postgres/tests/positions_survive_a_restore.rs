//! Positions never go backwards, and no subscriber skips an event, when the store's data is
//! copied into a cluster whose transaction counter is lower (dump and restore), the counter
//! itself is moved back (pg_resetwal), or the store fails over to a standby that lost the last
//! transactions (whose ids it then hands out again): the store starts a new log epoch whose
//! positions lie beyond everything stored or read before. Each test runs clusters of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{events, raw_client_at, sid, store_at};
use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, LogFilter, Position, RecordedEvent,
};
use crossfold_postgres::PgEventStore;
use crossfold_testkit::cluster::{StopMode, TestCluster};

/// Transaction ids of a cluster that has run for a while: epoch 3 of the 64-bit counter.
const EPOCH: &str = "3";

fn cluster_in_epoch_3() -> TestCluster {
    let cluster = TestCluster::builder().init().unwrap();
    let data = cluster.data_dir();
    cluster
        .run_tool(
            "pg_resetwal",
            ["-e".as_ref(), EPOCH.as_ref(), data.as_os_str()],
        )
        .unwrap();
    cluster
}

async fn deposit(store: &PgEventStore, account: &str, n: usize) -> Vec<EventId> {
    let batch = events("Deposited", n);
    let ids = batch.iter().map(|e| e.event_id).collect();
    store
        .append(AppendRequest::new().stream(sid(account), ExpectedVersion::Any, batch))
        .await
        .unwrap();
    ids
}

fn ids(events: &[RecordedEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.event_id).collect()
}

/// A subscriber reads the whole log and keeps its last position as its checkpoint.
async fn checkpoint(store: &PgEventStore, expected: usize) -> Position {
    let seen = store
        .read_all(Position::START, 1000, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(seen.len(), expected);
    let last = seen.last().unwrap().position;
    assert!(last.commit() > 3 << 32, "{last} is in epoch 3");
    last
}

/// After the move: new events sort after the checkpoint, a subscriber resuming there gets
/// exactly them, and the whole log reads old events first, in one order.
async fn continues_without_a_skip(store: &PgEventStore, checkpoint: Position, old: &[EventId]) {
    assert!(store.check_log_order().await.is_ok());
    let new = [
        deposit(store, "account-1", 2).await,
        deposit(store, "account-3", 1).await,
    ]
    .concat();
    let resumed = store
        .read_all(checkpoint, 1000, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(ids(&resumed), new, "the subscriber gets every new event");
    assert!(resumed.iter().all(|e| e.position > checkpoint));
    assert!(store.head_position().await.unwrap() > checkpoint);
    let all = store
        .read_all(Position::START, 1000, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(ids(&all), [old, &new[..]].concat());
    // The stream continues at its version too.
    let stream = store
        .read_stream(&sid("account-1"), Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(stream.version.get(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_survive_a_restore() {
    let mut source = cluster_in_epoch_3();
    source.start().unwrap();
    let store = store_at(&source.url(), "bank").await;
    store.migrate().await.unwrap();
    let old = [
        deposit(&store, "account-1", 3).await,
        deposit(&store, "account-2", 2).await,
    ]
    .concat();
    let checkpoint = checkpoint(&store, old.len()).await;
    drop(store);

    // pg_dump into a fresh cluster, whose transaction counter is billions lower.
    let target = TestCluster::start_new().unwrap();
    let dump = source.dir().join("bank.sql");
    let port = source.port().to_string();
    source
        .run_tool(
            "pg_dump",
            [
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-n".as_ref(),
                "bank".as_ref(),
                "-f".as_ref(),
                dump.as_os_str(),
            ],
        )
        .unwrap();
    source.stop(StopMode::Fast).unwrap();
    let port = target.port().to_string();
    target
        .run_tool(
            "psql",
            [
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-v".as_ref(),
                "ON_ERROR_STOP=1".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                dump.as_os_str(),
            ],
        )
        .unwrap();
    let counter: String = raw_client_at(&target.url())
        .await
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        counter.parse::<u64>().unwrap() < checkpoint.commit(),
        "the restored-into cluster hands out lower transaction ids ({counter})"
    );

    let restored = store_at(&target.url(), "bank").await;
    continues_without_a_skip(&restored, checkpoint, &old).await;
    let epochs: i64 = raw_client_at(&target.url())
        .await
        .query_one("SELECT count(*) FROM bank.log_epochs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(epochs, 2, "the restore started epoch 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_counter_moved_back_starts_a_new_epoch() {
    let mut cluster = cluster_in_epoch_3();
    cluster.start().unwrap();
    let store = store_at(&cluster.url(), "bank").await;
    store.migrate().await.unwrap();
    let old = [
        deposit(&store, "account-1", 3).await,
        deposit(&store, "account-2", 2).await,
    ]
    .concat();
    let checkpoint = checkpoint(&store, old.len()).await;
    drop(store);

    // Same cluster, same timeline: only the counter goes back, to epoch 0.
    cluster.stop(StopMode::Fast).unwrap();
    let data = cluster.data_dir();
    cluster
        .run_tool(
            "pg_resetwal",
            ["-e".as_ref(), "0".as_ref(), data.as_os_str()],
        )
        .unwrap();
    cluster.start().unwrap();

    let store = store_at(&cluster.url(), "bank").await;
    continues_without_a_skip(&store, checkpoint, &old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_standby_that_lost_the_tail_starts_a_new_epoch() {
    let mut primary = cluster_in_epoch_3();
    primary.start().unwrap();
    let store = store_at(&primary.url(), "bank").await;
    store.migrate().await.unwrap();
    let kept = deposit(&store, "account-1", 3).await;
    // The standby has everything so far, then stops receiving (it is not running).
    let mut standby = TestCluster::standby_of(&primary).unwrap();
    let lost = deposit(&store, "account-2", 2).await;
    // A subscriber reads the events the standby never got, and checkpoints after them.
    let checkpoint = checkpoint(&store, kept.len() + lost.len()).await;
    drop(store);
    primary.stop(StopMode::Immediate).unwrap();

    standby.start().unwrap();
    standby.promote().unwrap();
    let store = store_at(&standby.url(), "bank").await;
    // The lost transactions' ids are handed out again on the new timeline; the new epoch puts
    // the new events after the checkpoint all the same.
    let new = deposit(&store, "account-1", 2).await;
    let resumed = store
        .read_all(checkpoint, 1000, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(ids(&resumed), new, "the subscriber gets every new event");
    let all = store
        .read_all(Position::START, 1000, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(
        ids(&all),
        [&kept[..], &new[..]].concat(),
        "the lost events are gone"
    );
    let reason: String = raw_client_at(&standby.url())
        .await
        .query_one(
            "SELECT reason FROM bank.log_epochs ORDER BY epoch DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("timeline"), "{reason}");
}
