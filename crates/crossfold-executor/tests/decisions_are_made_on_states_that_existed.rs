//! A command decides on a state in which every stream it read is at a version that coexisted
//! with the others' — never on streams read at different moments. Two streams here are only
//! ever flipped together, so they agree at every committed point; the command refuses when it
//! sees them disagree, and another writer is made to strike exactly between two of the
//! executor's reads. Such a refusal would be a decision on a state that never existed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossfold_core::{
    AppendRequest, Appended, Command, CommandError, DomainEvent, Emit, EventData, EventStore,
    ExpectedVersion, Fold, LogFilter, Payload, Position, Recorded, RecordedEvent, StoreError,
    StreamEvents, StreamId, StreamRead, StreamRef,
};
use crossfold_executor::Executor;
use crossfold_memory::MemoryStore;
use serde::{Deserialize, Serialize};

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Pair {
    Flipped { to: bool },
    Marked,
}

impl DomainEvent for Pair {
    fn event_type(&self) -> &'static str {
        match self {
            Pair::Flipped { .. } => "Flipped",
            Pair::Marked => "Marked",
        }
    }
}

/// Each stream's flag; kept as per-stream parts when `P` (`PER_STREAM`).
#[derive(Clone, Debug, Default)]
struct Flags<const P: bool>(Vec<(StreamId, bool)>);

impl<const P: bool> Fold<Pair> for Flags<P> {
    const PER_STREAM: bool = P;
    fn apply(&mut self, event: &Recorded<Pair>) {
        if let Pair::Flipped { to } = event.event {
            self.0.retain(|(s, _)| *s != event.stream_id);
            self.0.push((event.stream_id.clone(), to));
        }
    }
    fn merge(&mut self, part: &Self) {
        for (stream, flag) in &part.0 {
            self.0.retain(|(s, _)| s != stream);
            self.0.push((stream.clone(), *flag));
        }
    }
}

impl<const P: bool> Flags<P> {
    fn of(&self, stream: &StreamId) -> bool {
        self.0.iter().any(|(s, f)| s == stream && *f)
    }
    fn agree(&self, a: &StreamId, b: &StreamId) -> Result<(), CommandError> {
        if self.of(a) == self.of(b) {
            Ok(())
        } else {
            Err(CommandError::InvalidState(format!(
                "{a} says {}, {b} says {}",
                self.of(a),
                self.of(b)
            )))
        }
    }
}

/// Reads both streams of the pair and marks the first, unless they disagree.
struct Mark<const P: bool> {
    a: StreamId,
    b: StreamId,
}

impl<const P: bool> Command for Mark<P> {
    type Event = Pair;
    type State = Flags<P>;
    type Streams = [StreamId; 2];
    fn streams(&self) -> [StreamId; 2] {
        [self.a.clone(), self.b.clone()]
    }
    fn handle<'x>(
        &self,
        state: &Flags<P>,
        [a, _]: [StreamRef<'x>; 2],
        out: &mut Emit<'x, Pair>,
    ) -> Result<(), CommandError> {
        state.agree(&self.a, &self.b)?;
        out.append(a, Pair::Marked);
        Ok(())
    }
}

/// Declares the first stream, discovers the second, and marks the first unless they disagree.
struct MarkDiscovering<const P: bool> {
    a: StreamId,
    b: StreamId,
}

impl<const P: bool> Command for MarkDiscovering<P> {
    type Event = Pair;
    type State = Flags<P>;
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.a.clone()
    }
    fn discover(&self, _: &Flags<P>) -> Vec<StreamId> {
        vec![self.b.clone()]
    }
    fn handle<'x>(
        &self,
        state: &Flags<P>,
        a: StreamRef<'x>,
        out: &mut Emit<'x, Pair>,
    ) -> Result<(), CommandError> {
        state.agree(&self.a, &self.b)?;
        out.append(a, Pair::Marked);
        Ok(())
    }
}

fn event(json: &str) -> EventData {
    let event_type = if json.contains("Flipped") {
        "Flipped"
    } else {
        "Marked"
    };
    EventData::new(event_type, Payload::json(json.as_bytes().to_vec()))
}

/// Both streams flipped to `true` in one append: they agree before and after.
fn flip_both(a: &StreamId, b: &StreamId) -> AppendRequest {
    let flip = r#"{"type":"Flipped","to":true}"#;
    AppendRequest::new()
        .stream(a.clone(), ExpectedVersion::Any, vec![event(flip)])
        .stream(b.clone(), ExpectedVersion::Any, vec![event(flip)])
}

fn mark(a: &StreamId) -> AppendRequest {
    AppendRequest::new().stream(
        a.clone(),
        ExpectedVersion::Any,
        vec![event(r#"{"type":"Marked"}"#)],
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Call {
    Read,
    Append,
}

/// A memory store where another writer appends just before chosen calls: "before the 2nd
/// read", "before the 1st append".
#[derive(Clone)]
struct Meddled {
    inner: MemoryStore,
    reads: Arc<AtomicU64>,
    appends: Arc<AtomicU64>,
    plan: Arc<Mutex<Vec<(Call, u64, AppendRequest)>>>,
    struck: Arc<AtomicU64>,
}

impl Meddled {
    fn new(plan: Vec<(Call, u64, AppendRequest)>) -> Self {
        Self {
            inner: MemoryStore::new(),
            reads: Arc::default(),
            appends: Arc::default(),
            plan: Arc::new(Mutex::new(plan)),
            struck: Arc::default(),
        }
    }

    async fn meddle(&self, call: Call, n: u64) {
        let due: Vec<AppendRequest> = {
            let mut plan = self.plan.lock().unwrap();
            let (due, rest) = plan.drain(..).partition(|(c, k, _)| *c == call && *k == n);
            *plan = rest;
            due.into_iter().map(|(_, _, r)| r).collect()
        };
        for request in due {
            self.inner.append(request).await.unwrap();
            self.struck.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl EventStore for Meddled {
    async fn read_streams(&self, reads: &[StreamRead]) -> Result<Vec<StreamEvents>, StoreError> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        self.meddle(Call::Read, n).await;
        self.inner.read_streams(reads).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        self.meddle(Call::Append, n).await;
        self.inner.append(request).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit, filter).await
    }
    async fn head_position(&self) -> Result<Position, StoreError> {
        self.inner.head_position().await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }
}

/// The first append conflicts on `a` alone (another command marked it); before the executor
/// reads again, both streams are flipped. Re-reading only `a` would show `a` flipped and `b`
/// not.
async fn conflict_on_one_stream_then_both_move<const P: bool>() {
    let (a, b) = (sid("a"), sid("b"));
    let store = Meddled::new(vec![
        (Call::Append, 1, mark(&a)),
        (Call::Read, 2, flip_both(&a, &b)),
    ]);
    let executor = Executor::new(store.clone());
    let done = executor
        .execute(Mark::<P> {
            a: a.clone(),
            b: b.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("refused on a state that never existed: {e}"));
    assert_eq!(done.conflicts, 1);
    assert_eq!(
        store.struck.load(Ordering::SeqCst),
        2,
        "the meddling must happen"
    );
    assert_eq!(done.decode::<Pair>().unwrap()[0].event, Pair::Marked);
}

#[tokio::test]
async fn after_a_conflict_every_stream_is_read_again_at_once() {
    conflict_on_one_stream_then_both_move::<false>().await;
}

#[tokio::test]
async fn after_a_conflict_every_part_is_read_again_at_once() {
    conflict_on_one_stream_then_both_move::<true>().await;
}

/// The declared stream is read, then both streams are flipped, then the discovered stream is
/// read: the view mixes two points of the log.
async fn both_move_between_discovery_rounds<const P: bool>() {
    let (a, b) = (sid("a"), sid("b"));
    let store = Meddled::new(vec![(Call::Read, 2, flip_both(&a, &b))]);
    let executor = Executor::new(store.clone());
    let done = executor
        .execute(MarkDiscovering::<P> {
            a: a.clone(),
            b: b.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("refused on a state that never existed: {e}"));
    assert_eq!(
        store.struck.load(Ordering::SeqCst),
        1,
        "the meddling must happen"
    );
    assert_eq!(done.decode::<Pair>().unwrap()[0].event, Pair::Marked);
}

#[tokio::test]
async fn a_view_completed_by_discovery_is_confirmed_before_a_refusal() {
    both_move_between_discovery_rounds::<false>().await;
}

#[tokio::test]
async fn parts_added_by_discovery_are_confirmed_before_a_refusal() {
    both_move_between_discovery_rounds::<true>().await;
}
