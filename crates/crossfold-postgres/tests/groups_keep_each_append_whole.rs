//! Group commit's function: several appends in one call and one transaction, each all or
//! nothing on its own. A request whose versions do not hold, whose event id is stored already
//! or whose stream row was set back is refused alone and writes nothing; the others commit
//! together. The function checks what it is given, keeps `synchronous_commit` on, and a call
//! the server refuses as a whole is sent again as separate appends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{Commit, events, fresh_store_in, fresh_store_in_with, json_event, raw_client, sid};
use crossfold_core::{
    AppendRequest, EventStore, ExpectedVersion, LogFilter, Position, StoreError, StreamVersion,
};
use crossfold_postgres::PgEventStore;

fn v(n: u64) -> StreamVersion {
    StreamVersion::new(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_writes_nothing_and_the_others_commit_together() {
    let store = fresh_store_in(Commit::Grouped).await;
    let schema = store.schema().to_owned();
    let stored = json_event("Stored", "{}");
    store
        .append(
            AppendRequest::new()
                .stream(sid("s-b"), ExpectedVersion::NoStream, events("B", 1))
                .stream(sid("s-c0"), ExpectedVersion::NoStream, vec![stored.clone()])
                .stream(sid("s-e"), ExpectedVersion::NoStream, events("E", 3)),
        )
        .await
        .unwrap();
    // Someone with the owner's rights sets a stream row back below its events.
    raw_client()
        .await
        .batch_execute(&format!(
            "UPDATE {schema}.streams SET version = 1 WHERE stream_id = 's-e'"
        ))
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();

    let outcomes = store
        .append_together(vec![
            AppendRequest::new().stream(sid("s-a"), ExpectedVersion::NoStream, events("A", 2)),
            AppendRequest::new().stream(sid("s-b"), ExpectedVersion::Exact(v(5)), events("B", 1)),
            AppendRequest::new().stream(sid("s-c1"), ExpectedVersion::Any, vec![stored.clone()]),
            AppendRequest::new()
                .stream(sid("s-d1"), ExpectedVersion::NoStream, events("D", 1))
                .check(sid("s-d2"), ExpectedVersion::NoStream)
                .stream(sid("s-d3"), ExpectedVersion::Any, events("D", 2)),
            AppendRequest::new().stream(sid("s-e"), ExpectedVersion::Exact(v(1)), events("E", 1)),
            AppendRequest::new().check(sid("s-f"), ExpectedVersion::NoStream),
            AppendRequest::new().stream(sid("s-g"), ExpectedVersion::Any, events("G", 1)),
            AppendRequest::new()
                .check(sid("s-h1"), ExpectedVersion::Any)
                .stream(sid("s-h2"), ExpectedVersion::StreamExists, events("H", 1)),
        ])
        .await;
    assert_eq!(outcomes.len(), 8);
    let mut outcomes = outcomes.into_iter();
    let mut next = || outcomes.next().unwrap();

    let a = next().unwrap();
    assert_eq!(a.version_of(&sid("s-a")), Some(v(2)));
    match next() {
        Err(StoreError::Conflict(c)) => {
            assert_eq!(c.len(), 1);
            assert_eq!((c[0].stream.as_str(), c[0].actual), ("s-b", v(1)));
            assert_eq!(c[0].expected, ExpectedVersion::Exact(v(5)));
        }
        other => panic!("expected a conflict on s-b, got {other:?}"),
    }
    match next() {
        Err(StoreError::DuplicateEvent(id)) => assert_eq!(id, stored.event_id),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    let d = next().unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.version_of(&sid("s-d1")), Some(v(1)));
    assert_eq!(d.version_of(&sid("s-d3")), Some(v(2)));
    match next() {
        Err(StoreError::Conflict(c)) => {
            assert_eq!((c[0].stream.as_str(), c[0].actual), ("s-e", v(3)));
        }
        other => panic!("expected the stream set back to conflict, got {other:?}"),
    }
    assert!(next().unwrap().is_empty(), "a check writes nothing");
    let g = next().unwrap();
    assert_eq!(g.version_of(&sid("s-g")), Some(v(1)));
    match next() {
        Err(StoreError::Conflict(c)) => {
            assert_eq!((c[0].stream.as_str(), c[0].actual), ("s-h2", v(0)));
        }
        other => panic!("expected a conflict on the absent s-h2, got {other:?}"),
    }

    // The appends that committed did so in one transaction, in request order.
    let positions: Vec<Position> = [&a, &d, &g]
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.position))
        .collect();
    assert_eq!(positions.len(), 6);
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(
        positions
            .iter()
            .all(|p| p.commit() == positions[0].commit()),
        "one commit for the group: {positions:?}"
    );
    // The refused ones wrote nothing, not even a stream row (a stream checked while absent
    // gets a row at version 0 when its append commits, as s-d2 and s-f did).
    assert_eq!(store.stream_version(&sid("s-b")).await.unwrap(), v(1));
    assert!(!store.stream_exists(&sid("s-c1")).await.unwrap());
    assert!(!store.stream_exists(&sid("s-h2")).await.unwrap());
    let rows: i64 = raw_client()
        .await
        .query_one(
            &format!(
                "SELECT count(*) FROM {schema}.streams \
                 WHERE stream_id IN ('s-c1', 's-h1', 's-h2')"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    store
        .wait_for_position(
            *positions.last().unwrap(),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    let log = store.read_all(head, 100, &LogFilter::all()).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_as_a_whole_is_sent_again_as_separate_appends() {
    let store = fresh_store_in(Commit::Grouped).await;
    // Text that is not JSON fails the whole call before any append runs (the server parses
    // the arguments first): each request then goes alone, with an outcome of its own.
    let bad = json_event("J", "{not json");
    let outcomes = store
        .append_together(vec![
            AppendRequest::new().stream(sid("a"), ExpectedVersion::NoStream, events("A", 1)),
            AppendRequest::new().stream(sid("b"), ExpectedVersion::Any, vec![bad]),
            AppendRequest::new().stream(sid("c"), ExpectedVersion::NoStream, events("C", 1)),
        ])
        .await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(&outcomes[1], Err(StoreError::InvalidRequest(_))),
        "{:?}",
        outcomes[1]
    );
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    assert!(!store.stream_exists(&sid("b")).await.unwrap());
    // An invalid request is refused before anything is sent, and the others still commit.
    let same = json_event("E", "{}");
    let outcomes = store
        .append_together(vec![
            AppendRequest::new().stream(sid("d"), ExpectedVersion::NoStream, events("D", 1)),
            AppendRequest::new().stream(sid("e"), ExpectedVersion::Any, vec![same.clone(), same]),
        ])
        .await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(&outcomes[1], Err(StoreError::InvalidRequest(_))),
        "{:?}",
        outcomes[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_function_checks_what_it_is_given() {
    let store = fresh_store_in(Commit::Grouped).await;
    let schema = store.schema().to_owned();
    let client = raw_client().await;
    let call = |counts: &str, streams: &str, events: &str| {
        format!(
            "SELECT * FROM {schema}.append_group({counts}, {streams}, \
             ARRAY[-1, -1]::int8[], ARRAY[1, 1], ARRAY[1, 1], ARRAY[1, 1], \
             ARRAY['0190b4d2-0000-7000-8000-0000000000a1', \
                   '0190b4d2-0000-7000-8000-0000000000a2']::uuid[], \
             ARRAY['E', 'E'], ARRAY[1, 1], ARRAY['{{}}', '{{}}']::jsonb[], \
             ARRAY[NULL, NULL]::bytea[], {events})"
        )
    };
    let refused = [
        // Counts that do not add up to the arrays.
        call(
            "ARRAY[2, 1], ARRAY[1, 1], ARRAY[1, 1]",
            "ARRAY['x', 'y']",
            "ARRAY['{}', '{}']::jsonb[]",
        ),
        call(
            "ARRAY[1, 1], ARRAY[1, 1], ARRAY[1, 2]",
            "ARRAY['x', 'y']",
            "ARRAY['{}', '{}']::jsonb[]",
        ),
        // A negative count.
        call(
            "ARRAY[-1, 3], ARRAY[1, 1], ARRAY[1, 1]",
            "ARRAY['x', 'y']",
            "ARRAY['{}', '{}']::jsonb[]",
        ),
        // Fewer event counts than requests.
        call(
            "ARRAY[1, 1], ARRAY[2], ARRAY[1, 1]",
            "ARRAY['x', 'y']",
            "ARRAY['{}', '{}']::jsonb[]",
        ),
        // An array that does not count from 1.
        call(
            "ARRAY[1, 1], ARRAY[1, 1], ARRAY[1, 1]",
            "'[0:1]={x,y}'::text[]",
            "ARRAY['{}', '{}']::jsonb[]",
        ),
        // A stream that is NULL: it would sort after the others and compare with none.
        call(
            "ARRAY[1, 1], ARRAY[1, 1], ARRAY[1, 1]",
            "ARRAY['x', NULL]",
            "ARRAY['{}', '{}']::jsonb[]",
        ),
        // One append naming a stream twice.
        call(
            "ARRAY[2], ARRAY[2], ARRAY[2]",
            "ARRAY['x', 'x']",
            "ARRAY['{}', '{}']::jsonb[]",
        ),
        // One append whose two events both say they are the first of stream x (and y, counted
        // for one event, gets none): versions the stream row would not say.
        call(
            "ARRAY[2], ARRAY[2], ARRAY[2]",
            "ARRAY['x', 'y']",
            "ARRAY['{}', '{}']::jsonb[]",
        ),
    ];
    for statement in &refused {
        let err = client.batch_execute(statement).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("22023"),
            "{statement}: {err:?}"
        );
    }
    // More than 64 appends.
    let err = client
        .batch_execute(&format!(
            "SELECT * FROM {schema}.append_group(array_fill(0, ARRAY[65]), \
             array_fill(0, ARRAY[65]), array_fill(0, ARRAY[65]), '{{}}', '{{}}', '{{}}', \
             '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}')"
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("54000"), "{err:?}");
    // None of it wrote anything; the same arrays with the right counts do.
    assert_eq!(store.head_position().await.unwrap(), Position::START);
    let rows = client
        .query(
            &call(
                "ARRAY[1, 1], ARRAY[1, 1], ARRAY[1, 1]",
                "ARRAY['x', 'y']",
                "ARRAY['{}', '{}']::jsonb[]",
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(store.stream_version(&sid("y")).await.unwrap(), v(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_keeps_synchronous_commit_on() {
    let store = fresh_store_in(Commit::Grouped).await;
    let schema = store.schema().to_owned();
    let mut client = raw_client().await;
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .unwrap();
    tx.batch_execute(&format!(
        "SELECT * FROM {schema}.append_group(ARRAY[1], ARRAY[1], ARRAY[1], ARRAY['s'], \
             ARRAY[5]::int8[], ARRAY[1], ARRAY[1], ARRAY[1], \
             ARRAY['0190b4d2-0000-7000-8000-0000000000cc'::uuid], '{{E}}', '{{1}}', \
             '{{\"{{}}\"}}'::jsonb[], '{{NULL}}'::bytea[], '{{\"{{}}\"}}'::jsonb[])"
    ))
    .await
    .unwrap();
    // The only append was refused (version 5 expected of a new stream) and its subtransaction
    // rolled back: the setting was raised for the group's own transaction, not inside one of
    // its subtransactions, which would have undone it.
    let setting: String = tx
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, "on");
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_a_group_may_come_in_any_order_and_share_streams() {
    let store = fresh_store_in(Commit::Grouped).await;
    let outcomes = store
        .append_together(vec![
            AppendRequest::new().stream(sid("z"), ExpectedVersion::NoStream, events("Z", 1)),
            AppendRequest::new()
                .stream(sid("y"), ExpectedVersion::NoStream, events("Y", 1))
                .stream(sid("a"), ExpectedVersion::NoStream, events("A", 1)),
            // After the first: z is at version 1 now.
            AppendRequest::new().stream(sid("z"), ExpectedVersion::NoStream, events("Z", 1)),
            AppendRequest::new().stream(sid("z"), ExpectedVersion::Exact(v(1)), events("Z", 2)),
        ])
        .await;
    assert_eq!(
        outcomes[0].as_ref().unwrap().version_of(&sid("z")),
        Some(v(1))
    );
    assert_eq!(outcomes[1].as_ref().unwrap().len(), 2);
    assert!(
        matches!(&outcomes[2], Err(StoreError::Conflict(c)) if c[0].actual == v(1)),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(
        outcomes[3].as_ref().unwrap().version_of(&sid("z")),
        Some(v(3))
    );
    let read = store.read_stream(&sid("z"), v(0), 10).await.unwrap();
    assert_eq!(read.events.len(), 3);
}

/// Groups whose appends write and check overlapping streams in every order, sent at once
/// from several tasks: the group function locks every row of a group first, in ascending
/// order, so no two groups deadlock. A deadlock would fail a call as a whole, and its appends
/// would then go alone, in transactions of their own: every call here must commit in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_over_the_same_streams_in_any_order_do_not_deadlock() {
    let store = Arc::new(fresh_store_in_with(Commit::Grouped, |c| c.pool_size(8)).await);
    let streams: Vec<_> = (0..6).map(|i| sid(&format!("s-{i}"))).collect();
    for s in &streams {
        store
            .append(AppendRequest::new().stream(
                s.clone(),
                ExpectedVersion::NoStream,
                events("O", 1),
            ))
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..6u64 {
        let (store, streams) = (store.clone(), streams.clone());
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(task);
            for _ in 0..25 {
                let mut requests = Vec::new();
                for _ in 0..3 {
                    let mut picked = streams.clone();
                    rng.shuffle(&mut picked);
                    let mut request = AppendRequest::new();
                    for (k, s) in picked.iter().take(2).enumerate() {
                        request = request.stream(s.clone(), ExpectedVersion::Any, events("W", 1));
                        if k == 0 {
                            // A check (FOR SHARE) of another stream.
                            request =
                                request.check(picked[5].clone(), ExpectedVersion::StreamExists);
                        }
                    }
                    requests.push(request);
                }
                let outcomes = store.append_together(requests).await;
                let mut commits = Vec::new();
                for outcome in outcomes {
                    let appended = outcome.unwrap();
                    commits.extend(appended.events.iter().map(|e| e.position.commit()));
                }
                assert!(
                    commits.iter().all(|c| *c == commits[0]),
                    "a call went alone (deadlocked?): {commits:?}"
                );
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_group_commit_the_executor_may_admit_more_commands_than_connections() {
    // A pool of 4 serves 3 commands at once; with group commit, appends need no connection
    // each, and four times as many commands are admitted.
    let alone = fresh_store_in(Commit::Alone).await;
    assert_eq!(alone.store.concurrency_limit(), Some(3));
    let grouped = fresh_store_in(Commit::Grouped).await;
    assert_eq!(grouped.store.concurrency_limit(), Some(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_group_function_appends_go_alone() {
    // A schema from before group commit (migration 8): the store still appends, each alone.
    let schema = common::fresh_schema();
    let _drop = common::SchemaGuard(schema.clone());
    let config = common::config(&schema)
        .group_commit(true)
        .group_commit_calls(1);
    let store = PgEventStore::connect(config).await.unwrap();
    store.migrate_to(5).await.unwrap();
    let outcomes = futures_util::future::join_all((0..8).map(|i| {
        store.append(AppendRequest::new().stream(
            sid(&format!("old-{i}")),
            ExpectedVersion::NoStream,
            events("E", 1),
        ))
    }))
    .await;
    for outcome in &outcomes {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    for i in 0..8 {
        assert_eq!(
            store
                .stream_version(&sid(&format!("old-{i}")))
                .await
                .unwrap(),
            v(1)
        );
    }
}

/// The transaction ids (`xmin`) that wrote the events of `streams`: one for a group written in
/// one pass (migration 12: one subtransaction for all that the group writes), one per request
/// when the group went request after request.
async fn writers_of(schema: &str, streams: &[&str]) -> i64 {
    let list = streams
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    raw_client()
        .await
        .query_one(
            &format!(
                "SELECT count(DISTINCT xmin::text) FROM {schema}.events \
                 WHERE stream_id IN ({list})"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_decided_and_written_in_one_pass_unless_a_unique_key_refuses_it() {
    let store = fresh_store_in(Commit::Grouped).await;
    let schema = store.schema().to_owned();
    store
        .append(AppendRequest::new().stream(sid("p-b"), ExpectedVersion::NoStream, events("B", 2)))
        .await
        .unwrap();
    // Single- and multi-stream requests, a new stream, a check, two requests on one stream and
    // a refused one: decided in one pass, all that holds written by one subtransaction.
    let outcomes = store
        .append_together(vec![
            AppendRequest::new().stream(sid("p-a"), ExpectedVersion::NoStream, events("A", 1)),
            AppendRequest::new()
                .stream(sid("p-b"), ExpectedVersion::Exact(v(2)), events("B", 1))
                .check(sid("p-z"), ExpectedVersion::NoStream)
                .stream(sid("p-c"), ExpectedVersion::Any, events("C", 2)),
            AppendRequest::new().stream(sid("p-b"), ExpectedVersion::Exact(v(2)), events("B", 1)),
            AppendRequest::new().stream(sid("p-a"), ExpectedVersion::Exact(v(1)), events("A", 3)),
        ])
        .await;
    assert_eq!(
        outcomes[0].as_ref().unwrap().version_of(&sid("p-a")),
        Some(v(1))
    );
    let second = outcomes[1].as_ref().unwrap();
    assert_eq!(second.version_of(&sid("p-b")), Some(v(3)));
    assert_eq!(second.version_of(&sid("p-c")), Some(v(2)));
    assert!(
        matches!(&outcomes[2], Err(StoreError::Conflict(c)) if c[0].actual == v(3)),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(
        outcomes[3].as_ref().unwrap().version_of(&sid("p-a")),
        Some(v(4))
    );
    assert_eq!(writers_of(&schema, &["p-a", "p-c"]).await, 1);
    // The checked stream got its row at version 0, as `append` gives it.
    let row: i64 = raw_client()
        .await
        .query_one(
            &format!("SELECT version FROM {schema}.streams WHERE stream_id = 'p-z'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(row, 0);
    let read = store.read_stream(&sid("p-a"), v(0), 10).await.unwrap();
    assert_eq!(
        read.events
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        [v(1), v(2), v(3), v(4)]
    );

    // An event id already stored: the one pass rolls back and the group goes request after
    // request, each in a subtransaction of its own, in the same transaction.
    let stored = json_event("Stored", "{}");
    store
        .append(AppendRequest::new().stream(
            sid("q-0"),
            ExpectedVersion::NoStream,
            vec![stored.clone()],
        ))
        .await
        .unwrap();
    let outcomes = store
        .append_together(vec![
            AppendRequest::new().stream(sid("q-a"), ExpectedVersion::NoStream, events("A", 1)),
            AppendRequest::new().stream(sid("q-b"), ExpectedVersion::Any, vec![stored.clone()]),
            AppendRequest::new().stream(sid("q-c"), ExpectedVersion::NoStream, events("C", 1)),
        ])
        .await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(&outcomes[1], Err(StoreError::DuplicateEvent(id)) if *id == stored.event_id),
        "{:?}",
        outcomes[1]
    );
    let (a, c) = (outcomes[0].as_ref().unwrap(), outcomes[2].as_ref().unwrap());
    assert_eq!(
        a.events[0].position.commit(),
        c.events[0].position.commit(),
        "one transaction for the group"
    );
    assert_eq!(writers_of(&schema, &["q-a", "q-c"]).await, 2);
}

/// A group that checks a stream which another transaction creates while the group waits for
/// another row: the check is decided against a row the group holds until it commits (or as
/// absent, and the group's write of the row then falls back to going request after request),
/// never against a row it read without a lock — someone else could then change the stream
/// before the group commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_stream_created_while_the_group_waits_stays_locked_until_it_commits() {
    let store = fresh_store_in(Commit::Grouped).await;
    let schema = store.schema().to_owned();
    store
        .append(AppendRequest::new().stream(sid("tz"), ExpectedVersion::NoStream, events("Z", 1)))
        .await
        .unwrap();
    // Another transaction creates `ts` (not committed yet) and one holds `tz`.
    let mut creator = raw_client().await;
    let creating = creator.transaction().await.unwrap();
    creating
        .batch_execute(&format!(
            "INSERT INTO {schema}.streams (stream_id, version) VALUES ('ts', 0)"
        ))
        .await
        .unwrap();
    let mut holder = raw_client().await;
    let holding = holder.transaction().await.unwrap();
    holding
        .batch_execute(&format!(
            "SELECT 1 FROM {schema}.streams WHERE stream_id = 'tz' FOR UPDATE"
        ))
        .await
        .unwrap();
    // The group: check `ts` absent (version 0), write one event to `tz`. It locks `ts` (no
    // row yet), then waits for `tz`.
    let group_schema = schema.clone();
    let group = tokio::spawn(async move {
        let client = raw_client().await;
        client.batch_execute("BEGIN").await.unwrap();
        let rows = client
            .query(
                &format!(
                    "SELECT refused FROM {group_schema}.append_group(ARRAY[1, 1], ARRAY[0, 1], \
                     ARRAY[0, 1], ARRAY['ts', 'tz'], ARRAY[0, -1]::int8[], ARRAY[0, 1], \
                     ARRAY[1], ARRAY[1], ARRAY['0190b4d2-0000-7000-8000-0000000000d1'::uuid], \
                     ARRAY['E'], ARRAY[1], ARRAY['{{}}']::jsonb[], ARRAY[NULL]::bytea[], \
                     ARRAY['{{}}']::jsonb[])"
                ),
                &[],
            )
            .await
            .unwrap();
        let refused: Vec<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
        (client, refused)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    creating.commit().await.unwrap();
    holding.commit().await.unwrap();
    let (client, refused) = group.await.unwrap();
    assert_eq!(refused, [None, None], "both appends hold");
    // The group's transaction is still open: `ts` must be locked by it.
    let other = raw_client().await;
    other
        .batch_execute("SET lock_timeout = '300ms'")
        .await
        .unwrap();
    let err = other
        .batch_execute(&format!(
            "UPDATE {schema}.streams SET version = 1 WHERE stream_id = 'ts'"
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("55P03"), "{err:?}");
    client.batch_execute("ROLLBACK").await.unwrap();
}
