//! The global log: `read_all` paging and filters, the head position, and the order of appends.

use std::time::Duration;

use crossfold_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, LogFilter, Position, StoreError, StreamId,
};

use super::{
    append_err, append_ok, assert_conflicts, assert_strictly_increasing, data_ids, event, events,
    ids, read_page, sid, v, whole_log, write,
};

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

/// `read_all` filters by streams, by category, by event types, and by combinations, keeping log
/// order, and pages through filtered results too.
pub async fn read_all_filters_by_stream_and_type<S: EventStore>(store: S) {
    let (a, b, c) = (sid("filter-a"), sid("filter-b"), sid("sieve-c"));
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
        (LogFilter::categories(["filter"]), expect(&|s, _| *s != c)),
        (
            LogFilter::categories(["sieve", "filter"]),
            expect(&|_, _| true),
        ),
        (
            LogFilter::categories(["sieve"]).with_event_types(["X", "Z"]),
            expect(&|s, t| *s == c && t != "Y"),
        ),
        (
            LogFilter {
                categories: Some(vec!["filter".to_owned()]),
                ..LogFilter::streams([a.clone(), c.clone()])
            },
            expect(&|s, _| *s == a),
        ),
        (LogFilter::categories(["nope"]), vec![]),
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
        assert_eq!(Some(head), appended.position());
        last = head;
    }
    let err = append_err(
        &store,
        AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, events("E", 1)),
    )
    .await;
    assert_conflicts(&err, &[(&s, ExpectedVersion::NoStream, 4)]);
    append_ok(
        &store,
        AppendRequest::new().check(s.clone(), ExpectedVersion::Exact(v(4))),
    )
    .await;
    assert_eq!(store.head_position().await.unwrap(), last);
    let log = whole_log(&store).await;
    assert_eq!(log.last().map(|e| e.position), Some(last));
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
        positions.extend(appended.events.iter().map(|e| e.position));
    }
    assert_strictly_increasing(positions.iter().copied(), "sequential appends");
    let log = whole_log(&store).await;
    assert_eq!(ids(&log), expected);
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions
    );
}

/// `wait_for_position` returns once the log shows everything up to the position an append
/// returned, after which a read of the log includes that append; a position beyond anything
/// written times out with `StoreError::Timeout`.
pub async fn waiting_for_a_position_makes_an_append_readable<S: EventStore>(store: S) {
    let s = sid("visible-at");
    let data = events("E", 2);
    let appended = store
        .append(AppendRequest::new().stream(s.clone(), ExpectedVersion::NoStream, data.clone()))
        .await
        .unwrap();
    let position = appended.position().unwrap();
    store
        .wait_for_position(position, Duration::from_secs(60))
        .await
        .unwrap();
    let log = read_page(&store, Position::START, 100, &LogFilter::all()).await;
    assert_eq!(ids(&log), data_ids(&data));
    assert!(store.head_position().await.unwrap() >= position);

    let beyond = Position::new(position.commit().saturating_mul(2) + 1_000_000, 0);
    let err = store
        .wait_for_position(beyond, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Timeout(_)), "{err:?}");
    store
        .wait_for_position(Position::START, Duration::ZERO)
        .await
        .unwrap();
}
