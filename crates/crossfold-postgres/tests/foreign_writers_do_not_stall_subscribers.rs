//! The log's visibility horizon waits for this store's appends only. A writing transaction held
//! open in another database, on another table of the same database, or in another store of the
//! same database does not hold subscribers back: they keep receiving new events while it stays
//! open. An append held open does: committed events behind it stay invisible, are delivered
//! once it commits, in order, none skipped, and the store names the append that holds them
//! (its pid). A transaction that wrote before it appends is refused, since a reader may
//! already have passed it.
//!
//! Each test holds its own transactions open for the whole test: under a server-wide horizon
//! the subscribers of the first three would never see the new events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::{database_url, events, fresh_store, raw_client, sid};
use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, LogFilter, Position, RecordedEvent,
    SubscriptionExt, SubscriptionOptions,
};

/// How long a subscriber may take to receive events that nothing holds back: generous, for a
/// loaded machine. A stalled subscriber never receives them.
const DELIVERY: Duration = Duration::from_secs(30);

/// A connection to another database of the same server than the tests' own (`test` or
/// `postgres`, whichever the tests do not use; created when it does not exist).
async fn client_of_another_database() -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::from_str(&database_url()).unwrap();
    let own = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres")
        .to_owned();
    let other = if own == "test" { "postgres" } else { "test" };
    config.dbname(other);
    let connected = match config.connect(tokio_postgres::NoTls).await {
        Ok(connected) => connected,
        Err(_) => {
            // Racing creators: one wins, the others find it there.
            let _ = raw_client()
                .await
                .batch_execute(&format!("CREATE DATABASE \"{other}\""))
                .await;
            config.connect(tokio_postgres::NoTls).await.unwrap()
        }
    };
    let (client, connection) = connected;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let row = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap();
    assert_ne!(row.get::<_, String>(0), own, "not another database");
    client
}

/// Begins a transaction on `client` that writes to a temporary table (and so holds a
/// transaction id) and stays open until `COMMIT`. Returns its transaction id.
async fn hold_a_write_open(client: &tokio_postgres::Client) -> i64 {
    client
        .batch_execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS held (n int); BEGIN; INSERT INTO held VALUES (1)",
        )
        .await
        .unwrap();
    client
        .query_one("SELECT pg_current_xact_id()::text::int8", &[])
        .await
        .unwrap()
        .get(0)
}

/// Appends `n` events, one command each, to streams `prefix-0`, `prefix-1`, ...
async fn append_each(store: &common::TestStore, prefix: &str, n: usize) -> Vec<EventId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let batch = events("Appended", 1);
        ids.push(batch[0].event_id);
        store
            .append(AppendRequest::new().stream(
                sid(&format!("{prefix}-{i}")),
                ExpectedVersion::NoStream,
                batch,
            ))
            .await
            .unwrap();
    }
    ids
}

/// The next `n` events of a subscription, failing after [`DELIVERY`].
async fn next_events<S: SubscriptionExt + Unpin + Send>(
    subscription: &mut S,
    n: usize,
) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        let event = tokio::time::timeout(DELIVERY, subscription.next_event())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {n} events delivered within {DELIVERY:?}",
                    got.len()
                )
            })
            .unwrap();
        got.push(event);
    }
    got
}

/// A subscriber that is live before `hold` opens its transaction receives events appended
/// while that transaction stays open; `wait_for_position` and the head see them too.
async fn subscribers_keep_up_while(hold: impl AsyncFnOnce() -> tokio_postgres::Client) {
    let store = fresh_store().await;
    let mut live = store
        .store
        .subscribe(SubscriptionOptions::all().max_wait(Duration::from_millis(200)));
    let before = append_each(&store, "before", 2).await;
    let got = next_events(&mut live, 2).await;
    assert_eq!(got.iter().map(|e| e.event_id).collect::<Vec<_>>(), before);

    let holder = hold().await;
    let after = append_each(&store, "after", 3).await;
    let got = next_events(&mut live, 3).await;
    assert_eq!(got.iter().map(|e| e.event_id).collect::<Vec<_>>(), after);
    let last = got[2].position;
    store.wait_for_position(last, DELIVERY).await.unwrap();
    assert_eq!(store.head_position().await.unwrap(), last);
    // Nothing of this store holds the horizon: nothing is held back (once transactions that
    // commit while the question is asked, which count until they are out of its snapshot, are
    // gone).
    let deadline = tokio::time::Instant::now() + DELIVERY;
    loop {
        let held = store
            .held_back(Position::START, &LogFilter::all(), 100)
            .await
            .unwrap();
        if held.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "held back: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still open: it was open for everything above.
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_open_in_another_database_does_not_stall_subscribers() {
    subscribers_keep_up_while(async || {
        let other = client_of_another_database().await;
        hold_a_write_open(&other).await;
        other
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_open_on_another_table_of_the_same_database_does_not_stall_subscribers() {
    subscribers_keep_up_while(async || {
        let same = raw_client().await;
        hold_a_write_open(&same).await;
        same
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_open_in_another_store_does_not_stall_subscribers() {
    let other = fresh_store().await;
    let schema = other.schema().to_owned();
    subscribers_keep_up_while(async move || {
        let client = raw_client().await;
        client.batch_execute("BEGIN").await.unwrap();
        append_held(&client, &schema, EventId::generate()).await;
        client
    })
    .await;
    drop(other);
}

/// Calls the append function of `schema` on `client`, in whatever transaction it has open.
async fn append_held(client: &tokio_postgres::Client, schema: &str, id: EventId) {
    client
        .execute(
            &format!(
                "SELECT * FROM \"{schema}\".append(ARRAY['held'], ARRAY[-1]::int8[], ARRAY[1], \
                 ARRAY[1], ARRAY[1], ARRAY[$1::uuid], ARRAY['Held'], ARRAY[1], \
                 ARRAY['{{\"n\": 0}}'::jsonb], ARRAY[NULL::bytea], \
                 ARRAY['{{\"recorded_at\": 0}}'::jsonb])"
            ),
            &[&id.as_uuid()],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_held_open_holds_subscribers_back_and_is_delivered_first_after_it_commits() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    let mut live = store
        .store
        .subscribe(SubscriptionOptions::all().max_wait(Duration::from_millis(200)));
    append_each(&store, "before", 2).await;
    let checkpoint = next_events(&mut live, 2).await[1].position;
    // A writer open elsewhere at the same time changes nothing below.
    let foreign = raw_client().await;
    hold_a_write_open(&foreign).await;

    // An append that has written its event but not committed: its transaction id is below
    // those of the appends that commit after it.
    let held = raw_client().await;
    let pid: i32 = held
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    held.batch_execute("BEGIN").await.unwrap();
    let held_id = EventId::generate();
    append_held(&held, &schema, held_id).await;
    let after = append_each(&store, "after", 5).await;

    // Committed but behind the open append: not delivered, not readable, not the head.
    let early = live.read_available().await.unwrap().events;
    assert!(early.is_empty(), "delivered past an open append: {early:?}");
    assert_eq!(live.position(), checkpoint);
    assert_eq!(store.head_position().await.unwrap(), checkpoint);
    let visible = store
        .read_all(checkpoint, 100, &LogFilter::all())
        .await
        .unwrap();
    assert!(visible.is_empty(), "{visible:?}");

    // The store says what they wait for: five committed events, behind the held append.
    let waiting = store
        .held_back(checkpoint, &LogFilter::all(), 100)
        .await
        .unwrap()
        .expect("events are held back");
    assert_eq!(waiting.events, 5);
    assert!(!waiting.events_capped);
    let append = waiting.open_append.expect("the held append is named");
    assert_eq!(append.pid, Some(pid as u32));
    assert!(append.open_seconds >= 0.0);
    // Counted up to the limit, and through the filter.
    let capped = store
        .held_back(checkpoint, &LogFilter::all(), 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((capped.events, capped.events_capped), (3, true));
    let one = store
        .held_back(checkpoint, &LogFilter::streams([sid("after-1")]), 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.events, 1);
    // The health check names it too.
    let health = store.health().await.unwrap();
    assert_eq!(health.oldest_append.and_then(|a| a.pid), Some(pid as u32));

    held.batch_execute("COMMIT").await.unwrap();
    // Delivered after the commit: the held event first (lowest transaction id), then the
    // others in order, each once.
    let got = next_events(&mut live, 6).await;
    let ids: Vec<EventId> = got.iter().map(|e| e.event_id).collect();
    assert_eq!(ids[0], held_id);
    assert_eq!(&ids[1..], &after[..]);
    assert!(got.windows(2).all(|w| w[0].position < w[1].position));
    assert!(got.iter().all(|e| e.position > checkpoint));
    let extra = live.read_available().await.unwrap().events;
    assert!(extra.is_empty(), "delivered twice: {extra:?}");
    assert_eq!(
        store
            .held_back(checkpoint, &LogFilter::all(), 100)
            .await
            .unwrap(),
        None
    );
    foreign.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_wrote_before_appending_is_refused() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    let client = raw_client().await;
    client
        .batch_execute("CREATE TEMPORARY TABLE scratch (n int)")
        .await
        .unwrap();

    // A write, then an append: refused, and nothing is appended.
    client
        .batch_execute("BEGIN; INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
    let refused = client
        .execute(
            &format!(
                "SELECT * FROM \"{schema}\".append_one('late-1', -1, ARRAY[$1::uuid], \
                 ARRAY['Late'], ARRAY[1], ARRAY['{{}}'::jsonb], ARRAY[NULL::bytea], \
                 ARRAY['{{\"recorded_at\": 0}}'::jsonb])"
            ),
            &[&EventId::generate().as_uuid()],
        )
        .await
        .unwrap_err();
    let db = refused.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "CF006", "{db:?}");
    assert!(db.message().contains("first write"), "{}", db.message());
    client.batch_execute("ROLLBACK").await.unwrap();

    // Registered first, the same transaction may write elsewhere and then append: its events
    // are delivered once it commits.
    client
        .batch_execute(&format!(
            "BEGIN; SELECT \"{schema}\".register_append(); INSERT INTO scratch VALUES (2)"
        ))
        .await
        .unwrap();
    let id = EventId::generate();
    append_held(&client, &schema, id).await;
    client.batch_execute("COMMIT").await.unwrap();
    let log = store
        .read_all(Position::START, 10, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(log.iter().map(|e| e.event_id).collect::<Vec<_>>(), [id]);
    assert_eq!(store.stream_version(&sid("late-1")).await.unwrap().get(), 0);
}

/// Appends held open for random times (some rolled back) race appends of the store and
/// writers foreign to it, which come and go and keep readers asking which transactions they
/// may pass; a live subscriber, reading and moving its position all along, ends with every
/// committed event exactly once, in order, and none of the rolled-back ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_and_foreign_writers_lose_no_event() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    let run = Duration::from_secs(3);
    let stop = tokio::time::Instant::now() + run;
    let mut live = store
        .store
        .subscribe(SubscriptionOptions::all().max_wait(Duration::from_millis(50)));
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while tokio::time::Instant::now() < stop {
            if let Ok(Ok(event)) =
                tokio::time::timeout(Duration::from_millis(100), live.next_event()).await
            {
                got.push(event);
            }
        }
        (live, got)
    });

    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..2u64 {
        tasks.spawn(async move {
            let client = raw_client().await;
            let mut rng = fastrand::Rng::with_seed(writer);
            while tokio::time::Instant::now() < stop {
                hold_a_write_open(&client).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(0..30))).await;
                client.batch_execute("COMMIT").await.unwrap();
            }
            (Vec::new(), Vec::new())
        });
    }
    for appender in 0..3u64 {
        let schema = schema.clone();
        tasks.spawn(async move {
            let client = raw_client().await;
            let mut rng = fastrand::Rng::with_seed(100 + appender);
            let (mut committed, mut rolled_back) = (Vec::new(), Vec::new());
            while tokio::time::Instant::now() < stop {
                let id = EventId::generate();
                client.batch_execute("BEGIN").await.unwrap();
                append_held(&client, &schema, id).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(0..20))).await;
                if rng.u8(0..5) == 0 {
                    client.batch_execute("ROLLBACK").await.unwrap();
                    rolled_back.push(id);
                } else {
                    client.batch_execute("COMMIT").await.unwrap();
                    committed.push(id);
                }
            }
            (committed, rolled_back)
        });
    }
    let mut committed = Vec::new();
    let mut rolled_back = Vec::new();
    let mut i = 0;
    while tokio::time::Instant::now() < stop {
        committed.extend(append_each(&store, &format!("direct{i}"), 1).await);
        i += 1;
    }
    while let Some(done) = tasks.join_next().await {
        let (c, r) = done.unwrap();
        committed.extend(c);
        rolled_back.extend(r);
    }
    let (mut live, mut got) = reader.await.unwrap();
    let before = got.len();
    assert!(
        committed.len() > 20,
        "too few appends to race: {}",
        committed.len()
    );
    // The rest: whatever committed late, up to every committed event.
    if before < committed.len() {
        got.extend(next_events(&mut live, committed.len() - before).await);
    }
    let extra = live.read_available().await.unwrap().events;
    assert!(extra.is_empty(), "more than committed: {extra:?}");
    assert!(got.windows(2).all(|w| w[0].position < w[1].position));
    let mut delivered: Vec<EventId> = got.iter().map(|e| e.event_id).collect();
    delivered.sort_unstable();
    committed.sort_unstable();
    assert_eq!(delivered, committed, "delivered ≠ committed");
    assert!(
        rolled_back
            .iter()
            .all(|id| delivered.binary_search(id).is_err())
    );
}

/// A hot standby lists no open transaction in its snapshots and sees none of the primary's
/// locks: reading there, the horizon stays the oldest transaction open on the primary, so an
/// append held open there holds the standby's readers back as before, and nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_standby_never_reads_past_an_append_open_on_the_primary() {
    use crossfold_postgres::{PgConfig, PgEventStore};
    use crossfold_testkit::cluster::TestCluster;

    let primary = TestCluster::start_new().unwrap();
    let store = common::store_at(&primary.url(), "bank").await;
    store.migrate().await.unwrap();
    let mut standby = TestCluster::standby_of(&primary).unwrap();
    standby.start().unwrap();
    let replica = PgEventStore::connect(
        PgConfig::from_url(&standby.url())
            .unwrap()
            .schema("bank")
            .pool_size(2)
            .listen(false),
    )
    .await
    .unwrap();
    let raw_replica = common::raw_client_at(&standby.url()).await;
    let replayed = async |n: i64| {
        let deadline = tokio::time::Instant::now() + DELIVERY;
        loop {
            let count: i64 = raw_replica
                .query_one("SELECT count(*) FROM bank.events", &[])
                .await
                .unwrap()
                .get(0);
            if count >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "standby at {count} of {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let append = async |stream: &str| {
        let batch = events("Appended", 1);
        let id = batch[0].event_id;
        store
            .append(AppendRequest::new().stream(sid(stream), ExpectedVersion::NoStream, batch))
            .await
            .unwrap();
        id
    };
    let before = append("before-0").await;
    replayed(1).await;

    let held = common::raw_client_at(&primary.url()).await;
    held.batch_execute("BEGIN").await.unwrap();
    let held_id = EventId::generate();
    append_held(&held, "bank", held_id).await;
    let mut after = Vec::new();
    for i in 0..3 {
        after.push(append(&format!("after-{i}")).await);
    }
    // The standby has the three commits (and the held rows, invisible): its readers see
    // nothing past the held append.
    replayed(4).await;
    let visible = replica
        .read_all(Position::START, 100, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(
        visible.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        [before]
    );
    assert_eq!(replica.head_position().await.unwrap(), visible[0].position);
    let waiting = replica
        .held_back(visible[0].position, &LogFilter::all(), 100)
        .await
        .unwrap()
        .expect("the committed events wait");
    assert_eq!(waiting.events, 3);

    held.batch_execute("COMMIT").await.unwrap();
    replayed(5).await;
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + DELIVERY;
    while all.len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "standby shows {all:?}"
        );
        all = replica
            .read_all(Position::START, 100, &LogFilter::all())
            .await
            .unwrap();
    }
    let ids: Vec<EventId> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids[0], before);
    assert_eq!(ids[1], held_id);
    assert_eq!(&ids[2..], &after[..]);
}
