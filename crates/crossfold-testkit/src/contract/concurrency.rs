//! Concurrent writers: racing and retrying appends on shared streams, parallel appends on separate
//! ones, multi-stream appends that stay all-or-nothing under contention, and multi-stream reads
//! that see them whole.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crossfold_core::{AppendRequest, EventId, EventStore, ExpectedVersion, StreamId, StreamRead};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::last_version;
use super::{
    append_ok, assert_conflicts, assert_strictly_increasing, event, ids, read, sid, v, versions,
    wait_visible, whole_log,
};

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
                    assert_eq!(last_version(&appended), v(round + 1));
                    wait_visible(&*store, &appended).await;
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
                    Ok(appended) => {
                        wait_visible(&*store, &appended).await;
                        written.push(e.event_id);
                    }
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
                assert_eq!(last_version(&appended), v(i + 1));
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
                    Ok(appended) => {
                        wait_visible(&*store, &appended).await;
                        done.push([(x.clone(), ex.event_id), (y.clone(), ey.event_id)]);
                    }
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

/// A multi-stream read is a snapshot: while writers append to pairs of streams, always one event
/// to both streams of a pair in one append, every `read_streams` of a pair shows both at the
/// same version, with as many events as that version says. (The executor relies on it: a
/// command's state must be one that existed, not two streams seen at different moments.)
pub async fn multi_stream_reads_are_snapshots<S: EventStore + 'static>(store: S) {
    const PAIRS: usize = 4;
    const APPENDS: u64 = 150;
    let store = Arc::new(store);
    let pairs: Arc<Vec<[StreamId; 2]>> = Arc::new(
        (0..PAIRS)
            .map(|i| [sid(&format!("twin-a-{i}")), sid(&format!("twin-b-{i}"))])
            .collect(),
    );
    let writing = Arc::new(std::sync::atomic::AtomicUsize::new(PAIRS));
    let mut tasks = JoinSet::new();
    for pair in pairs.iter().cloned() {
        let (store, writing) = (store.clone(), writing.clone());
        tasks.spawn(async move {
            for n in 0..APPENDS {
                // Stream reads see an append as soon as it returns; nothing here reads the log.
                let appended = store
                    .append(
                        AppendRequest::new()
                            .stream(
                                pair[0].clone(),
                                ExpectedVersion::Any,
                                vec![event("Twin", n)],
                            )
                            .stream(
                                pair[1].clone(),
                                ExpectedVersion::Any,
                                vec![event("Twin", n)],
                            ),
                    )
                    .await;
                if let Err(e) = appended {
                    panic!("append to {} and {} failed: {e}", pair[0], pair[1]);
                }
                tokio::task::yield_now().await;
            }
            writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            0u64
        });
    }
    for r in 0..4usize {
        let (store, pairs, writing) = (store.clone(), pairs.clone(), writing.clone());
        tasks.spawn(async move {
            let mut reads = 0u64;
            let mut seen = [0u64; PAIRS];
            while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                let i = (r + reads as usize) % PAIRS;
                let [a, b] = &pairs[i];
                // Whole streams, and tails after what was seen before, as a command's first
                // read and its catch-up read ask for them.
                let after = v(if reads.is_multiple_of(2) { 0 } else { seen[i] });
                let read = store
                    .read_streams(&[
                        StreamRead::after(a.clone(), after),
                        StreamRead::after(b.clone(), after),
                    ])
                    .await
                    .unwrap();
                assert_eq!(
                    read[0].version, read[1].version,
                    "{a} and {b} are always written together, but one read saw them at \
                     different versions"
                );
                for s in &read {
                    assert_eq!(
                        s.events.len() as u64,
                        s.version.get() - after.get(),
                        "{} at version {} read after {after}",
                        s.stream,
                        s.version
                    );
                }
                seen[i] = read[0].version.get();
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        });
    }
    let mut reads = 0;
    while let Some(joined) = tasks.join_next().await {
        reads += joined.unwrap();
    }
    assert!(reads > 0, "the readers never ran alongside the writers");
}
