//! Reads of streams: absent streams, paging by version, several reads in one call, versions and
//! existence.

use crossfold_core::{EventId, EventStore, LogFilter, Position, StreamRead, StreamVersion};

use super::{data_ids, events, ids, read_page, sid, v, version_of, versions, write};

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
