//! Commands: declare streams, fold their events into a state of your own, decide.
//!
//! A command writes only to streams it read. The compiler enforces it: [`Emit::append`] takes a
//! [`StreamRef`], and the only way to get one is from the executor, for a declared (or
//! discovered) stream, during one execution.

use std::marker::PhantomData;

use crate::codec::DomainEvent;
use crate::error::CommandError;
use crate::fold::Fold;
use crate::id::StreamId;

/// A command in the aggregate-per-command style.
///
/// The command says which streams it reads and decides; the state it decides on folds itself
/// (see [`Fold`]), so commands over the same state share its fold.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use crossfold_core::{
///     Command, CommandError, DomainEvent, Emit, Fold, Recorded, StreamId, StreamRef,
/// };
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterEvent { Incremented }
/// impl DomainEvent for CounterEvent {
///     fn event_type(&self) -> &'static str { "Incremented" }
/// }
///
/// /// How many times the counter was incremented.
/// #[derive(Clone, Default)]
/// struct Count(u32);
/// impl Fold<CounterEvent> for Count {
///     fn apply(&mut self, _event: &Recorded<CounterEvent>) { self.0 += 1; }
/// }
///
/// /// Increments a counter, at most up to a limit.
/// struct Increment { counter: StreamId, limit: u32 }
///
/// impl Command for Increment {
///     type Event = CounterEvent;
///     type State = Count;
///     type Streams = StreamId;
///
///     fn streams(&self) -> StreamId { self.counter.clone() }
///
///     fn handle<'x>(
///         &self,
///         Count(count): &Count,
///         counter: StreamRef<'x>,
///         out: &mut Emit<'x, CounterEvent>,
///     ) -> Result<(), CommandError> {
///         if *count >= self.limit {
///             return Err(CommandError::rejected("limit_reached", format!("already {count}")));
///         }
///         out.append(counter, CounterEvent::Incremented);
///         Ok(())
///     }
/// }
/// ```
pub trait Command: Send + Sync + 'static {
    /// The events this command reads and writes.
    type Event: DomainEvent;
    /// The state it decides on: its view of the streams it reads, built by the state's own
    /// [`Fold`] (`()` for a command that needs none). It must depend only on the events
    /// folded (that is what lets the executor cache it).
    type State: Fold<Self::Event>;
    /// The declared streams: a [`StreamId`], an array `[StreamId; N]`, a `Vec<StreamId>`, or
    /// your own [`StreamSet`].
    type Streams: StreamSet;

    /// The streams to read; the command may write to any of them.
    fn streams(&self) -> Self::Streams;

    /// Decides. Appends events through `out` using the tokens of the declared streams, or
    /// returns an error; either way it must not have side effects.
    fn handle<'x>(
        &self,
        state: &Self::State,
        streams: <Self::Streams as StreamSet>::Tokens<'x>,
        out: &mut Emit<'x, Self::Event>,
    ) -> Result<(), CommandError>;

    /// Further streams to read, found from the state folded so far (for example the products
    /// of an order). They join the read set and the consistency check; `handle` gets tokens for
    /// them from [`Emit::stream`]. Called again after each round until it names nothing new.
    fn discover(&self, state: &Self::State) -> Vec<StreamId> {
        let _ = state;
        Vec::new()
    }

    /// The permission the caller must hold, checked by the executor's authorizer.
    fn required_permission(&self) -> Option<&str> {
        None
    }

    /// Whether `stream` (one of the declared streams) is expected not to exist yet, like a
    /// stream named after a freshly generated id. The executor then skips reading it and
    /// appends expecting it empty; if it exists after all, the append conflicts and the command
    /// runs again with its real contents. Purely an optimisation: it saves a read.
    fn expects_new(&self, stream: &StreamId) -> bool {
        let _ = stream;
        false
    }

    /// A short name for logs and metrics labels. Defaults to the type's name without its path.
    fn name(&self) -> &'static str {
        let full = std::any::type_name::<Self>();
        let base = full.split('<').next().unwrap_or(full);
        // A path's separators are the only colons in it; a one-character pattern is a plain
        // byte search, which matters because the executor asks for the name on every command.
        base.rsplit(':').next().unwrap_or(base)
    }
}

/// A write permit for one stream of the current execution. Only the executor (or the testkit)
/// creates them, from the declared and discovered streams; a raw [`StreamId`] cannot be used to
/// write. The lifetime brands it to one execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRef<'x> {
    index: u32,
    _brand: PhantomData<fn(&'x ()) -> &'x ()>,
}

impl<'x> StreamRef<'x> {
    const INVALID: u32 = u32::MAX;

    fn new(index: u32) -> Self {
        Self {
            index,
            _brand: PhantomData,
        }
    }
}

/// Hands out the tokens of the declared streams, in declaration order, to a [`StreamSet`].
#[derive(Debug)]
pub struct TokenSource<'x> {
    indices: std::slice::Iter<'x, u32>,
}

impl<'x> TokenSource<'x> {
    /// The token of the next declared stream. A set asking for more tokens than it declared
    /// gets a token that every append refuses.
    pub fn next_token(&mut self) -> StreamRef<'x> {
        StreamRef::new(self.indices.next().copied().unwrap_or(StreamRef::INVALID))
    }

    /// How many declared streams have no token yet.
    pub fn remaining(&self) -> usize {
        self.indices.len()
    }
}

/// A set of declared streams and the shape of the tokens `handle` receives for it.
pub trait StreamSet: Send + Sync {
    /// The tokens, one per declared stream (`StreamRef` for a `StreamId`, an array for an array).
    type Tokens<'x>;

    /// Pushes the declared stream ids, in order.
    fn stream_ids(&self, out: &mut Vec<StreamId>);

    /// Takes one token per declared stream from `source`, in the order of
    /// [`stream_ids`](Self::stream_ids).
    fn tokens<'x>(source: &mut TokenSource<'x>) -> Self::Tokens<'x>;
}

impl StreamSet for StreamId {
    type Tokens<'x> = StreamRef<'x>;
    fn stream_ids(&self, out: &mut Vec<StreamId>) {
        out.push(self.clone());
    }
    fn tokens<'x>(source: &mut TokenSource<'x>) -> StreamRef<'x> {
        source.next_token()
    }
}

impl<const N: usize> StreamSet for [StreamId; N] {
    type Tokens<'x> = [StreamRef<'x>; N];
    fn stream_ids(&self, out: &mut Vec<StreamId>) {
        out.extend(self.iter().cloned());
    }
    fn tokens<'x>(source: &mut TokenSource<'x>) -> [StreamRef<'x>; N] {
        std::array::from_fn(|_| source.next_token())
    }
}

impl StreamSet for Vec<StreamId> {
    type Tokens<'x> = Vec<StreamRef<'x>>;
    fn stream_ids(&self, out: &mut Vec<StreamId>) {
        out.extend(self.iter().cloned());
    }
    fn tokens<'x>(source: &mut TokenSource<'x>) -> Vec<StreamRef<'x>> {
        (0..source.remaining())
            .map(|_| source.next_token())
            .collect()
    }
}

impl StreamSet for () {
    type Tokens<'x> = ();
    fn stream_ids(&self, _out: &mut Vec<StreamId>) {}
    fn tokens<'x>(_source: &mut TokenSource<'x>) {}
}

/// Collects the events a command decides to write.
#[derive(Debug)]
pub struct Emit<'x, E> {
    read_set: &'x [StreamId],
    events: Vec<(u32, E)>,
    invalid_token: bool,
}

impl<'x, E> Emit<'x, E> {
    /// Appends `event` to the stream `stream` stands for.
    pub fn append(&mut self, stream: StreamRef<'x>, event: E) {
        if (stream.index as usize) < self.read_set.len() {
            self.events.push((stream.index, event));
        } else {
            self.invalid_token = true;
        }
    }

    /// The token of a stream in the read set (declared or discovered), or `None` if the
    /// command did not read it.
    pub fn stream(&self, id: &StreamId) -> Option<StreamRef<'x>> {
        self.read_set
            .iter()
            .position(|s| s == id)
            .and_then(|i| u32::try_from(i).ok())
            .map(StreamRef::new)
    }

    /// The stream id behind a token.
    pub fn stream_id(&self, stream: StreamRef<'x>) -> Option<&StreamId> {
        self.read_set.get(stream.index as usize)
    }

    /// How many events have been appended so far.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event has been appended.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// The streams one execution reads: the declared ones (deduplicated, in declaration order)
/// followed by discovered ones. The executor and the testkit use it to run `handle`.
#[derive(Clone, Debug, Default)]
pub struct ReadSet {
    ids: Vec<StreamId>,
    declared: Vec<u32>,
}

impl ReadSet {
    /// The declared streams of `command`.
    pub fn of<C: Command>(command: &C) -> Self {
        let mut ids = Vec::new();
        command.streams().stream_ids(&mut ids);
        let mut declared: Vec<u32> = Vec::with_capacity(ids.len());
        // Deduplicated in place, keeping first occurrences in order: the ids vector becomes the
        // set itself, without a second allocation.
        let mut kept = 0;
        for i in 0..ids.len() {
            match ids[..kept].iter().position(|s| *s == ids[i]) {
                Some(first) => declared.push(first as u32),
                None => {
                    ids.swap(kept, i);
                    declared.push(kept as u32);
                    kept += 1;
                }
            }
        }
        ids.truncate(kept);
        ReadSet { ids, declared }
    }

    /// Adds discovered streams; returns those that were not already in the set.
    pub fn discover(&mut self, ids: impl IntoIterator<Item = StreamId>) -> Vec<StreamId> {
        let mut added = Vec::new();
        for id in ids {
            if !self.ids.contains(&id) {
                self.ids.push(id.clone());
                added.push(id);
            }
        }
        added
    }

    /// Every stream in the set, declared first.
    pub fn ids(&self) -> &[StreamId] {
        &self.ids
    }

    /// Whether the set reads no stream.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Runs `command.handle` on `state` and returns the events it decided, each with the index
    /// of its stream in [`ids`](Self::ids), in the order they were appended.
    pub fn decide<C: Command>(
        &self,
        command: &C,
        state: &C::State,
    ) -> Result<Vec<(usize, C::Event)>, CommandError> {
        let mut source = TokenSource {
            indices: self.declared.iter(),
        };
        let tokens = <C::Streams as StreamSet>::tokens(&mut source);
        let mut out = Emit {
            read_set: &self.ids,
            events: Vec::new(),
            invalid_token: false,
        };
        command.handle(state, tokens, &mut out)?;
        if out.invalid_token {
            return Err(CommandError::InvalidState(format!(
                "command {} wrote through a token of no declared stream (its StreamSet hands out more tokens than it declares)",
                command.name()
            )));
        }
        Ok(out
            .events
            .into_iter()
            .map(|(i, e)| (i as usize, e))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Touched(u8);
    impl DomainEvent for Touched {
        fn event_type(&self) -> &'static str {
            "Touched"
        }
    }

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    struct TouchAll {
        streams: [StreamId; 3],
    }
    impl Command for TouchAll {
        type Event = Touched;
        type State = ();
        type Streams = [StreamId; 3];
        fn streams(&self) -> [StreamId; 3] {
            self.streams.clone()
        }
        fn handle<'x>(
            &self,
            _: &(),
            [a, b, c]: [StreamRef<'x>; 3],
            out: &mut Emit<'x, Touched>,
        ) -> Result<(), CommandError> {
            out.append(c, Touched(3));
            out.append(a, Touched(1));
            out.append(b, Touched(2));
            Ok(())
        }
    }

    #[test]
    fn tokens_map_to_declared_streams_in_order() {
        let cmd = TouchAll {
            streams: [sid("a"), sid("b"), sid("c")],
        };
        let set = ReadSet::of(&cmd);
        let events = set.decide(&cmd, &()).unwrap();
        let named: Vec<_> = events
            .iter()
            .map(|(i, e)| (set.ids()[*i].as_str(), e.0))
            .collect();
        assert_eq!(named, vec![("c", 3), ("a", 1), ("b", 2)]);
    }

    #[test]
    fn a_stream_declared_twice_is_read_once() {
        let cmd = TouchAll {
            streams: [sid("a"), sid("b"), sid("a")],
        };
        let set = ReadSet::of(&cmd);
        assert_eq!(set.ids(), &[sid("a"), sid("b")]);
        let events = set.decide(&cmd, &()).unwrap();
        assert_eq!(
            events.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 0, 1]
        );
    }

    struct TouchEach(Vec<StreamId>);
    impl Command for TouchEach {
        type Event = Touched;
        type State = ();
        type Streams = Vec<StreamId>;
        fn streams(&self) -> Vec<StreamId> {
            self.0.clone()
        }
        fn handle<'x>(
            &self,
            _: &(),
            refs: Vec<StreamRef<'x>>,
            out: &mut Emit<'x, Touched>,
        ) -> Result<(), CommandError> {
            for (k, r) in refs.into_iter().enumerate() {
                out.append(r, Touched(k as u8));
            }
            Ok(())
        }
    }

    #[test]
    fn repeated_streams_keep_first_occurrence_order_and_their_tokens() {
        let cmd = TouchEach(["a", "a", "b", "c", "b", "a"].map(sid).to_vec());
        let set = ReadSet::of(&cmd);
        assert_eq!(set.ids(), &[sid("a"), sid("b"), sid("c")]);
        let events = set.decide(&cmd, &()).unwrap();
        let named: Vec<_> = events
            .iter()
            .map(|(i, e)| (set.ids()[*i].as_str(), e.0))
            .collect();
        assert_eq!(
            named,
            vec![("a", 0), ("a", 1), ("b", 2), ("c", 3), ("b", 4), ("a", 5)]
        );
    }

    struct Greedy;
    impl StreamSet for Greedy {
        type Tokens<'x> = [StreamRef<'x>; 2];
        fn stream_ids(&self, out: &mut Vec<StreamId>) {
            out.push(sid("only"));
        }
        fn tokens<'x>(source: &mut TokenSource<'x>) -> [StreamRef<'x>; 2] {
            [source.next_token(), source.next_token()]
        }
    }
    struct UsesGreedy;
    impl Command for UsesGreedy {
        type Event = Touched;
        type State = ();
        type Streams = Greedy;
        fn streams(&self) -> Greedy {
            Greedy
        }
        fn handle<'x>(
            &self,
            _: &(),
            [_, phantom]: [StreamRef<'x>; 2],
            out: &mut Emit<'x, Touched>,
        ) -> Result<(), CommandError> {
            out.append(phantom, Touched(0));
            Ok(())
        }
    }

    #[test]
    fn a_token_beyond_the_declared_streams_is_refused() {
        let set = ReadSet::of(&UsesGreedy);
        assert!(matches!(
            set.decide(&UsesGreedy, &()),
            Err(CommandError::InvalidState(_))
        ));
    }

    #[test]
    fn discovered_streams_get_tokens_through_emit() {
        let mut set = ReadSet::of(&TouchAll {
            streams: [sid("a"), sid("b"), sid("c")],
        });
        assert_eq!(set.discover([sid("b"), sid("d")]), vec![sid("d")]);
        let out: Emit<'_, Touched> = Emit {
            read_set: set.ids(),
            events: Vec::new(),
            invalid_token: false,
        };
        let d = out.stream(&sid("d")).unwrap();
        assert_eq!(out.stream_id(d), Some(&sid("d")));
        assert!(out.stream(&sid("zzz")).is_none());
    }

    #[test]
    fn default_name_is_the_short_type_name() {
        assert_eq!(UsesGreedy.name(), "UsesGreedy");
    }
}
