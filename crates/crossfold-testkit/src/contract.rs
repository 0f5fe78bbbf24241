//! The store contract suite: every behaviour of [`EventStore`], as one public async function
//! each, run against a fresh store.
//!
//! Stores run them through [`store_contract_tests!`](crate::store_contract_tests), which turns
//! each behaviour into its own `#[test]`, so they run in parallel and fail by name. The
//! functions panic (with a message naming what differed) when the store misbehaves.
//!
//! Every function expects a store holding no events, and leaves events behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the contract suite is test code: a failed expectation is reported by panicking"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crossfold_core::{
    AppendRequest, Appended, Codec, EventData, EventId, EventStore, ExpectedVersion, LogFilter,
    MessagePack, Metadata, Payload, PayloadFormat, Position, RecordedEvent, StoreError,
    StreamConflict, StreamId, StreamRead, StreamVersion, Subscription, SubscriptionOptions,
    Timestamp,
};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// How long one behaviour may take before it is reported as hung.
const BEHAVIOUR_DEADLINE: Duration = Duration::from_secs(120);
/// How long a single wait for a subscription or a wake-up may take before the test fails.
/// Generous: it catches a store that never delivers, not a slow one.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(20);

/// Runs a future to completion on a fresh multi-thread Tokio runtime (two workers), failing if
/// it takes longer than two minutes. Each generated contract test runs through this, so the
/// crate using the macro needs no runtime of its own; property tests of async code can use it
/// too.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start a Tokio runtime");
    runtime.block_on(async {
        match tokio::time::timeout(BEHAVIOUR_DEADLINE, future).await {
            Ok(output) => output,
            Err(_) => panic!("did not finish within {BEHAVIOUR_DEADLINE:?}"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// helpers

fn sid(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

fn event(event_type: &str, n: u64) -> EventData {
    EventData::new(event_type, Payload::json(format!(r#"{{"n":{n}}}"#)))
}

fn events(event_type: &str, count: u64) -> Vec<EventData> {
    (0..count).map(|n| event(event_type, n)).collect()
}

fn ids(events: &[RecordedEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.event_id).collect()
}

fn data_ids(events: &[EventData]) -> Vec<EventId> {
    events.iter().map(|e| e.event_id).collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version.get()).collect()
}

fn v(n: u64) -> StreamVersion {
    StreamVersion::new(n)
}

async fn append_ok<S: EventStore>(store: &S, request: AppendRequest) -> Appended {
    let described = describe(&request);
    match store.append(request).await {
        Ok(appended) => appended,
        Err(e) => panic!("append of {described} failed: {e}"),
    }
}

async fn append_err<S: EventStore>(store: &S, request: AppendRequest) -> StoreError {
    let described = describe(&request);
    match store.append(request).await {
        Ok(appended) => panic!("append of {described} succeeded ({appended:?}) but should fail"),
        Err(e) => e,
    }
}

fn describe(request: &AppendRequest) -> String {
    let parts: Vec<String> = request
        .streams
        .iter()
        .map(|s| format!("{} ({}, {} events)", s.stream, s.expected, s.events.len()))
        .collect();
    format!("[{}]", parts.join(", "))
}

async fn write<S: EventStore>(store: &S, stream: &StreamId, events: Vec<EventData>) -> Appended {
    append_ok(
        store,
        AppendRequest::new().stream(stream.clone(), ExpectedVersion::Any, events),
    )
    .await
}

async fn read<S: EventStore>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, StreamVersion::EMPTY, usize::MAX)
        .await
        .unwrap()
        .events
}

async fn version_of<S: EventStore>(store: &S, stream: &StreamId) -> StreamVersion {
    store.stream_version(stream).await.unwrap()
}

/// One `read_all` call, checked for what every answer must satisfy: at most `limit` events,
/// all after `after`, in strictly increasing positions, all passing the filter. (Checking that
/// pages advance also keeps a broken store from looping a paging test forever.)
async fn read_page<S: EventStore>(
    store: &S,
    after: Position,
    limit: usize,
    filter: &LogFilter,
) -> Vec<RecordedEvent> {
    let page = store.read_all(after, limit, filter).await.unwrap();
    assert!(
        page.len() <= limit,
        "read_all after {after} with limit {limit} returned {} events",
        page.len()
    );
    if let Some(first) = page.first() {
        assert!(
            first.position > after,
            "read_all after {after} returned an event at {}",
            first.position
        );
    }
    assert_strictly_increasing(page.iter().map(|e| e.position), "read_all");
    if let Some(e) = page.iter().find(|e| !filter.matches(e)) {
        panic!(
            "read_all with {filter:?} returned {} of {} ({})",
            e.event_id, e.stream_id, e.event_type
        );
    }
    page
}

async fn whole_log<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let page = read_page(store, after, 1000, &LogFilter::all()).await;
        let Some(last) = page.last() else {
            return all;
        };
        after = last.position;
        all.extend(page);
    }
}

fn assert_conflicts(error: &StoreError, expected: &[(&StreamId, ExpectedVersion, u64)]) {
    let StoreError::Conflict(conflicts) = error else {
        panic!("expected a version conflict, got {error:?}");
    };
    let mut actual: Vec<StreamConflict> = conflicts.clone();
    actual.sort_by(|a, b| a.stream.cmp(&b.stream));
    let mut wanted: Vec<StreamConflict> = expected
        .iter()
        .map(|(s, e, a)| StreamConflict {
            stream: (*s).clone(),
            expected: *e,
            actual: v(*a),
        })
        .collect();
    wanted.sort_by(|a, b| a.stream.cmp(&b.stream));
    assert_eq!(actual, wanted, "conflict must name every failing stream");
    assert!(error.is_conflict());
}

fn assert_strictly_increasing(positions: impl IntoIterator<Item = Position>, what: &str) {
    let positions: Vec<Position> = positions.into_iter().collect();
    for pair in positions.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{what}: positions must increase strictly, got {} then {}",
            pair[0],
            pair[1]
        );
    }
}

fn json_value(payload: &Payload) -> serde_json::Value {
    serde_json::from_slice(&payload.bytes).unwrap_or_else(|e| {
        panic!(
            "stored JSON payload is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&payload.bytes)
        )
    })
}

/// Asserts that `recorded` is `data` as stored at `stream`/`version`/`position`. JSON payloads
/// compare as JSON values (a store may keep JSON in a normalized form); everything else,
/// MessagePack bytes included, must come back exactly.
fn assert_recorded_as(
    recorded: &RecordedEvent,
    data: &EventData,
    stream: &StreamId,
    version: u64,
    position: Option<Position>,
) {
    let at = format!("event {} at {stream}@{version}", data.event_id);
    assert_eq!(recorded.event_id, data.event_id, "{at}: event id");
    assert_eq!(&recorded.stream_id, stream, "{at}: stream");
    assert_eq!(recorded.stream_version, v(version), "{at}: stream version");
    if let Some(position) = position {
        assert_eq!(recorded.position, position, "{at}: position");
    }
    assert_eq!(recorded.event_type, data.event_type, "{at}: event type");
    assert_eq!(
        recorded.schema_version, data.schema_version,
        "{at}: schema version"
    );
    assert_eq!(
        recorded.payload.format, data.payload.format,
        "{at}: payload format"
    );
    match data.payload.format {
        PayloadFormat::Json => assert_eq!(
            json_value(&recorded.payload),
            json_value(&data.payload),
            "{at}: JSON payload"
        ),
        PayloadFormat::MessagePack => assert_eq!(
            recorded.payload.bytes, data.payload.bytes,
            "{at}: MessagePack payload bytes"
        ),
    }
    assert_eq!(recorded.metadata, data.metadata, "{at}: metadata");
}

fn full_metadata() -> Arc<Metadata> {
    let mut custom = BTreeMap::new();
    custom.insert("tenant".to_owned(), serde_json::json!("acme"));
    custom.insert("attempt".to_owned(), serde_json::json!(3));
    custom.insert(
        "flags".to_owned(),
        serde_json::json!({"beta": true, "regions": ["eu", "us"], "none": null}),
    );
    Arc::new(Metadata {
        recorded_at: Timestamp::from_unix_micros(1_795_000_000_123_456),
        correlation_id: Some(EventId::generate().as_uuid()),
        causation_id: Some(EventId::generate().as_uuid()),
        actor: Some("user:ada lovelace".to_owned()),
        custom,
    })
}

async fn with_deadline<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DELIVERY_DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing within {DELIVERY_DEADLINE:?}"),
    }
}

async fn next_event<S: EventStore>(subscription: &mut Subscription<S>) -> RecordedEvent {
    with_deadline("subscription.next()", subscription.next())
        .await
        .unwrap()
}

async fn take<S: EventStore>(
    subscription: &mut Subscription<S>,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        out.push(next_event(subscription).await);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// reading and writing

/// A stream that was never written reads as empty at version 0, and the log is empty.
pub async fn absent_stream_reads_as_empty<S: EventStore>(store: S) {
    let absent = sid("never-written");
    let read = store
        .read_stream(&absent, StreamVersion::EMPTY, usize::MAX)
        .await
        .unwrap();
    assert_eq!(read.stream, absent);
    assert_eq!(read.version, StreamVersion::EMPTY);
    assert!(read.events.is_empty());
    assert_eq!(version_of(&store, &absent).await, StreamVersion::EMPTY);
    assert!(!store.stream_exists(&absent).await.unwrap());

    let reads = store
        .read_streams(&[
            StreamRead::all(absent.clone()),
            StreamRead::version_only(absent.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(reads.len(), 2);
    assert!(
        reads
            .iter()
            .all(|r| r.stream == absent && r.version.is_empty() && r.events.is_empty())
    );

    assert_eq!(store.head_position().await.unwrap(), Position::START);
    assert!(
        read_page(&store, Position::START, 100, &LogFilter::all())
            .await
            .is_empty()
    );
    assert!(
        read_page(&store, Position::START, 100, &LogFilter::streams([absent]))
            .await
            .is_empty()
    );
}

/// Appended events read back with every field intact: ids, types, schema versions, JSON and
/// MessagePack payloads, every metadata field, versions and the positions the append returned.
pub async fn appended_events_read_back_with_every_field<S: EventStore>(store: S) {
    let order = sid("order-1");
    let odd = sid("Konto Ölß/1 #x:y — ✓");
    let longest = StreamId::new("x".repeat(StreamId::MAX_LEN)).unwrap();

    let json = EventData {
        schema_version: 1,
        metadata: full_metadata(),
        ..EventData::new(
            "OrderPlaced",
            Payload::json(
                r#"{"amount": 125, "note": "ünïcode ✓ \"quoted\"", "tags": ["a", "b"], "nested": {"ok": true, "none": null}, "big": 9007199254740993}"#,
            ),
        )
    };
    let packed = EventData {
        schema_version: 7,
        metadata: full_metadata(),
        ..EventData::new(
            "OrderPaid",
            MessagePack
                .encode(&serde_json::json!({"amount": -3, "bytes": [0, 255, 7], "text": "ä"}))
                .unwrap(),
        )
    };
    let minimal = EventData {
        schema_version: 0,
        metadata: Arc::new(Metadata {
            recorded_at: Timestamp::from_unix_micros(1),
            ..Metadata::default()
        }),
        ..EventData::new("Übergabe erfolgt", Payload::json("{}"))
    };
    let binary = EventData {
        schema_version: 3,
        ..EventData::new(
            "Blob",
            Payload::message_pack(vec![0x93, 0x01, 0xa1, b'x', 0xc0]),
        )
    };
    let on_longest = EventData::new("Long", Payload::json("[1,2,3]"));

    let appended = append_ok(
        &store,
        AppendRequest::new()
            .stream(
                order.clone(),
                ExpectedVersion::NoStream,
                vec![json.clone(), packed.clone()],
            )
            .stream(
                odd.clone(),
                ExpectedVersion::NoStream,
                vec![minimal.clone(), binary.clone()],
            )
            .stream(
                longest.clone(),
                ExpectedVersion::Any,
                vec![on_longest.clone()],
            ),
    )
    .await;
    assert_eq!(appended.versions, vec![v(2), v(2), v(1)]);
    assert_eq!(appended.positions.len(), 5);
    assert_strictly_increasing(appended.positions.iter().copied(), "one append");
    let p = &appended.positions;

    let read_order = read(&store, &order).await;
    assert_eq!(read_order.len(), 2);
    assert_recorded_as(&read_order[0], &json, &order, 1, Some(p[0]));
    assert_recorded_as(&read_order[1], &packed, &order, 2, Some(p[1]));
    let read_odd = read(&store, &odd).await;
    assert_eq!(read_odd.len(), 2);
    assert_recorded_as(&read_odd[0], &minimal, &odd, 1, Some(p[2]));
    assert_recorded_as(&read_odd[1], &binary, &odd, 2, Some(p[3]));
    let read_longest = read(&store, &longest).await;
    assert_eq!(read_longest.len(), 1);
    assert_recorded_as(&read_longest[0], &on_longest, &longest, 1, Some(p[4]));

    let log = whole_log(&store).await;
    let expected = [
        (&json, &order, 1),
        (&packed, &order, 2),
        (&minimal, &odd, 1),
        (&binary, &odd, 2),
        (&on_longest, &longest, 1),
    ];
    assert_eq!(log.len(), expected.len());
    for ((recorded, (data, stream, version)), position) in log.iter().zip(expected).zip(p) {
        assert_recorded_as(recorded, data, stream, version, Some(*position));
    }
}

/// An append to several streams writes all of them in one step, in request order, and reports
/// every stream's new version (a checked-only stream reports its current one).
pub async fn multi_stream_append_is_atomic<S: EventStore>(store: S) {
    let (a, b, c, checked) = (
        sid("multi-a"),
        sid("multi-b"),
        sid("multi-c"),
        sid("multi-checked"),
    );
    write(&store, &b, events("Seed", 2)).await;
    write(&store, &checked, events("Seed", 1)).await;
    let head_before = store.head_position().await.unwrap();

    let (ea, eb, ec) = (events("A", 2), events("B", 3), events("C", 1));
    let appended = append_ok(
        &store,
        AppendRequest::new()
            .stream(a.clone(), ExpectedVersion::NoStream, ea.clone())
            .check(checked.clone(), ExpectedVersion::Exact(v(1)))
            .stream(b.clone(), ExpectedVersion::Exact(v(2)), eb.clone())
            .stream(c.clone(), ExpectedVersion::Any, ec.clone()),
    )
    .await;
    assert_eq!(appended.versions, vec![v(2), v(1), v(5), v(1)]);
    assert_eq!(appended.positions.len(), 6);
    assert!(appended.positions[0] > head_before);
    assert_strictly_increasing(appended.positions.iter().copied(), "multi-stream append");

    assert_eq!(ids(&read(&store, &a).await), data_ids(&ea));
    assert_eq!(versions(&read(&store, &b).await), vec![1, 2, 3, 4, 5]);
    assert_eq!(ids(&read(&store, &b).await)[2..], data_ids(&eb)[..]);
    assert_eq!(ids(&read(&store, &c).await), data_ids(&ec));
    assert_eq!(version_of(&store, &checked).await, v(1));

    let after = read_page(&store, head_before, 100, &LogFilter::all()).await;
    let expected: Vec<EventId> = [&ea, &eb, &ec]
        .into_iter()
        .flat_map(|e| data_ids(e))
        .collect();
    assert_eq!(
        ids(&after),
        expected,
        "the log holds the append in request order"
    );
    assert_eq!(
        after.iter().map(|e| e.position).collect::<Vec<_>>(),
        appended.positions
    );
}

/// An append to no stream at all succeeds and writes nothing; an append that only checks
/// streams succeeds when they match and reports their versions, writing nothing.
pub async fn check_only_append_writes_nothing<S: EventStore>(store: S) {
    let (a, absent) = (sid("checked-a"), sid("checked-absent"));
    write(&store, &a, events("Seed", 2)).await;
    let head = store.head_position().await.unwrap();

    let empty = append_ok(&store, AppendRequest::new()).await;
    assert_eq!(empty, Appended::default());

    let checked = append_ok(
        &store,
        AppendRequest::new()
            .check(a.clone(), ExpectedVersion::Exact(v(2)))
            .check(absent.clone(), ExpectedVersion::NoStream),
    )
    .await;
    assert_eq!(checked.versions, vec![v(2), v(0)]);
    assert!(checked.positions.is_empty());
    assert_eq!(store.head_position().await.unwrap(), head);
    assert_eq!(version_of(&store, &a).await, v(2));
    assert!(!store.stream_exists(&absent).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// expected versions

/// `Any` appends whether or not the stream exists.
pub async fn expected_any_always_appends<S: EventStore>(store: S) {
    let s = sid("any");
    let first = append_ok(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::Any, events("E", 2)),
    )
    .await;
    assert_eq!(first.versions, vec![v(2)]);
    let second = append_ok(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::Any, events("E", 1)),
    )
    .await;
    assert_eq!(second.versions, vec![v(3)]);
    assert_eq!(versions(&read(&store, &s).await), vec![1, 2, 3]);
}

/// `NoStream` appends only to a stream without events.
pub async fn expected_no_stream_requires_an_empty_stream<S: EventStore>(store: S) {
    let s = sid("no-stream");
    let first = append_ok(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, events("E", 1)),
    )
    .await;
    assert_eq!(first.versions, vec![v(1)]);
    let err = append_err(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, events("E", 1)),
    )
    .await;
    assert_conflicts(&err, &[(&s, ExpectedVersion::NoStream, 1)]);
    assert_eq!(version_of(&store, &s).await, v(1));
}

/// `StreamExists` appends only to a stream with events.
pub async fn expected_stream_exists_requires_events<S: EventStore>(store: S) {
    let s = sid("exists");
    let err = append_err(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::StreamExists, events("E", 1)),
    )
    .await;
    assert_conflicts(&err, &[(&s, ExpectedVersion::StreamExists, 0)]);
    assert!(!store.stream_exists(&s).await.unwrap());

    write(&store, &s, events("E", 1)).await;
    let ok = append_ok(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::StreamExists, events("E", 2)),
    )
    .await;
    assert_eq!(ok.versions, vec![v(3)]);
}

/// `Exact(n)` appends only to a stream at exactly version `n` (`Exact(0)` to an empty one).
pub async fn expected_exact_requires_that_version<S: EventStore>(store: S) {
    let s = sid("exact");
    for wrong in [1, 5] {
        let err = append_err(
            &store,
            AppendRequest::new().stream(
                s.clone(),
                ExpectedVersion::Exact(v(wrong)),
                events("E", 1),
            ),
        )
        .await;
        assert_conflicts(&err, &[(&s, ExpectedVersion::Exact(v(wrong)), 0)]);
    }
    let first = append_ok(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::Exact(v(0)), events("E", 2)),
    )
    .await;
    assert_eq!(first.versions, vec![v(2)]);
    for wrong in [0, 1, 3] {
        let err = append_err(
            &store,
            AppendRequest::new().stream(
                s.clone(),
                ExpectedVersion::Exact(v(wrong)),
                events("E", 1),
            ),
        )
        .await;
        assert_conflicts(&err, &[(&s, ExpectedVersion::Exact(v(wrong)), 2)]);
    }
    let second = append_ok(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::Exact(v(2)), events("E", 1)),
    )
    .await;
    assert_eq!(second.versions, vec![v(3)]);
    assert_eq!(versions(&read(&store, &s).await), vec![1, 2, 3]);
}

/// Every condition is checked on streams that are only read, too: passing checks let the
/// append through and leave the checked stream untouched (an absent one stays absent); a
/// failing check stops the append.
pub async fn read_only_streams_are_checked<S: EventStore>(store: S) {
    let existing = sid("ro-existing");
    let absent = sid("ro-absent");
    let target = sid("ro-target");
    write(&store, &existing, events("Seed", 2)).await;

    let cases: [(&StreamId, ExpectedVersion, bool); 10] = [
        (&existing, ExpectedVersion::Any, true),
        (&existing, ExpectedVersion::StreamExists, true),
        (&existing, ExpectedVersion::Exact(v(2)), true),
        (&existing, ExpectedVersion::NoStream, false),
        (&existing, ExpectedVersion::Exact(v(1)), false),
        (&absent, ExpectedVersion::Any, true),
        (&absent, ExpectedVersion::NoStream, true),
        (&absent, ExpectedVersion::Exact(v(0)), true),
        (&absent, ExpectedVersion::StreamExists, false),
        (&absent, ExpectedVersion::Exact(v(2)), false),
    ];
    let mut target_version = 0;
    for (checked, expected, passes) in cases {
        let actual = version_of(&store, checked).await.get();
        let request = AppendRequest::new()
            .stream(target.clone(), ExpectedVersion::Any, events("T", 1))
            .check(checked.clone(), expected);
        if passes {
            let appended = append_ok(&store, request).await;
            target_version += 1;
            assert_eq!(
                appended.versions,
                vec![v(target_version), v(actual)],
                "check {expected} on {checked}"
            );
            assert_eq!(appended.positions.len(), 1);
        } else {
            let err = append_err(&store, request).await;
            assert_conflicts(&err, &[(checked, expected, actual)]);
        }
        assert_eq!(
            version_of(&store, &target).await,
            v(target_version),
            "after check {expected} on {checked}"
        );
    }
    assert_eq!(version_of(&store, &existing).await, v(2));
    assert!(
        !store.stream_exists(&absent).await.unwrap(),
        "checking a stream must not create it"
    );
}

/// A conflicting append writes nothing to any of its streams, and its error names every stream
/// whose condition failed, with the expected and actual versions.
pub async fn conflict_writes_nothing_and_names_every_stream<S: EventStore>(store: S) {
    let (a, b, c, d) = (sid("cf-a"), sid("cf-b"), sid("cf-c"), sid("cf-d"));
    write(&store, &a, events("Seed", 1)).await;
    write(&store, &b, events("Seed", 2)).await;
    let head = store.head_position().await.unwrap();

    let err = append_err(
        &store,
        AppendRequest::new()
            .stream(a.clone(), ExpectedVersion::Exact(v(0)), events("New", 1))
            .stream(b.clone(), ExpectedVersion::Exact(v(2)), events("New", 2))
            .check(c.clone(), ExpectedVersion::StreamExists)
            .stream(d.clone(), ExpectedVersion::NoStream, events("New", 1)),
    )
    .await;
    assert_conflicts(
        &err,
        &[
            (&a, ExpectedVersion::Exact(v(0)), 1),
            (&c, ExpectedVersion::StreamExists, 0),
        ],
    );
    let text = err.to_string();
    assert!(
        text.contains("cf-a") && text.contains("cf-c") && !text.contains("cf-b"),
        "{text}"
    );

    assert_eq!(version_of(&store, &a).await, v(1));
    assert_eq!(version_of(&store, &b).await, v(2));
    assert!(!store.stream_exists(&c).await.unwrap());
    assert!(!store.stream_exists(&d).await.unwrap());
    assert_eq!(store.head_position().await.unwrap(), head);
    assert_eq!(whole_log(&store).await.len(), 3);
}

/// A stream that is only read can make an append fail on its own; nothing is written.
pub async fn conflict_on_a_read_only_stream_writes_nothing<S: EventStore>(store: S) {
    let (read_only, target) = (sid("ro-conflict-read"), sid("ro-conflict-target"));
    write(&store, &read_only, events("Seed", 1)).await;
    // Someone appends to the stream between our read (at 1) and our append.
    write(&store, &read_only, events("Later", 1)).await;

    let err = append_err(
        &store,
        AppendRequest::new()
            .stream(target.clone(), ExpectedVersion::NoStream, events("T", 1))
            .check(read_only.clone(), ExpectedVersion::Exact(v(1))),
    )
    .await;
    assert_conflicts(&err, &[(&read_only, ExpectedVersion::Exact(v(1)), 2)]);
    assert!(!store.stream_exists(&target).await.unwrap());
    assert_eq!(whole_log(&store).await.len(), 2);
}

/// An event id already stored is refused with `DuplicateEvent`, whichever stream it is sent to,
/// and nothing of the append is written.
pub async fn duplicate_event_id_is_rejected_and_nothing_written<S: EventStore>(store: S) {
    let (a, b, c) = (sid("dup-a"), sid("dup-b"), sid("dup-c"));
    let stored = event("E", 1);
    write(&store, &a, vec![stored.clone()]).await;
    let head = store.head_position().await.unwrap();

    let fresh = event("E", 2);
    let err = append_err(
        &store,
        AppendRequest::new()
            .stream(c.clone(), ExpectedVersion::NoStream, vec![fresh.clone()])
            .stream(
                b.clone(),
                ExpectedVersion::NoStream,
                vec![event("E", 3), stored.clone()],
            ),
    )
    .await;
    match &err {
        StoreError::DuplicateEvent(id) => assert_eq!(*id, stored.event_id),
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    assert!(!err.is_transient(), "a duplicate is not worth retrying");

    let err = append_err(
        &store,
        AppendRequest::new().stream(
            a.clone(),
            ExpectedVersion::Exact(v(1)),
            vec![stored.clone()],
        ),
    )
    .await;
    assert!(
        matches!(err, StoreError::DuplicateEvent(id) if id == stored.event_id),
        "{err:?}"
    );

    assert!(!store.stream_exists(&b).await.unwrap());
    assert!(!store.stream_exists(&c).await.unwrap());
    assert_eq!(version_of(&store, &a).await, v(1));
    assert_eq!(store.head_position().await.unwrap(), head);

    // The refused append reserved nothing: its fresh event can still be written.
    let ok = append_ok(
        &store,
        AppendRequest::new().stream(c.clone(), ExpectedVersion::NoStream, vec![fresh.clone()]),
    )
    .await;
    assert_eq!(ok.versions, vec![v(1)]);
    assert_eq!(
        ids(&whole_log(&store).await),
        vec![stored.event_id, fresh.event_id]
    );
}

/// A malformed request (a stream named twice, an event id used twice) is refused with
/// `InvalidRequest` and writes nothing.
pub async fn invalid_request_is_rejected_and_nothing_written<S: EventStore>(store: S) {
    let (a, b) = (sid("invalid-a"), sid("invalid-b"));
    let err = append_err(
        &store,
        AppendRequest::new()
            .stream(a.clone(), ExpectedVersion::Any, events("E", 1))
            .stream(a.clone(), ExpectedVersion::Any, events("E", 1)),
    )
    .await;
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");

    let twice = event("E", 1);
    let err = append_err(
        &store,
        AppendRequest::new()
            .stream(a.clone(), ExpectedVersion::Any, vec![twice.clone()])
            .stream(b.clone(), ExpectedVersion::Any, vec![twice.clone()]),
    )
    .await;
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");
    let err = append_err(
        &store,
        AppendRequest::new().stream(a.clone(), ExpectedVersion::Any, vec![twice.clone(), twice]),
    )
    .await;
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");
    assert!(!err.is_transient());

    assert!(!store.stream_exists(&a).await.unwrap());
    assert!(!store.stream_exists(&b).await.unwrap());
    assert_eq!(store.head_position().await.unwrap(), Position::START);
}

// ---------------------------------------------------------------------------------------------
// reads

/// `read_stream` pages through a stream by version: `after` and `limit` select exactly the
/// events asked for, and the stream's current version is always reported.
pub async fn read_stream_paginates<S: EventStore>(store: S) {
    let s = sid("paged");
    let mut all = Vec::new();
    for batch in [4, 1, 5] {
        let batch = events("E", batch);
        all.extend(data_ids(&batch));
        write(&store, &s, batch).await;
    }
    let page = |after: u64, limit: usize| {
        let store = &store;
        let s = &s;
        async move { store.read_stream(s, v(after), limit).await.unwrap() }
    };
    let cases: [(u64, usize, Vec<u64>); 8] = [
        (0, 3, vec![1, 2, 3]),
        (3, 3, vec![4, 5, 6]),
        (6, 100, vec![7, 8, 9, 10]),
        (9, 3, vec![10]),
        (10, 3, vec![]),
        (15, 3, vec![]),
        (4, 0, vec![]),
        (0, usize::MAX, (1..=10).collect()),
    ];
    for (after, limit, expected) in cases {
        let read = page(after, limit).await;
        assert_eq!(read.version, v(10), "after {after}, limit {limit}");
        assert_eq!(
            versions(&read.events),
            expected,
            "after {after}, limit {limit}"
        );
        let expected_ids: Vec<EventId> = expected.iter().map(|n| all[*n as usize - 1]).collect();
        assert_eq!(
            ids(&read.events),
            expected_ids,
            "after {after}, limit {limit}"
        );
    }
}

/// `read_streams` answers several reads in request order: whole streams, tails, version-only
/// reads and absent streams, the same stream more than once.
pub async fn read_streams_answers_in_request_order<S: EventStore>(store: S) {
    let (a, b, absent) = (sid("rs-a"), sid("rs-b"), sid("rs-absent"));
    let ea = events("A", 5);
    let eb = events("B", 2);
    write(&store, &a, ea.clone()).await;
    write(&store, &b, eb.clone()).await;

    let reads = store
        .read_streams(&[
            StreamRead::all(b.clone()),
            StreamRead::version_only(a.clone()),
            StreamRead::all(absent.clone()),
            StreamRead {
                stream: a.clone(),
                after: v(3),
                limit: 1,
            },
            StreamRead::after(a.clone(), v(2)),
        ])
        .await
        .unwrap();
    let summary: Vec<(&str, u64, Vec<u64>)> = reads
        .iter()
        .map(|r| (r.stream.as_str(), r.version.get(), versions(&r.events)))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("rs-b", 2, vec![1, 2]),
            ("rs-a", 5, vec![]),
            ("rs-absent", 0, vec![]),
            ("rs-a", 5, vec![4]),
            ("rs-a", 5, vec![3, 4, 5]),
        ]
    );
    assert_eq!(ids(&reads[0].events), data_ids(&eb));
    assert_eq!(ids(&reads[4].events), data_ids(&ea)[2..]);
    assert!(store.read_streams(&[]).await.unwrap().is_empty());
}

/// `read_all` pages through the global log: pages join up without gaps or repeats, `limit` is
/// respected, and reading after the head (or with limit 0) returns nothing.
pub async fn read_all_paginates<S: EventStore>(store: S) {
    let (a, b) = (sid("log-a"), sid("log-b"));
    let mut expected = Vec::new();
    for (stream, count) in [(&a, 3), (&b, 2), (&a, 1), (&b, 1)] {
        let batch = events("E", count);
        expected.extend(data_ids(&batch));
        write(&store, stream, batch).await;
    }
    let all = read_page(&store, Position::START, usize::MAX, &LogFilter::all()).await;
    assert_eq!(ids(&all), expected);
    assert_strictly_increasing(all.iter().map(|e| e.position), "read_all");

    let mut paged = Vec::new();
    let mut after = Position::START;
    loop {
        let page = read_page(&store, after, 3, &LogFilter::all()).await;
        assert!(page.len() <= 3, "limit 3 returned {}", page.len());
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page);
    }
    assert_eq!(ids(&paged), expected);

    let tail = read_page(&store, all[3].position, 100, &LogFilter::all()).await;
    assert_eq!(ids(&tail), expected[4..]);
    let head = store.head_position().await.unwrap();
    assert_eq!(head, all[6].position);
    assert!(
        read_page(&store, head, 100, &LogFilter::all())
            .await
            .is_empty()
    );
    assert!(
        read_page(&store, Position::START, 0, &LogFilter::all())
            .await
            .is_empty()
    );
}

/// `read_all` filters by streams, by event types, and by both, keeping log order, and pages
/// through filtered results too.
pub async fn read_all_filters_by_stream_and_type<S: EventStore>(store: S) {
    let (a, b, c) = (sid("filter-a"), sid("filter-b"), sid("filter-c"));
    // (stream, type) in log order.
    let plan: [(&StreamId, &str); 9] = [
        (&a, "X"),
        (&b, "Y"),
        (&c, "Z"),
        (&a, "Y"),
        (&b, "X"),
        (&c, "X"),
        (&a, "Z"),
        (&b, "Y"),
        (&c, "Y"),
    ];
    let mut log: Vec<(StreamId, &str, EventId)> = Vec::new();
    for (stream, event_type) in plan {
        let e = event(event_type, 0);
        log.push((stream.clone(), event_type, e.event_id));
        write(&store, stream, vec![e]).await;
    }
    let expect = |keep: &dyn Fn(&StreamId, &str) -> bool| -> Vec<EventId> {
        log.iter()
            .filter(|(s, t, _)| keep(s, t))
            .map(|(_, _, id)| *id)
            .collect()
    };

    let cases: Vec<(LogFilter, Vec<EventId>)> = vec![
        (
            LogFilter::streams([a.clone(), c.clone()]),
            expect(&|s, _| *s != b),
        ),
        (LogFilter::streams([b.clone()]), expect(&|s, _| *s == b)),
        (LogFilter::event_types(["X"]), expect(&|_, t| t == "X")),
        (LogFilter::event_types(["Z", "X"]), expect(&|_, t| t != "Y")),
        (
            LogFilter::streams([b.clone(), c.clone()]).with_event_types(["Y"]),
            expect(&|s, t| *s != a && t == "Y"),
        ),
        (LogFilter::streams([sid("filter-absent")]), vec![]),
        (LogFilter::event_types(["Nope"]), vec![]),
    ];
    for (filter, expected) in cases {
        let got = read_page(&store, Position::START, usize::MAX, &filter).await;
        assert_eq!(ids(&got), expected, "filter {filter:?}");

        // Paging through the filtered log, two at a time, finds the same events.
        let mut paged = Vec::new();
        let mut after = Position::START;
        loop {
            let page = read_page(&store, after, 2, &filter).await;
            let Some(last) = page.last() else { break };
            after = last.position;
            paged.extend(ids(&page));
        }
        assert_eq!(paged, expected, "paged filter {filter:?}");
    }
}

/// The head is the position of the last event; failed and check-only appends do not move it.
pub async fn head_position_is_the_last_event<S: EventStore>(store: S) {
    let s = sid("head");
    assert_eq!(store.head_position().await.unwrap(), Position::START);
    let mut last = Position::START;
    for count in [1, 3] {
        let appended = write(&store, &s, events("E", count)).await;
        let head = store.head_position().await.unwrap();
        assert!(head > last);
        assert_eq!(Some(&head), appended.positions.last());
        last = head;
    }
    let _ = append_err(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, events("E", 1)),
    )
    .await;
    append_ok(
        &store,
        AppendRequest::new().check(s.clone(), ExpectedVersion::Exact(v(4))),
    )
    .await;
    assert_eq!(store.head_position().await.unwrap(), last);
    let log = whole_log(&store).await;
    assert_eq!(log.last().map(|e| e.position), Some(last));
}

/// `stream_version` and `stream_exists` follow the stream's events.
pub async fn stream_version_and_existence<S: EventStore>(store: S) {
    let (s, other) = (sid("sv"), sid("sv-other"));
    assert_eq!(version_of(&store, &s).await, v(0));
    assert!(!store.stream_exists(&s).await.unwrap());
    write(&store, &s, events("E", 3)).await;
    write(&store, &other, events("E", 1)).await;
    assert_eq!(version_of(&store, &s).await, v(3));
    assert!(store.stream_exists(&s).await.unwrap());
    assert_eq!(version_of(&store, &other).await, v(1));
    assert!(
        !store.stream_exists(&sid("SV")).await.unwrap(),
        "names are case-sensitive"
    );
}

/// Sequential appends appear in the global log in the order they were made.
pub async fn global_order_is_append_order<S: EventStore>(store: S) {
    let streams = [sid("order-x"), sid("order-y"), sid("order-z")];
    let mut expected = Vec::new();
    let mut positions = Vec::new();
    for i in 0..30usize {
        let batch = events("E", 1 + (i % 3) as u64);
        expected.extend(data_ids(&batch));
        let appended = write(&store, &streams[(i * 7) % 3], batch).await;
        positions.extend(appended.positions);
    }
    assert_strictly_increasing(positions.iter().copied(), "sequential appends");
    let log = whole_log(&store).await;
    assert_eq!(ids(&log), expected);
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions
    );
}

// ---------------------------------------------------------------------------------------------
// waiting and subscriptions

/// `wait_for_events` returns at once when events exist after the given position, returns after
/// its timeout when none do, and wakes up when an event is appended.
pub async fn wait_for_events_returns_on_events_or_timeout<S: EventStore + 'static>(store: S) {
    let store = Arc::new(store);
    let s = sid("wait");
    with_deadline(
        "wait with a short timeout on an empty log",
        store.wait_for_events(Position::START, Duration::from_millis(50)),
    )
    .await
    .unwrap();

    write(&*store, &s, events("E", 1)).await;
    with_deadline(
        "wait when events already exist",
        store.wait_for_events(Position::START, Duration::from_secs(3600)),
    )
    .await
    .unwrap();

    let head = store.head_position().await.unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_events(head, Duration::from_secs(3600)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&*store, &s, events("E", 1)).await;
    with_deadline("wake-up after an append", waiter)
        .await
        .unwrap()
        .unwrap();
}

/// A subscription from the start delivers every event once, in log order, in batches, and
/// then reports that it has caught up.
pub async fn subscription_catches_up_from_the_start<S: EventStore>(store: S) {
    let (a, b) = (sid("sub-a"), sid("sub-b"));
    let mut expected = Vec::new();
    for i in 0..10u64 {
        let batch = events("E", 1 + i % 4);
        expected.extend(data_ids(&batch));
        write(&store, if i % 2 == 0 { &a } else { &b }, batch).await;
    }
    let mut subscription = store.subscribe(SubscriptionOptions::all().batch_size(4));
    let got = take(&mut subscription, expected.len()).await;
    assert_eq!(ids(&got), expected);
    assert!(subscription.poll_batch().await.unwrap().is_empty());
    assert!(subscription.is_caught_up());
    assert_eq!(
        subscription.position(),
        store.head_position().await.unwrap()
    );
}

/// A subscription resumed from a saved `position()` continues exactly where the first one
/// stopped: no event repeated, none skipped.
pub async fn subscription_resumes_from_a_saved_position<S: EventStore>(store: S) {
    let s = sid("resume");
    let all = events("E", 25);
    for chunk in all.chunks(5) {
        write(&store, &s, chunk.to_vec()).await;
    }
    let expected = data_ids(&all);

    let mut first = store.subscribe(SubscriptionOptions::all().batch_size(3));
    let mut delivered = ids(&take(&mut first, 10).await);
    let checkpoint = first.position();
    drop(first);

    // More events arrive while no one is subscribed.
    let more = events("E", 5);
    write(&store, &s, more.clone()).await;

    let mut second = store.subscribe(SubscriptionOptions::all().from(checkpoint).batch_size(7));
    delivered.extend(ids(&take(&mut second, 20).await));
    let mut all_ids = expected;
    all_ids.extend(data_ids(&more));
    assert_eq!(delivered, all_ids);
    assert!(second.poll_batch().await.unwrap().is_empty());

    // Batches resume as well: a checkpoint taken after `next_batch` is past the whole batch.
    let mut third = store.subscribe(SubscriptionOptions::all().batch_size(8));
    let batch = with_deadline("next_batch", third.next_batch())
        .await
        .unwrap();
    assert_eq!(ids(&batch), all_ids[..8]);
    let mut fourth = store.subscribe(SubscriptionOptions::all().from(third.position()));
    assert_eq!(next_event(&mut fourth).await.event_id, all_ids[8]);
}

/// A subscription that has caught up delivers an event appended afterwards.
pub async fn subscription_delivers_live_events<S: EventStore + 'static>(store: S) {
    let store = Arc::new(store);
    let s = sid("live");
    write(&*store, &s, events("E", 3)).await;
    let mut subscription = Subscription::new(
        store.clone(),
        SubscriptionOptions::all().max_wait(Duration::from_secs(2)),
    );
    assert_eq!(take(&mut subscription, 3).await.len(), 3);

    let reader = tokio::spawn(async move {
        let e = next_event(&mut subscription).await;
        (e, subscription)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let live = event("Live", 1);
    write(&*store, &s, vec![live.clone()]).await;
    let (got, mut subscription) = with_deadline("live event", reader).await.unwrap();
    assert_recorded_as(&got, &live, &s, 4, None);

    let second = event("Live", 2);
    write(&*store, &s, vec![second.clone()]).await;
    assert_eq!(
        next_event(&mut subscription).await.event_id,
        second.event_id
    );
}

/// Subscriptions filtered by stream or by event type deliver only matching events, in order,
/// both while catching up and live.
pub async fn filtered_subscriptions_deliver_only_matching_events<S: EventStore>(store: S) {
    let (a, b) = (sid("fsub-a"), sid("fsub-b"));
    let mut of_a = Vec::new();
    let mut of_type = Vec::new();
    for i in 0..12u64 {
        let stream = if i % 3 == 0 { &a } else { &b };
        let event_type = if i % 2 == 0 { "Even" } else { "Odd" };
        let e = event(event_type, i);
        if stream == &a {
            of_a.push(e.event_id);
        }
        if event_type == "Odd" {
            of_type.push(e.event_id);
        }
        write(&store, stream, vec![e]).await;
    }
    let mut by_stream = store.subscribe(
        SubscriptionOptions::all()
            .filter(LogFilter::streams([a.clone()]))
            .batch_size(2),
    );
    let mut by_type = store.subscribe(
        SubscriptionOptions::all()
            .filter(LogFilter::event_types(["Odd"]))
            .batch_size(2),
    );
    assert_eq!(ids(&take(&mut by_stream, of_a.len()).await), of_a);
    assert_eq!(ids(&take(&mut by_type, of_type.len()).await), of_type);
    assert!(by_stream.poll_batch().await.unwrap().is_empty());
    assert!(by_type.poll_batch().await.unwrap().is_empty());

    // Live: non-matching events first, then a matching one.
    write(&store, &b, vec![event("Even", 100)]).await;
    let for_a = event("Even", 101);
    write(&store, &a, vec![for_a.clone()]).await;
    let odd = event("Odd", 102);
    write(&store, &b, vec![odd.clone()]).await;
    assert_eq!(next_event(&mut by_stream).await.event_id, for_a.event_id);
    assert_eq!(next_event(&mut by_type).await.event_id, odd.event_id);
}

/// While several tasks append concurrently, a live subscription delivers every event exactly
/// once, in strictly increasing positions — no event ever appears behind one already read.
pub async fn subscription_sees_every_event_once_under_concurrent_appends<
    S: EventStore + 'static,
>(
    store: S,
) {
    const WRITERS: usize = 4;
    const APPENDS: usize = 40;
    let store = Arc::new(store);
    let mut subscription = Subscription::new(
        store.clone(),
        SubscriptionOptions::all()
            .batch_size(16)
            .max_wait(Duration::from_millis(200)),
    );
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.spawn(async move {
            let mut written = Vec::new();
            for i in 0..APPENDS {
                let batch = events("E", 1 + (i % 3) as u64);
                written.extend(data_ids(&batch));
                let stream = sid(&format!("concurrent-sub-{}", (w + i) % 5));
                write(&*store, &stream, batch).await;
                if i % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            written
        });
    }
    let mut written: Vec<EventId> = Vec::new();
    while let Some(result) = writers.join_next().await {
        written.extend(result.unwrap());
    }
    let delivered = take(&mut subscription, written.len()).await;
    assert_strictly_increasing(delivered.iter().map(|e| e.position), "live subscription");
    let delivered_ids: HashSet<EventId> = ids(&delivered).into_iter().collect();
    assert_eq!(
        delivered_ids.len(),
        written.len(),
        "every event exactly once"
    );
    assert_eq!(delivered_ids, written.into_iter().collect::<HashSet<_>>());
    assert!(subscription.poll_batch().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// concurrency and size

/// Tasks racing `Exact` appends on one stream: in each round exactly one wins, every loser gets
/// a conflict naming the winner's version, and the stream holds exactly the winners' events,
/// gap-free and once each.
pub async fn racing_exact_appends_on_one_stream_let_exactly_one_win<S: EventStore + 'static>(
    store: S,
) {
    const TASKS: usize = 8;
    const ROUNDS: u64 = 10;
    let store = Arc::new(store);
    let s = sid("race");
    let mut winners = Vec::new();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = JoinSet::new();
        for _ in 0..TASKS {
            let (store, barrier, s) = (store.clone(), barrier.clone(), s.clone());
            tasks.spawn(async move {
                let e = event("Race", round);
                barrier.wait().await;
                let result = store
                    .append(AppendRequest::new().stream(
                        s.clone(),
                        ExpectedVersion::Exact(v(round)),
                        vec![e.clone()],
                    ))
                    .await;
                (e.event_id, result)
            });
        }
        let mut won = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (id, result) = joined.unwrap();
            match result {
                Ok(appended) => {
                    assert_eq!(appended.versions, vec![v(round + 1)]);
                    won.push(id);
                }
                Err(e) => {
                    assert_conflicts(&e, &[(&s, ExpectedVersion::Exact(v(round)), round + 1)]);
                }
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one append must win");
        winners.extend(won);
    }
    let stream = read(&*store, &s).await;
    assert_eq!(versions(&stream), (1..=ROUNDS).collect::<Vec<_>>());
    assert_eq!(ids(&stream), winners);
    assert_eq!(ids(&whole_log(&*store).await), winners);
}

/// Tasks that read, append with `Exact` and retry on conflict all get their events in, each
/// once, with gap-free versions.
pub async fn contending_writers_with_retries_lose_nothing<S: EventStore + 'static>(store: S) {
    const TASKS: usize = 8;
    const EACH: usize = 20;
    let store = Arc::new(store);
    let s = sid("contended");
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let (store, s) = (store.clone(), s.clone());
        tasks.spawn(async move {
            let mut written = Vec::new();
            let mut conflicts = 0u32;
            while written.len() < EACH {
                let version = store.stream_version(&s).await.unwrap();
                let e = event("E", written.len() as u64);
                match store
                    .append(AppendRequest::new().stream(
                        s.clone(),
                        ExpectedVersion::Exact(version),
                        vec![e.clone()],
                    ))
                    .await
                {
                    Ok(_) => written.push(e.event_id),
                    Err(err) if err.is_conflict() => {
                        conflicts += 1;
                        assert!(conflicts < 100_000, "starved");
                        tokio::task::yield_now().await;
                    }
                    Err(err) => panic!("unexpected error: {err}"),
                }
            }
            written
        });
    }
    let mut written = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        written.extend(joined.unwrap());
    }
    let total = TASKS * EACH;
    assert_eq!(written.len(), total);
    let stream = read(&*store, &s).await;
    assert_eq!(versions(&stream), (1..=total as u64).collect::<Vec<_>>());
    assert_eq!(ids(&stream).into_iter().collect::<HashSet<_>>(), written);
    assert_eq!(whole_log(&*store).await.len(), total);
}

/// Tasks appending to different streams in parallel never conflict, and every stream and the
/// log end up complete and in order.
pub async fn parallel_appends_to_different_streams_all_succeed<S: EventStore + 'static>(store: S) {
    const TASKS: usize = 8;
    const EACH: u64 = 40;
    let store = Arc::new(store);
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let s = sid(&format!("parallel-{t}"));
            let mut written = Vec::new();
            for i in 0..EACH {
                let e = event("E", i);
                let appended = append_ok(
                    &*store,
                    AppendRequest::new().stream(
                        s.clone(),
                        ExpectedVersion::Exact(v(i)),
                        vec![e.clone()],
                    ),
                )
                .await;
                assert_eq!(appended.versions, vec![v(i + 1)]);
                written.push(e.event_id);
            }
            (s, written)
        });
    }
    let mut by_stream = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (s, written) = joined.unwrap();
        by_stream.insert(s, written);
    }
    for (s, written) in &by_stream {
        let stream = read(&*store, s).await;
        assert_eq!(versions(&stream), (1..=EACH).collect::<Vec<_>>());
        assert_eq!(&ids(&stream), written);
    }
    let log = whole_log(&*store).await;
    assert_eq!(log.len(), TASKS * EACH as usize);
    assert_strictly_increasing(log.iter().map(|e| e.position), "the log");
    for (s, written) in &by_stream {
        let in_log: Vec<EventId> = log
            .iter()
            .filter(|e| &e.stream_id == s)
            .map(|e| e.event_id)
            .collect();
        assert_eq!(&in_log, written, "{s} in log order");
    }
}

/// Concurrent appends that each write to two of a few shared streams, with `Exact` versions
/// and retries, are all-or-nothing: every successful append's events are all present, every
/// stream is gap-free, and nothing else is written.
pub async fn concurrent_multi_stream_appends_are_all_or_nothing<S: EventStore + 'static>(store: S) {
    const TASKS: u64 = 6;
    const EACH: usize = 15;
    let store = Arc::new(store);
    let streams: Arc<Vec<StreamId>> = Arc::new((0..4).map(|i| sid(&format!("pair-{i}"))).collect());
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let (store, streams) = (store.clone(), streams.clone());
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t);
            let mut done: Vec<[(StreamId, EventId); 2]> = Vec::new();
            let mut attempts = 0u32;
            while done.len() < EACH {
                attempts += 1;
                assert!(attempts < 100_000, "starved");
                let i = rng.usize(..streams.len());
                let j = (i + 1 + rng.usize(..streams.len() - 1)) % streams.len();
                let (x, y) = (&streams[i], &streams[j]);
                let reads = store
                    .read_streams(&[
                        StreamRead::version_only(x.clone()),
                        StreamRead::version_only(y.clone()),
                    ])
                    .await
                    .unwrap();
                let (ex, ey) = (event("Pair", 0), event("Pair", 1));
                let result = store
                    .append(
                        AppendRequest::new()
                            .stream(
                                x.clone(),
                                ExpectedVersion::Exact(reads[0].version),
                                vec![ex.clone()],
                            )
                            .stream(
                                y.clone(),
                                ExpectedVersion::Exact(reads[1].version),
                                vec![ey.clone()],
                            ),
                    )
                    .await;
                match result {
                    Ok(_) => done.push([(x.clone(), ex.event_id), (y.clone(), ey.event_id)]),
                    Err(e) if e.is_conflict() => tokio::task::yield_now().await,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            done
        });
    }
    let mut expected: HashMap<EventId, StreamId> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        for pair in joined.unwrap() {
            for (s, id) in pair {
                expected.insert(id, s);
            }
        }
    }
    let log = whole_log(&*store).await;
    assert_eq!(
        log.len(),
        expected.len(),
        "only successful appends are written"
    );
    for e in &log {
        assert_eq!(
            expected.get(&e.event_id),
            Some(&e.stream_id),
            "event {}",
            e.event_id
        );
    }
    for s in streams.iter() {
        let stream = read(&*store, s).await;
        let n = stream.len() as u64;
        assert_eq!(
            versions(&stream),
            (1..=n).collect::<Vec<_>>(),
            "{s} is gap-free"
        );
    }
}

/// One append of several thousand events writes them all, in order, and they read back by
/// stream and through the paged log.
pub async fn large_append_is_written_whole<S: EventStore>(store: S) {
    const COUNT: u64 = 5_000;
    let (big, small) = (sid("large"), sid("large-companion"));
    let many = events("Bulk", COUNT);
    let one = events("Single", 1);
    let appended = append_ok(
        &store,
        AppendRequest::new()
            .stream(big.clone(), ExpectedVersion::NoStream, many.clone())
            .stream(small.clone(), ExpectedVersion::NoStream, one.clone()),
    )
    .await;
    assert_eq!(appended.versions, vec![v(COUNT), v(1)]);
    assert_eq!(appended.positions.len(), COUNT as usize + 1);
    assert_strictly_increasing(appended.positions.iter().copied(), "large append");

    let stream = read(&store, &big).await;
    assert_eq!(versions(&stream), (1..=COUNT).collect::<Vec<_>>());
    assert_eq!(ids(&stream), data_ids(&many));
    let mut expected = data_ids(&many);
    expected.extend(data_ids(&one));
    assert_eq!(ids(&whole_log(&store).await), expected);
    let tail = store.read_stream(&big, v(COUNT - 2), 10).await.unwrap();
    assert_eq!(versions(&tail.events), vec![COUNT - 1, COUNT]);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __behaviour_names {
    ([] $($name:ident),* $(,)?) => {
        /// The name of every behaviour in the suite, in the order
        /// [`store_contract_tests!`](crate::store_contract_tests) generates their tests.
        pub const BEHAVIOURS: &[&str] = &[$(stringify!($name)),*];
    };
}
crate::__with_behaviours!(__behaviour_names []);
