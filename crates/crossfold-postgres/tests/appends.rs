//! Appending: every expected-version case, atomic multi-stream appends, conflicts that name
//! every stream and write nothing, duplicates, large batches, both payload formats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{Commit, events, fresh_store, fresh_store_in, json_event, raw_client, sid};
use crossfold_core::{
    AppendRequest, Appended, EventData, EventStore, ExpectedVersion, LogFilter, Metadata, Payload,
    Position, StoreError, StreamVersion,
};

commit_modes!(
    [Alone, EachInAGroup]
    expected_version_cases,
    multi_stream_append_is_atomic_and_reports_every_conflict,
    check_only_streams_are_checked,
    duplicate_event_id_is_refused,
    payloads_and_metadata_round_trip,
    large_appends_work,
    empty_request_is_a_no_op,
    a_stream_row_set_back_is_a_conflict,
);

fn v(n: u64) -> StreamVersion {
    StreamVersion::new(n)
}

/// The version of the last event an append wrote.
fn last(r: &Appended) -> StreamVersion {
    r.events
        .last()
        .map_or(StreamVersion::EMPTY, |e| e.stream_version)
}

/// Waits until the log shows what `r` wrote (other sessions may hold the horizon back).
async fn visible<S: EventStore>(store: &S, r: &Appended) {
    if let Some(position) = r.position() {
        store
            .wait_for_position(position, std::time::Duration::from_secs(60))
            .await
            .unwrap();
    }
}

fn positions(r: &Appended) -> Vec<Position> {
    r.events.iter().map(|e| e.position).collect()
}

async fn expected_version_cases(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let a = sid("a");
    let one = |t| vec![json_event(t, "{}")];

    // NoStream on an absent stream creates it.
    let r = store
        .append(AppendRequest::new().stream(a.clone(), ExpectedVersion::NoStream, one("E1")))
        .await
        .unwrap();
    assert_eq!(last(&r), v(1));
    assert_eq!(r.len(), 1);

    // NoStream on an existing stream conflicts.
    let err = store
        .append(AppendRequest::new().stream(a.clone(), ExpectedVersion::NoStream, one("E")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.conflicts().len(), 1);
    assert_eq!(err.conflicts()[0].actual, v(1));
    assert_eq!(err.conflicts()[0].expected, ExpectedVersion::NoStream);

    // Exact: right and wrong.
    store
        .append(AppendRequest::new().stream(a.clone(), ExpectedVersion::Exact(v(1)), one("E2")))
        .await
        .unwrap();
    let err = store
        .append(AppendRequest::new().stream(a.clone(), ExpectedVersion::Exact(v(1)), one("E")))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    assert_eq!(err.conflicts()[0].actual, v(2));

    // StreamExists: on an existing and on an absent stream.
    let r = store
        .append(AppendRequest::new().stream(a.clone(), ExpectedVersion::StreamExists, one("E3")))
        .await
        .unwrap();
    assert_eq!(last(&r), v(3));
    let err = store
        .append(AppendRequest::new().stream(sid("b"), ExpectedVersion::StreamExists, one("E")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.conflicts()[0].actual, v(0));

    // Exact on an absent stream.
    let err = store
        .append(AppendRequest::new().stream(sid("b"), ExpectedVersion::Exact(v(2)), one("E")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.conflicts()[0].actual, v(0));
    // Exact(0) is NoStream.
    store
        .append(AppendRequest::new().stream(sid("b"), ExpectedVersion::Exact(v(0)), one("B1")))
        .await
        .unwrap();

    // Any: always.
    let r = store
        .append(AppendRequest::new().stream(a.clone(), ExpectedVersion::Any, one("E4")))
        .await
        .unwrap();
    assert_eq!(last(&r), v(4));
    let r = store
        .append(AppendRequest::new().stream(sid("c"), ExpectedVersion::Any, one("C1")))
        .await
        .unwrap();
    assert_eq!(last(&r), v(1));

    let read = store.read_stream(&a, v(0), usize::MAX).await.unwrap();
    assert_eq!(read.version, v(4));
    let types: Vec<_> = read
        .events
        .iter()
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(types, ["E1", "E2", "E3", "E4"]);
    let versions: Vec<_> = read.events.iter().map(|e| e.stream_version.get()).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
}

async fn multi_stream_append_is_atomic_and_reports_every_conflict(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let (a, b, c, d) = (sid("acc-a"), sid("acc-b"), sid("acc-c"), sid("acc-d"));
    let seeded = store
        .append(
            AppendRequest::new()
                .stream(a.clone(), ExpectedVersion::NoStream, events("A", 2))
                .stream(b.clone(), ExpectedVersion::NoStream, events("B", 1)),
        )
        .await
        .unwrap();
    visible(&store, &seeded).await;
    let head = store.head_position().await.unwrap();

    // c would be fine; a, b and d are wrong. Nothing may be written, all three named.
    let err = store
        .append(
            AppendRequest::new()
                .stream(c.clone(), ExpectedVersion::NoStream, events("C", 3))
                .stream(b.clone(), ExpectedVersion::Exact(v(5)), events("B", 1))
                .check(d.clone(), ExpectedVersion::StreamExists)
                .stream(a.clone(), ExpectedVersion::Exact(v(1)), events("A", 1)),
        )
        .await
        .unwrap_err();
    let StoreError::Conflict(conflicts) = &err else {
        panic!("{err:?}")
    };
    let named: Vec<_> = conflicts
        .iter()
        .map(|c| (c.stream.as_str(), c.expected, c.actual.get()))
        .collect();
    assert_eq!(
        named,
        [
            ("acc-b", ExpectedVersion::Exact(v(5)), 1),
            ("acc-d", ExpectedVersion::StreamExists, 0),
            ("acc-a", ExpectedVersion::Exact(v(1)), 2),
        ]
    );
    assert!(!store.stream_exists(&c).await.unwrap());
    assert_eq!(store.head_position().await.unwrap(), head);
    assert_eq!(
        store
            .read_all(Position::START, 100, &LogFilter::all())
            .await
            .unwrap()
            .len(),
        3
    );

    // The same request with the right versions: the events as stored in request order
    // (streams, then events), positions ascending.
    let r = store
        .append(
            AppendRequest::new()
                .stream(c.clone(), ExpectedVersion::NoStream, events("C", 3))
                .stream(b.clone(), ExpectedVersion::Exact(v(1)), events("B", 1))
                .check(d.clone(), ExpectedVersion::NoStream)
                .stream(a.clone(), ExpectedVersion::Exact(v(2)), events("A", 1)),
        )
        .await
        .unwrap();
    let p = positions(&r);
    assert_eq!(p.len(), 5);
    assert!(p.windows(2).all(|w| w[0] < w[1]));
    assert!(p.iter().all(|x| x.commit() == p[0].commit()));
    assert_eq!(r.version_of(&c), Some(v(3)));
    assert_eq!(r.version_of(&b), Some(v(2)));
    assert_eq!(r.version_of(&d), None);
    assert_eq!(r.version_of(&a), Some(v(3)));

    visible(&store, &r).await;
    let log = store.read_all(head, 100, &LogFilter::all()).await.unwrap();
    let got: Vec<_> = log
        .iter()
        .map(|e| (e.stream_id.to_string(), e.stream_version.get(), e.position))
        .collect();
    let want: Vec<_> = [
        ("acc-c", 1),
        ("acc-c", 2),
        ("acc-c", 3),
        ("acc-b", 2),
        ("acc-a", 3),
    ]
    .iter()
    .zip(&p)
    .map(|((s, n), p)| (s.to_string(), *n, *p))
    .collect();
    assert_eq!(got, want);
    // A checked-only absent stream stays absent.
    assert_eq!(store.stream_version(&d).await.unwrap(), v(0));
}

async fn check_only_streams_are_checked(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let (a, w) = (sid("read-a"), sid("write-w"));
    store
        .append(AppendRequest::new().stream(a.clone(), ExpectedVersion::Any, events("A", 2)))
        .await
        .unwrap();
    let err = store
        .append(
            AppendRequest::new()
                .check(a.clone(), ExpectedVersion::Exact(v(1)))
                .stream(w.clone(), ExpectedVersion::Any, events("W", 1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.conflicts()[0].stream, a);
    assert!(!store.stream_exists(&w).await.unwrap());
    let r = store
        .append(
            AppendRequest::new()
                .check(a.clone(), ExpectedVersion::Exact(v(2)))
                .check(sid("absent"), ExpectedVersion::NoStream)
                .check(sid("whatever"), ExpectedVersion::Any)
                .stream(w.clone(), ExpectedVersion::Any, events("W", 1)),
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r.version_of(&w), Some(v(1)));
    // Only checks, no events: still checked, nothing written.
    let r = store
        .append(AppendRequest::new().check(a.clone(), ExpectedVersion::Exact(v(2))))
        .await
        .unwrap();
    assert!(r.is_empty());
    assert!(
        store
            .append(AppendRequest::new().check(a.clone(), ExpectedVersion::NoStream))
            .await
            .unwrap_err()
            .is_conflict()
    );
}

async fn duplicate_event_id_is_refused(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let e = json_event("E", "{}");
    store
        .append(AppendRequest::new().stream(sid("a"), ExpectedVersion::Any, vec![e.clone()]))
        .await
        .unwrap();
    let err = store
        .append(AppendRequest::new().stream(sid("b"), ExpectedVersion::Any, vec![e.clone()]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateEvent(id) if id == e.event_id),
        "{err:?}"
    );
    assert!(!store.stream_exists(&sid("b")).await.unwrap());
    // Within one request the request itself is invalid.
    let err = store
        .append(AppendRequest::new().stream(
            sid("c"),
            ExpectedVersion::Any,
            vec![e.clone(), e.clone()],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");
}

async fn payloads_and_metadata_round_trip(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let mut meta = Metadata::now();
    meta.actor = Some("user-7".into());
    meta.correlation_id = Some(uuid::Uuid::now_v7());
    meta.custom
        .insert("tenant".into(), serde_json::json!({"id": 3}));
    let meta = Arc::new(meta);
    let mut json = EventData::new("J", Payload::json(&br#"{"b":[1,2],"a":"x\u00e9"}"#[..]));
    json.metadata = meta.clone();
    json.schema_version = 3;
    let mut pack = EventData::new(
        "M",
        Payload::message_pack(vec![0x82, 0xa1, 0x61, 0x01, 0xc0]),
    );
    pack.metadata = Arc::new(Metadata::now());
    pack.schema_version = 65535;
    store
        .append(AppendRequest::new().stream(
            sid("p"),
            ExpectedVersion::NoStream,
            vec![json.clone(), pack.clone()],
        ))
        .await
        .unwrap();
    let read = store.read_stream(&sid("p"), v(0), 10).await.unwrap();
    let [j, m] = &read.events[..] else {
        panic!("{read:?}")
    };
    assert_eq!(j.event_id, json.event_id);
    assert_eq!(j.schema_version, 3);
    assert_eq!(*j.metadata, *meta);
    let stored: serde_json::Value = serde_json::from_slice(&j.payload.bytes).unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&json.payload.bytes).unwrap();
    assert_eq!(stored, sent);
    assert_eq!(m.payload, pack.payload);
    assert_eq!(m.schema_version, 65535);
    assert_eq!(*m.metadata, *pack.metadata);

    // Invalid JSON is refused as an invalid request, and nothing is written.
    let bad = EventData::new("J", Payload::json(&b"{not json"[..]));
    let err = store
        .append(AppendRequest::new().stream(sid("p"), ExpectedVersion::Any, vec![bad]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");
    assert_eq!(store.stream_version(&sid("p")).await.unwrap(), v(2));
}

async fn large_appends_work(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let mut request = AppendRequest::new();
    for s in 0..5 {
        request = request.stream(
            sid(&format!("big-{s}")),
            ExpectedVersion::NoStream,
            events("Item", 1000),
        );
    }
    let r = store.append(request).await.unwrap();
    for s in 0..5 {
        assert_eq!(r.version_of(&sid(&format!("big-{s}"))), Some(v(1000)));
    }
    assert_eq!(r.len(), 5000);
    assert!(positions(&r).windows(2).all(|w| w[0] < w[1]));
    let read = store.read_stream(&sid("big-3"), v(990), 100).await.unwrap();
    assert_eq!(read.version, v(1000));
    assert_eq!(read.events.len(), 10);
    assert_eq!(read.events[0].stream_version, v(991));
    visible(&store, &r).await;
    let all = store
        .read_all(Position::START, 10_000, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(all.len(), 5000);
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions(&r)
    );
}

async fn empty_request_is_a_no_op(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let r = store.append(AppendRequest::new()).await.unwrap();
    assert!(r.is_empty());
    assert_eq!(store.head_position().await.unwrap(), Position::START);
}

async fn a_stream_row_set_back_is_a_conflict(commit: Commit) {
    let store = fresh_store_in(commit).await;
    let schema = store.schema().to_owned();
    store
        .append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 3)))
        .await
        .unwrap();
    // Someone with the owner's rights pushes the stream's row back below its events.
    raw_client()
        .await
        .batch_execute(&format!(
            "UPDATE {schema}.streams SET version = 1 WHERE stream_id = 's'"
        ))
        .await
        .unwrap();
    for request in [
        AppendRequest::new().stream(sid("s"), ExpectedVersion::Exact(v(1)), events("E", 1)),
        AppendRequest::new()
            .stream(sid("s"), ExpectedVersion::Exact(v(1)), events("E", 2))
            .stream(sid("t"), ExpectedVersion::NoStream, events("E", 1)),
        // The stream behind is not the first one written.
        AppendRequest::new()
            .stream(sid("t"), ExpectedVersion::NoStream, events("E", 1))
            .stream(sid("s"), ExpectedVersion::Exact(v(1)), events("E", 1)),
    ] {
        let err = store.append(request).await.unwrap_err();
        match &err {
            StoreError::Conflict(conflicts) => {
                assert_eq!(conflicts.len(), 1, "{err:?}");
                assert_eq!(conflicts[0].stream, sid("s"));
                assert_eq!(conflicts[0].expected, ExpectedVersion::Exact(v(1)));
                assert_eq!(conflicts[0].actual, v(3), "the stream's real version");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(store.stream_version(&sid("t")).await.unwrap(), v(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_keeps_synchronous_commit_on() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    let mut client = raw_client().await;
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .unwrap();
    tx.batch_execute(&format!(
        "SELECT * FROM {schema}.append_one('s', -1, \
             ARRAY['0190b4d2-0000-7000-8000-0000000000cc'::uuid], '{{E}}', '{{1}}', \
             '{{\"{{}}\"}}'::jsonb[], '{{NULL}}'::bytea[], '{{\"{{}}\"}}'::jsonb[])"
    ))
    .await
    .unwrap();
    // The append's transaction commits only once its WAL is flushed: a crash cannot lose an
    // event a subscriber may already have read.
    let setting: String = tx
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, "on");
    tx.commit().await.unwrap();
}
