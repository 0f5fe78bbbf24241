//! Snapshots of command state in PostgreSQL (migration 11): saved and loaded under their key,
//! a snapshot reflecting fewer events under the same state version never replacing a newer
//! one, refusals — from the store and from the `save_snapshot` function called directly —
//! that write nothing, the summary and the operator's drop, and the application role saving
//! through the function while it can write and delete nothing in the table directly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{events, fresh_store, raw_client, raw_client_at, sid, store_at};
use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, Snapshot, SnapshotStore, StoreError,
    StreamId, StreamVersion, Timestamp,
};
use crossfold_testkit::cluster::TestCluster;

/// A snapshot of `state` under `streams`, at `versions` (of `streams`, then of nothing
/// discovered).
fn snapshot(state: &str, state_version: u32, streams: &[&str], versions: &[u64]) -> Snapshot {
    Snapshot {
        state: state.to_owned(),
        state_version,
        streams: streams.iter().map(|s| sid(s)).collect(),
        discovered: Vec::new(),
        versions: versions.iter().map(|v| StreamVersion::new(*v)).collect(),
        floor: None,
        payload: format!("{{\"versions\": {versions:?}}}").into_bytes(),
        taken_at: Timestamp::default(),
    }
}

fn key(streams: &[&str]) -> Vec<StreamId> {
    streams.iter().map(|s| sid(s)).collect()
}

/// Appends `n` events to `stream` (whatever its version).
async fn append(store: &impl EventStore, stream: &str, n: usize) -> EventId {
    let appended = store
        .append(AppendRequest::new().stream(sid(stream), ExpectedVersion::Any, events("E", n)))
        .await
        .unwrap();
    appended.events.last().unwrap().event_id
}

/// The snapshot as loaded, with the time the store set replaced by the one it was saved with.
fn as_saved(loaded: &Option<Snapshot>, saved: &Snapshot) -> Option<Snapshot> {
    loaded.clone().map(|mut s| {
        s.taken_at = saved.taken_at;
        s
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_snapshot_loads_under_its_key_and_missing_keys_load_as_none() {
    let store = fresh_store().await;
    append(&store, "account-1", 3).await;
    let floor = append(&store, "account-2", 2).await;

    let mut saved = snapshot("bank.transfer", 2, &["account-1"], &[3, 2]);
    saved.discovered = vec![sid("account-2")];
    saved.floor = Some(floor);
    let before = Timestamp::now();
    store.save_snapshot(&saved).await.unwrap();

    let loaded = store
        .load_snapshots(
            "bank.transfer",
            &[
                key(&["account-9"]),
                key(&["account-1"]),
                key(&["account-2"]),
                key(&["account-1", "account-2"]),
                key(&["account-1"]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(loaded.len(), 5);
    assert_eq!(loaded[0], None);
    assert_eq!(as_saved(&loaded[1], &saved), Some(saved.clone()));
    // A discovered stream is not part of the key; a key with more streams is another key.
    assert_eq!((&loaded[2], &loaded[3]), (&None, &None));
    assert_eq!(loaded[4], loaded[1]);
    let taken_at = loaded[1].as_ref().unwrap().taken_at;
    assert!(
        taken_at.unix_micros() >= before.unix_micros() - 5_000_000,
        "{taken_at}"
    );

    // Another state's name finds nothing under the same key, and no keys find nothing.
    let other = store
        .load_snapshots("bank.balance", &[key(&["account-1"])])
        .await
        .unwrap();
    assert_eq!(other, [None]);
    assert!(
        store
            .load_snapshots("bank.transfer", &[])
            .await
            .unwrap()
            .is_empty()
    );

    // A key of several streams is found in the order it was declared, only in that order.
    let pair = snapshot("bank.pair", 1, &["account-2", "account-1"], &[2, 3]);
    store.save_snapshot(&pair).await.unwrap();
    let loaded = store
        .load_snapshots(
            "bank.pair",
            &[
                key(&["account-1", "account-2"]),
                key(&["account-2", "account-1"]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(loaded[0], None);
    assert_eq!(as_saved(&loaded[1], &pair), Some(pair));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_events_under_the_same_state_version_never_replace_a_snapshot() {
    let store = fresh_store().await;
    append(&store, "account-1", 5).await;
    let load = async |store: &common::TestStore| {
        store
            .load_snapshots("bank.balance", &[key(&["account-1"])])
            .await
            .unwrap()
            .remove(0)
            .unwrap()
    };

    store
        .save_snapshot(&snapshot("bank.balance", 1, &["account-1"], &[4]))
        .await
        .unwrap();
    // A process that folded fewer events saves late: the further snapshot stays.
    store
        .save_snapshot(&snapshot("bank.balance", 1, &["account-1"], &[2]))
        .await
        .unwrap();
    assert_eq!(load(&store).await.versions, [StreamVersion::new(4)]);
    // As many events: the later one is kept.
    let mut same = snapshot("bank.balance", 1, &["account-1"], &[4]);
    same.payload = b"{\"later\": true}".to_vec();
    store.save_snapshot(&same).await.unwrap();
    assert_eq!(load(&store).await.payload, same.payload);
    // More events replace it.
    store
        .save_snapshot(&snapshot("bank.balance", 1, &["account-1"], &[5]))
        .await
        .unwrap();
    assert_eq!(load(&store).await.versions, [StreamVersion::new(5)]);
    // Under another state version, fewer events replace it too: the old one is of no use to
    // the code that took the new one.
    store
        .save_snapshot(&snapshot("bank.balance", 2, &["account-1"], &[1]))
        .await
        .unwrap();
    let now = load(&store).await;
    assert_eq!(
        (now.state_version, now.versions),
        (2, vec![StreamVersion::new(1)])
    );
    let summary = store.snapshot_summary().await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].count, 1);
}

/// How many snapshots the store holds, of every state.
async fn held(store: &common::TestStore) -> u64 {
    store
        .snapshot_summary()
        .await
        .unwrap()
        .iter()
        .map(|s| s.count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_snapshots_are_refused_and_write_nothing() {
    let store = fresh_store().await;
    append(&store, "account-1", 3).await;

    let invalid = |result: Result<(), StoreError>| match result {
        Err(StoreError::InvalidRequest(why)) => why,
        other => panic!("expected InvalidRequest, got {other:?}"),
    };
    // Versions beyond the streams' own: an existing stream, and one that does not exist
    // (version 0).
    let why = invalid(
        store
            .save_snapshot(&snapshot("bank.balance", 1, &["account-1"], &[4]))
            .await,
    );
    assert!(why.contains("account-1") && why.contains("at 3"), "{why}");
    let mut beyond = snapshot("bank.balance", 1, &["account-1"], &[3, 1]);
    beyond.discovered = vec![sid("account-9")];
    let why = invalid(store.save_snapshot(&beyond).await);
    assert!(why.contains("account-9"), "{why}");
    // A stream named twice, and versions that do not match the streams.
    let mut twice = snapshot("bank.balance", 1, &["account-1"], &[3, 3]);
    twice.discovered = vec![sid("account-1")];
    invalid(store.save_snapshot(&twice).await);
    invalid(
        store
            .save_snapshot(&snapshot("bank.balance", 1, &["account-1"], &[3, 0]))
            .await,
    );
    invalid(
        store
            .save_snapshot(&snapshot("", 1, &["account-1"], &[3]))
            .await,
    );
    invalid(
        store
            .save_snapshot(&snapshot("bank.balance", u32::MAX, &["account-1"], &[3]))
            .await,
    );
    assert_eq!(held(&store).await, 0);

    // The function checks for itself what it is given, whoever calls it.
    let client = raw_client().await;
    let save = |args: &str| {
        format!(
            "SELECT \"{}\".save_snapshot({args})",
            store.schema.0.as_str()
        )
    };
    for args in [
        // Stream twice, across the streams and the discovered ones.
        "'s', 1, '{account-1}', '{account-1}', '{1,1}', NULL, 'x'",
        // Stream twice in the key.
        "'s', 1, '{account-1,account-1}', '{}', '{1,1}', NULL, 'x'",
        // Not one version per stream.
        "'s', 1, '{account-1}', '{}', '{1,1}', NULL, 'x'",
        "'s', 1, '{account-1}', '{}', '{}', NULL, 'x'",
        // Beyond the stream's version, or a stream that does not exist.
        "'s', 1, '{account-1}', '{}', '{4}', NULL, 'x'",
        "'s', 1, '{account-2}', '{}', '{1}', NULL, 'x'",
        // Negative or NULL versions, a negative state version.
        "'s', 1, '{account-1}', '{}', '{-1}', NULL, 'x'",
        "'s', 1, '{account-1}', '{}', '{NULL}', NULL, 'x'",
        "'s', -1, '{account-1}', '{}', '{1}', NULL, 'x'",
        // Stream ids the store would not accept.
        "'s', 1, '{\" account-1\"}', '{}', '{0}', NULL, 'x'",
        "'s', 1, '{account-1}', ARRAY[E'a\\tb'], '{1,0}', NULL, 'x'",
        "'s', 1, ARRAY[repeat('x', 256)], '{}', '{0}', NULL, 'x'",
        "'s', 1, '{\"\"}', '{}', '{0}', NULL, 'x'",
        "'s', 1, '{NULL}', '{}', '{0}', NULL, 'x'",
        // No streams, arrays of another shape.
        "'s', 1, '{}', '{}', '{}', NULL, 'x'",
        "'s', 1, '[0:0]={account-1}', '{}', '{1}', NULL, 'x'",
        "'s', 1, '{{account-1}}', '{}', '{1}', NULL, 'x'",
        "'s', 1, '{account-1}', NULL, '{1}', NULL, 'x'",
        // State names: empty, over 200 bytes.
        "'', 1, '{account-1}', '{}', '{1}', NULL, 'x'",
        "repeat('s', 201), 1, '{account-1}', '{}', '{1}', NULL, 'x'",
        // No payload, an oversized one, a floor that is not an event id.
        "'s', 1, '{account-1}', '{}', '{1}', NULL, NULL",
        "'s', 1, '{account-1}', '{}', '{1}', NULL, \
         convert_to(repeat('x', 64 * 1024 * 1024 + 1), 'UTF8')",
        "'s', 1, '{account-1}', '{}', '{1}', '0190b4d2-0000-4000-8000-000000000000', 'x'",
    ] {
        let err = client.query_one(&save(args), &[]).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("CF011"),
            "{args}: {err:?}"
        );
    }
    assert_eq!(held(&store).await, 0);

    // At or below the streams' versions it goes through, a stream that does not exist at 0.
    let row = client
        .query_one(
            &save(
                "'s', 1, '{account-1}', '{account-2}', '{3,0}', \
                 '0190b4d2-0000-7000-8000-000000000000', 'x'",
            ),
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(held(&store).await, 1);
}

/// The function's rules for stream ids are the store's: every id is accepted by one exactly
/// when `StreamId::from_stored` accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_checks_stream_ids_as_the_store_does() {
    let store = fresh_store().await;
    let client = raw_client().await;
    let ids: Vec<String> = [
        "account-1",
        "$idempotency-1",
        "é-日本",
        " a",
        "a ",
        "a b",
        "\ta",
        "a\n",
        "a\u{1}b",
        "a\u{7f}b",
        "a\u{85}b",
        "a\u{9f}b",
        "a\u{a0}b",
        "\u{a0}a",
        "a\u{a0}",
        "\u{1680}a",
        "a\u{2000}",
        "\u{200a}a",
        "a\u{200b}",
        "\u{2028}a",
        "a\u{2029}",
        "\u{202f}a",
        "a\u{205f}",
        "\u{3000}a",
        "a\u{feff}",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        "x".repeat(255),
        "x".repeat(256),
        "é".repeat(127) + "x",
        "é".repeat(128),
    ])
    .collect();
    let rows = client
        .query(
            &format!(
                "SELECT \"{}\".stream_id_problem(u.id) FROM unnest($1::text[]) \
                 WITH ORDINALITY AS u(id, ord) ORDER BY u.ord",
                store.schema.0
            ),
            &[&ids],
        )
        .await
        .unwrap();
    for (id, row) in ids.iter().zip(rows) {
        let problem: Option<String> = row.get(0);
        assert_eq!(
            problem.is_none(),
            StreamId::from_stored(id).is_ok(),
            "{id:?}: {problem:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_counts_each_state_and_a_drop_removes_one() {
    let store = fresh_store().await;
    assert!(store.snapshot_summary().await.unwrap().is_empty());
    assert_eq!(store.drop_snapshots("bank.balance").await.unwrap(), 0);
    for n in 1..=3 {
        append(&store, &format!("account-{n}"), n).await;
    }
    let before = Timestamp::now();
    let mut bytes = 0;
    for (n, state_version) in [(1, 1), (2, 3), (3, 3)] {
        let saved = snapshot(
            "bank.balance",
            state_version,
            &[&format!("account-{n}")],
            &[n],
        );
        bytes += saved.payload.len() as u64;
        store.save_snapshot(&saved).await.unwrap();
    }
    store
        .save_snapshot(&snapshot("bank.audit", 7, &["account-1"], &[1]))
        .await
        .unwrap();

    let summary = store.snapshot_summary().await.unwrap();
    let states: Vec<&str> = summary.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["bank.audit", "bank.balance"]);
    let balance = &summary[1];
    assert_eq!(
        (
            balance.count,
            balance.bytes,
            balance.state_versions.as_slice()
        ),
        (3, bytes, &[1, 3][..])
    );
    let newest = balance.newest.unwrap();
    assert!(
        newest.unix_micros() >= before.unix_micros() - 5_000_000,
        "{newest}"
    );
    assert_eq!(summary[0].state_versions, [7]);

    assert_eq!(store.drop_snapshots("bank.balance").await.unwrap(), 3);
    let summary = store.snapshot_summary().await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].state, "bank.audit");
    assert_eq!(
        store
            .load_snapshots("bank.balance", &[key(&["account-1"])])
            .await
            .unwrap(),
        [None]
    );
    assert_eq!(store.drop_snapshots("bank.balance").await.unwrap(), 0);
}

/// A row the function would never have written (by hand, by another tool) fails the load with
/// an error saying what is wrong with it, rather than a panic or a snapshot made up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_row_that_is_no_snapshot_fails_the_load() {
    let store = fresh_store().await;
    let client = raw_client().await;
    let schema = store.schema.0.clone();
    for (state_version, discovered, versions, floor, problem) in [
        (1, "'{\" a\"}'", "'{0,0}'", "NULL", "stream id"),
        (-1, "'{}'", "'{0}'", "NULL", "state version"),
        (1, "'{}'", "'{-1}'", "NULL", "version -1"),
        (1, "'{}'", "'{0,0}'", "NULL", "2 versions for 1 streams"),
        (
            1,
            "'{}'",
            "'{0}'",
            "'0190b4d2-0000-4000-8000-000000000000'",
            "floor",
        ),
    ] {
        client
            .batch_execute(&format!(
                "TRUNCATE \"{schema}\".snapshots; \
                 INSERT INTO \"{schema}\".snapshots \
                 (state, streams, state_version, discovered, versions, events, floor, payload) \
                 VALUES ('s', '{{a}}', {state_version}, {discovered}, {versions}, 0, {floor}, 'x')"
            ))
            .await
            .unwrap();
        match store.load_snapshots("s", &[key(&["a"])]).await {
            Err(StoreError::Backend(e)) => {
                assert!(e.to_string().contains(problem), "{problem}: {e}");
            }
            other => panic!("{problem}: expected a backend error, got {other:?}"),
        }
    }
}

/// Roles are cluster-wide: this runs a cluster of its own. The owner migrates to before
/// snapshots and lets the application role in; migrating on extends its grant to the
/// function. The role saves, loads and summarizes; directly it can neither write nor delete a
/// snapshot, nor drop them through the store: that is the owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_saves_through_the_function_only() {
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
    owner.migrate_to(10).await.unwrap();
    owner.grant_access("bank_app").await.unwrap();
    let report = owner.migrate().await.unwrap();
    assert!(report.applied.contains(&11), "{report:?}");

    let app_url = cluster.url_for("bank_app", "postgres");
    let app = store_at(&app_url, "bank").await;
    append(&app, "account-1", 2).await;
    let saved = snapshot("bank.balance", 1, &["account-1"], &[2]);
    app.save_snapshot(&saved).await.unwrap();
    let loaded = app
        .load_snapshots("bank.balance", &[key(&["account-1"])])
        .await
        .unwrap();
    assert_eq!(as_saved(&loaded[0], &saved), Some(saved));
    assert_eq!(app.snapshot_summary().await.unwrap()[0].count, 1);
    // Its refusals are the function's, as for the owner.
    assert!(matches!(
        app.save_snapshot(&snapshot("bank.balance", 1, &["account-1"], &[3]))
            .await,
        Err(StoreError::InvalidRequest(_))
    ));

    let raw = raw_client_at(&app_url).await;
    for statement in [
        "INSERT INTO bank.snapshots (state, streams, state_version, discovered, versions, \
         events, payload) VALUES ('x', '{account-1}', 1, '{}', '{9}', 9, 'x')",
        "UPDATE bank.snapshots SET versions = '{9}'",
        "DELETE FROM bank.snapshots",
        "TRUNCATE bank.snapshots",
        "SELECT bank.stream_id_problem('a')",
    ] {
        let err = raw.batch_execute(statement).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{statement}: {err:?}"
        );
    }
    assert!(matches!(
        app.drop_snapshots("bank.balance").await,
        Err(StoreError::Backend(_))
    ));
    assert_eq!(owner.drop_snapshots("bank.balance").await.unwrap(), 1);
}
