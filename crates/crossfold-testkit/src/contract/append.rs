//! Appends: what one append writes, reports and refuses as a whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossfold_core::{
    AppendRequest, Appended, Codec, EventData, EventId, EventStore, ExpectedVersion, LogFilter,
    MessagePack, Metadata, Payload, Position, StoreError, StreamId, StreamRead, Timestamp,
};

use super::{
    append_err, append_ok, assert_recorded_as, assert_strictly_increasing, data_ids, event, events,
    ids, read, read_page, sid, v, version_of, versions, whole_log, write,
};
use super::{last_version, positions, sv, written_versions};

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
    assert_eq!(
        written_versions(&appended),
        sv(&[(&order, 2), (&odd, 2), (&longest, 1)])
    );
    let p = &positions(&appended);
    assert_eq!(p.len(), 5);
    assert_strictly_increasing(p.iter().copied(), "one append");
    // The append returns the events as stored, in request order, like a read would.
    let returned = [
        (&json, &order, 1),
        (&packed, &order, 2),
        (&minimal, &odd, 1),
        (&binary, &odd, 2),
        (&on_longest, &longest, 1),
    ];
    for ((recorded, (data, stream, version)), position) in
        appended.events.iter().zip(returned).zip(p)
    {
        assert_recorded_as(recorded, data, stream, version, Some(*position));
    }

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

/// An append to several streams writes all of them in one step, in request order, and returns
/// every event written with its stream's new version (a checked-only stream is checked, not
/// reported).
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
    assert_eq!(
        written_versions(&appended),
        sv(&[(&a, 2), (&b, 5), (&c, 1)])
    );
    let returned = positions(&appended);
    assert_eq!(returned.len(), 6);
    assert!(returned[0] > head_before);
    assert_strictly_increasing(returned.iter().copied(), "multi-stream append");
    assert_eq!(
        ids(&appended.events),
        [&ea, &eb, &ec]
            .into_iter()
            .flat_map(|e| data_ids(e))
            .collect::<Vec<_>>()
    );
    assert_eq!(appended.position(), returned.last().copied());

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
        returned
    );
}

/// An append to no stream at all succeeds and writes nothing; an append that only checks
/// streams succeeds when they match, writing and returning nothing.
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
    assert!(
        checked.is_empty() && checked.position().is_none(),
        "{checked:?}"
    );
    assert_eq!(store.head_position().await.unwrap(), head);
    assert_eq!(version_of(&store, &a).await, v(2));
    assert!(!store.stream_exists(&absent).await.unwrap());
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
    assert_eq!(last_version(&ok), v(1));
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
    assert_eq!(
        written_versions(&appended),
        sv(&[(&big, COUNT), (&small, 1)])
    );
    assert_eq!(appended.len(), COUNT as usize + 1);
    assert_strictly_increasing(positions(&appended), "large append");

    let stream = read(&store, &big).await;
    assert_eq!(versions(&stream), (1..=COUNT).collect::<Vec<_>>());
    assert_eq!(ids(&stream), data_ids(&many));
    let mut expected = data_ids(&many);
    expected.extend(data_ids(&one));
    assert_eq!(ids(&whole_log(&store).await), expected);
    let tail = store.read_stream(&big, v(COUNT - 2), 10).await.unwrap();
    assert_eq!(versions(&tail.events), vec![COUNT - 1, COUNT]);
}

/// Input that some store cannot hold is refused by every store with `InvalidRequest`, and
/// nothing is written: a JSON payload that is not JSON or whose strings hold U+0000 (as a Rust
/// `String` may), a NUL in an event type or in metadata, an expected version or a read beyond
/// the highest version a store can hold.
pub async fn input_no_store_can_hold_is_refused_by_every_store<S: EventStore>(store: S) {
    let s = sid("unstorable");
    let nul_string = serde_json::to_vec(&serde_json::json!({ "note": "a\u{0}b" })).unwrap();
    let mut bad_type = event("E", 1);
    bad_type.event_type = "Bad\0Type".into();
    let mut bad_actor = event("E", 2);
    bad_actor.metadata = Arc::new(Metadata {
        actor: Some("ada\0".into()),
        ..Metadata::now()
    });
    let mut bad_field = event("E", 3);
    let mut metadata = Metadata::now();
    metadata
        .custom
        .insert("note".into(), serde_json::json!(["fine", "not\u{0}fine"]));
    bad_field.metadata = Arc::new(metadata);
    let refused = [
        (
            "a string holding U+0000",
            EventData::new("E", Payload::json(nul_string)),
        ),
        (
            "invalid JSON",
            EventData::new("E", Payload::json(r#"{"open": "#)),
        ),
        ("a NUL in the event type", bad_type),
        ("a NUL in the actor", bad_actor),
        ("a NUL in a custom field", bad_field),
    ];
    for (what, bad) in refused {
        let err = append_err(
            &store,
            AppendRequest::new()
                .stream(
                    sid("unstorable-other"),
                    ExpectedVersion::Any,
                    events("Fine", 1),
                )
                .stream(s.clone(), ExpectedVersion::Any, vec![bad]),
        )
        .await;
        assert!(
            matches!(err, StoreError::InvalidRequest(_)),
            "{what}: {err:?}"
        );
    }
    let err = append_err(
        &store,
        AppendRequest::new().stream(
            s.clone(),
            ExpectedVersion::Exact(v(u64::MAX)),
            events("E", 1),
        ),
    )
    .await;
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");
    let err = store.read_stream(&s, v(u64::MAX), 10).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");
    let err = store
        .read_streams(&[StreamRead::after(s.clone(), v(u64::MAX))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err:?}");

    assert!(whole_log(&store).await.is_empty(), "nothing was written");
    // What is storable still is: an escaped backslash before "u0000" is plain text.
    write(
        &store,
        &s,
        vec![EventData::new(
            "E",
            Payload::json(r#"{"path": "C:\\u0000"}"#),
        )],
    )
    .await;
    assert_eq!(read(&store, &s).await.len(), 1);
}
