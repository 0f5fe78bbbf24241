//! Expected versions: each condition on a written stream and on a stream that is only read, and
//! what a failed condition writes (nothing) and reports (every failing stream).

use crossfold_core::{AppendRequest, EventStore, ExpectedVersion, StreamId};

use super::{
    append_err, append_ok, assert_conflicts, events, read, sid, v, version_of, versions, whole_log,
    write,
};
use super::{last_version, sv, written_versions};

/// `Any` appends whether or not the stream exists.
pub async fn expected_any_always_appends<S: EventStore>(store: S) {
    let s = sid("any");
    let first = append_ok(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::Any, events("E", 2)),
    )
    .await;
    assert_eq!(last_version(&first), v(2));
    let second = append_ok(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::Any, events("E", 1)),
    )
    .await;
    assert_eq!(last_version(&second), v(3));
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
    assert_eq!(last_version(&first), v(1));
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
    assert_eq!(last_version(&ok), v(3));
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
    assert_eq!(last_version(&first), v(2));
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
    assert_eq!(last_version(&second), v(3));
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
                written_versions(&appended),
                sv(&[(&target, target_version)]),
                "check {expected} on {checked} (actual version {actual})"
            );
            assert_eq!(appended.len(), 1);
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
