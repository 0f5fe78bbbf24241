//! Given/when/then for commands: run a command's fold, discovery and decision on a history of
//! events, without any store.

use std::collections::HashMap;
use std::fmt::{self, Debug, Write as _};
use std::sync::Arc;

use crossfold_core::{
    CodecError, Command, CommandError, DomainEvent, EventData, EventId, Fold, Json, Metadata,
    Position, ReadSet, Recorded, StreamId, StreamVersion, Upcasters,
};

/// How many times discovery may add streams before the command fails as one whose `discover`
/// never settles: the executor's default, so a command that passes here passes there.
const MAX_DISCOVERY_ROUNDS: usize = 8;

/// Something that names a stream: a [`StreamId`] or a reference to one.
pub trait ToStreamId {
    /// The stream id.
    fn to_stream_id(&self) -> StreamId;
}

impl ToStreamId for StreamId {
    fn to_stream_id(&self) -> StreamId {
        self.clone()
    }
}

impl ToStreamId for &StreamId {
    fn to_stream_id(&self) -> StreamId {
        (*self).clone()
    }
}

/// Entry point of a given/when/then test.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use crossfold_core::{Command, CommandError, DomainEvent, Emit, Fold, Recorded, StreamId, StreamRef};
/// use crossfold_testkit::CommandTest;
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { Incremented }
/// # impl DomainEvent for CounterEvent {
/// #     fn event_type(&self) -> &'static str { "Incremented" }
/// # }
/// # #[derive(Clone, Default)]
/// # struct Count(u32);
/// # impl Fold<CounterEvent> for Count {
/// #     fn apply(&mut self, _: &Recorded<CounterEvent>) { self.0 += 1; }
/// # }
/// # struct Increment { counter: StreamId, limit: u32 }
/// # impl Command for Increment {
/// #     type Event = CounterEvent;
/// #     type State = Count;
/// #     type Streams = StreamId;
/// #     fn streams(&self) -> StreamId { self.counter.clone() }
/// #     fn handle<'x>(&self, Count(count): &Count, counter: StreamRef<'x>, out: &mut Emit<'x, CounterEvent>)
/// #         -> Result<(), CommandError> {
/// #         if *count >= self.limit {
/// #             return Err(CommandError::rejected("limit_reached", format!("already {count}")));
/// #         }
/// #         out.append(counter, CounterEvent::Incremented);
/// #         Ok(())
/// #     }
/// # }
/// let counter = StreamId::new("counter-1")?;
///
/// CommandTest::given([(&counter, CounterEvent::Incremented)])
///     .when(Increment { counter: counter.clone(), limit: 2 })
///     .then_expect([(&counter, CounterEvent::Incremented)]);
///
/// CommandTest::given([(&counter, CounterEvent::Incremented), (&counter, CounterEvent::Incremented)])
///     .when(Increment { counter: counter.clone(), limit: 2 })
///     .then_rejected("limit_reached");
/// # Ok::<(), crossfold_core::ValidationError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandTest;

impl CommandTest {
    /// A history of events, in the order they happened, each with its stream.
    pub fn given<E, S>(events: impl IntoIterator<Item = (S, E)>) -> Given<E>
    where
        E: DomainEvent,
        S: ToStreamId,
    {
        Given::new().and_all(events)
    }

    /// An empty history.
    pub fn given_nothing<E: DomainEvent>() -> Given<E> {
        Given::new()
    }
}

/// A history of events that a command will be run on.
///
/// Each event is recorded as a store would record it: a fresh, increasing [`EventId`], the next
/// version of its stream, the next global position and metadata stamped now.
pub struct Given<E> {
    history: Vec<Recorded<E>>,
    versions: HashMap<StreamId, StreamVersion>,
}

impl<E: Debug> Debug for Given<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Given")
            .field("history", &self.history)
            .finish()
    }
}

impl<E: DomainEvent> Default for Given<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: DomainEvent> Given<E> {
    /// An empty history.
    pub fn new() -> Self {
        Self {
            history: Vec::new(),
            versions: HashMap::new(),
        }
    }

    /// Adds an event to `stream`.
    pub fn and(self, stream: impl ToStreamId, event: E) -> Self {
        self.and_with_metadata(stream, event, Arc::new(Metadata::now()))
    }

    /// Adds events, in order.
    pub fn and_all<S: ToStreamId>(mut self, events: impl IntoIterator<Item = (S, E)>) -> Self {
        let metadata = Arc::new(Metadata::now());
        for (stream, event) in events {
            self = self.and_with_metadata(stream, event, metadata.clone());
        }
        self
    }

    /// Adds an event with the given metadata (for commands that look at actors or times).
    pub fn and_with_metadata(
        mut self,
        stream: impl ToStreamId,
        event: E,
        metadata: Arc<Metadata>,
    ) -> Self {
        let (stream_id, stream_version, position) = self.next_place(stream);
        // Ids are generated in history order, so history order is the order a command merges
        // streams in.
        self.history.push(Recorded {
            event,
            event_id: EventId::generate(),
            stream_id,
            stream_version,
            position,
            metadata,
        });
        self
    }

    /// Adds an event as it is stored — an old shape, an old type name, a retired type — read
    /// through `upcasters` as the executor reads it: upcast into `E`, or skipped (it still
    /// takes its version in the stream) when its type is retired. Fails, naming the event,
    /// when it does not decode.
    ///
    /// ```
    /// use crossfold_core::{DomainEvent, EventData, Payload, Upcasters};
    /// use crossfold_testkit::Given;
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Deposited { cents: u64 }
    /// # impl DomainEvent for Deposited {
    /// #     fn event_type(&self) -> &'static str { "Deposited" }
    /// #     fn schema_version(&self) -> u16 { 2 }
    /// # }
    /// let mut upcasters = Upcasters::new();
    /// upcasters.register("Deposited", 1, |v| {
    ///     Ok(serde_json::json!({ "cents": v["units"].as_u64().ok_or("units")? * 100 }))
    /// });
    /// let old = EventData::new("Deposited", Payload::json(r#"{"units": 3}"#)); // version 1
    /// let account = crossfold_core::StreamId::new("account-1").unwrap();
    /// let given = Given::<Deposited>::new().and_stored(&account, old, &upcasters)?;
    /// assert_eq!(given.history()[0].event, Deposited { cents: 300 });
    /// # Ok::<(), crossfold_core::CodecError>(())
    /// ```
    pub fn and_stored(
        mut self,
        stream: impl ToStreamId,
        mut data: EventData,
        upcasters: &Upcasters,
    ) -> Result<Self, CodecError> {
        let (stream_id, stream_version, position) = self.next_place(stream);
        // Ids in history order, as `and` gives them.
        data.event_id = EventId::generate();
        let raw = data.record(stream_id, stream_version, position);
        if upcasters.is_skipped(&raw) {
            return Ok(self);
        }
        self.history.push(upcasters.decode(&Json, &raw)?);
        Ok(self)
    }

    /// Where the next event of `stream` goes: the stream, its next version, the next position.
    fn next_place(&mut self, stream: impl ToStreamId) -> (StreamId, StreamVersion, Position) {
        let stream_id = stream.to_stream_id();
        let version = self
            .versions
            .entry(stream_id.clone())
            .or_insert(StreamVersion::EMPTY);
        *version = version.next();
        let position = Position::new(self.history.len() as u64 + 1, 0);
        (stream_id, *version, position)
    }

    /// The recorded history.
    pub fn history(&self) -> &[Recorded<E>] {
        &self.history
    }

    /// Runs `command` on the history as the executor would: folds the events of the streams it
    /// reads (merged in event-id order), repeats discovery until it names no new stream
    /// (refolding from scratch each round, since new streams interleave with the old; at most
    /// 8 rounds, the executor's default), then decides.
    ///
    /// Streams the command [`expects_new`](Command::expects_new) are folded too: against a
    /// store the executor would skip reading them, conflict, and run again with their real
    /// contents, which is the outcome shown here.
    #[track_caller]
    pub fn when<C: Command<Event = E>>(self, command: C) -> Then<C> {
        let mut read_set = ReadSet::of(&command);
        let mut rounds = 0;
        let (state, discovery) = loop {
            let state = fold::<C>(&self.history, read_set.ids());
            let added = read_set.discover(command.discover(&state));
            if added.is_empty() {
                break (state, Ok(()));
            }
            rounds += 1;
            if rounds > MAX_DISCOVERY_ROUNDS {
                let message = format!(
                    "command {} kept discovering new streams after {MAX_DISCOVERY_ROUNDS} rounds (last: {added:?})",
                    command.name()
                );
                break (state, Err(CommandError::InvalidState(message)));
            }
        };
        let result = discovery
            .and_then(|()| read_set.decide(&command, &state))
            .map(|events| {
                events
                    .into_iter()
                    .filter_map(|(i, e)| read_set.ids().get(i).map(|s| (s.clone(), e)))
                    .collect()
            });
        if <C::State as Fold<C::Event>>::PER_STREAM {
            check_per_stream_claim(&command, &self.history, &read_set, &result);
        }
        Then {
            read_set: read_set.ids().to_vec(),
            command,
            state,
            result,
            history: self.history,
        }
    }
}

/// A state that declares `PER_STREAM` promises that merging states folded from each stream
/// alone equals folding the merged events. The executor relies on it; check it here, on every
/// command over the state, where a broken promise is cheap to find: both ways must decide the
/// same.
#[track_caller]
fn check_per_stream_claim<C: Command>(
    command: &C,
    history: &[Recorded<C::Event>],
    read_set: &ReadSet,
    merged_result: &Result<Vec<(StreamId, C::Event)>, CommandError>,
) {
    let mut state = C::State::default();
    for stream in read_set.ids() {
        state.merge(&fold::<C>(history, std::slice::from_ref(stream)));
    }
    let parts_result: Result<Vec<(StreamId, C::Event)>, CommandError> =
        read_set.decide(command, &state).map(|events| {
            events
                .into_iter()
                .filter_map(|(i, e)| read_set.ids().get(i).map(|s| (s.clone(), e)))
                .collect()
        });
    let show = |r: &Result<Vec<(StreamId, C::Event)>, CommandError>| match r {
        Ok(events) => serde_json::to_string(
            &events
                .iter()
                .map(|(s, e)| (s.as_str(), e))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|e| format!("<unserializable: {e}>")),
        Err(e) => format!("error: {e}"),
    };
    let (merged, parts) = (show(merged_result), show(&parts_result));
    assert!(
        merged == parts,
        "the state of {} ({}) declares PER_STREAM, but it is not a merge of per-stream parts:\n  \
         folding the merged events decides: {merged}\n  \
         merging per-stream folds decides:  {parts}\n\
         Fix its `Fold::merge`, or remove its `PER_STREAM` (the executor would decide on the second).",
        command.name(),
        std::any::type_name::<C::State>()
    );
}

fn fold<C: Command>(history: &[Recorded<C::Event>], streams: &[StreamId]) -> C::State {
    let mut state = C::State::default();
    for event in history.iter().filter(|e| streams.contains(&e.stream_id)) {
        state.apply(event);
    }
    state
}

/// The outcome of running a command in a test: assertions (which panic with a readable report
/// on failure, pointing at the calling line) and accessors.
pub struct Then<C: Command> {
    command: C,
    state: C::State,
    read_set: Vec<StreamId>,
    result: Result<Vec<(StreamId, C::Event)>, CommandError>,
    history: Vec<Recorded<C::Event>>,
}

impl<C: Command> Debug for Then<C>
where
    C::Event: Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Then")
            .field("command", &self.command.name())
            .field("read_set", &self.read_set)
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

impl<C: Command> Then<C> {
    /// The events decided, each with its stream, or the command's error.
    pub fn result(&self) -> &Result<Vec<(StreamId, C::Event)>, CommandError> {
        &self.result
    }

    /// The events decided, each with its stream; `None` if the command failed.
    pub fn events(&self) -> Option<&[(StreamId, C::Event)]> {
        self.result.as_deref().ok()
    }

    /// The command's error; `None` if it succeeded.
    pub fn error(&self) -> Option<&CommandError> {
        self.result.as_ref().err()
    }

    /// The state the command decided on.
    pub fn state(&self) -> &C::State {
        &self.state
    }

    /// Every stream the command read: declared first, then discovered.
    pub fn read_set(&self) -> &[StreamId] {
        &self.read_set
    }

    /// The command that ran.
    pub fn command(&self) -> &C {
        &self.command
    }

    /// The outcome, by value.
    pub fn into_result(self) -> Result<Vec<(StreamId, C::Event)>, CommandError> {
        self.result
    }
}

impl<C: Command> Then<C>
where
    C::Event: Debug,
{
    /// Asserts that the command succeeded and decided exactly these events, in this order.
    #[track_caller]
    pub fn then_expect<S: ToStreamId>(
        self,
        expected: impl IntoIterator<Item = (S, C::Event)>,
    ) -> Self
    where
        C::Event: PartialEq,
    {
        let expected: Vec<(StreamId, C::Event)> = expected
            .into_iter()
            .map(|(s, e)| (s.to_stream_id(), e))
            .collect();
        match &self.result {
            Ok(actual) if *actual == expected => {}
            Ok(actual) => self.fail(&format!(
                "decided other events than expected\nexpected:{}\nactual:{}",
                list(&expected),
                list(actual)
            )),
            Err(e) => self.fail(&format!(
                "failed, but events were expected\nexpected:{}\nerror: {e}",
                list(&expected)
            )),
        }
        self
    }

    /// Asserts that the command succeeded without deciding any event.
    #[track_caller]
    pub fn then_expect_nothing(self) -> Self {
        match &self.result {
            Ok(actual) if actual.is_empty() => {}
            Ok(actual) => self.fail(&format!(
                "decided events, but none were expected\nactual:{}",
                list(actual)
            )),
            Err(e) => self.fail(&format!("failed, but success was expected\nerror: {e}")),
        }
        self
    }

    /// Asserts that the command was rejected by the business rule named `rule`.
    #[track_caller]
    pub fn then_rejected(self, rule: &str) -> Self {
        match &self.result {
            Err(CommandError::Rejected { rule: actual, .. }) if actual == rule => {}
            Err(e) => self.fail(&format!(
                "was expected to be rejected by rule {rule:?}, but failed otherwise\nerror: {e:?}"
            )),
            Ok(actual) => self.fail(&format!(
                "was expected to be rejected by rule {rule:?}, but succeeded\nactual:{}",
                list(actual)
            )),
        }
        self
    }

    /// Asserts that the command failed with an error `check` accepts.
    #[track_caller]
    pub fn then_error(self, check: impl FnOnce(&CommandError) -> bool) -> Self {
        match &self.result {
            Err(e) if check(e) => {}
            Err(e) => self.fail(&format!("failed with an unexpected error\nerror: {e:?}")),
            Ok(actual) => self.fail(&format!(
                "was expected to fail, but succeeded\nactual:{}",
                list(actual)
            )),
        }
        self
    }

    /// Asserts that the command read exactly these streams (declared, then discovered).
    #[track_caller]
    pub fn then_reads<S: ToStreamId>(self, streams: impl IntoIterator<Item = S>) -> Self {
        let expected: Vec<StreamId> = streams.into_iter().map(|s| s.to_stream_id()).collect();
        if expected != self.read_set {
            self.fail(&format!(
                "read other streams than expected\nexpected: {expected:?}\nactual:   {:?}",
                self.read_set
            ));
        }
        self
    }

    /// Asserts that the state the command decided on satisfies `check`.
    #[track_caller]
    pub fn then_state(self, check: impl FnOnce(&C::State) -> bool) -> Self {
        if !check(&self.state) {
            self.fail("decided on a state that failed the check");
        }
        self
    }

    #[track_caller]
    #[allow(
        clippy::panic,
        reason = "a failed test assertion is reported by panicking"
    )]
    fn fail(&self, what: &str) -> ! {
        let mut report = format!("command {} {what}", self.command.name());
        let _ = write!(report, "\nread streams: {:?}", self.read_set);
        let folded: Vec<&Recorded<C::Event>> = self
            .history
            .iter()
            .filter(|e| self.read_set.contains(&e.stream_id))
            .collect();
        if folded.is_empty() {
            report.push_str("\ngiven (folded): nothing");
        } else {
            report.push_str("\ngiven (folded):");
            for e in folded {
                let _ = write!(
                    report,
                    "\n  {}@{}: {:?}",
                    e.stream_id, e.stream_version, e.event
                );
            }
        }
        panic!("{report}")
    }
}

fn list<E: Debug>(events: &[(StreamId, E)]) -> String {
    if events.is_empty() {
        return " nothing".to_owned();
    }
    let mut out = String::new();
    for (stream, event) in events {
        let _ = write!(out, "\n  {stream}: {event:?}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{Emit, StreamRef};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Ev {
        Opened,
        Deposited(u32),
        Withdrawn(u32),
        Linked(String),
    }
    impl DomainEvent for Ev {
        fn event_type(&self) -> &'static str {
            match self {
                Ev::Opened => "Opened",
                Ev::Deposited(_) => "Deposited",
                Ev::Withdrawn(_) => "Withdrawn",
                Ev::Linked(_) => "Linked",
            }
        }
    }

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    /// Balances per stream, and the order events were folded in.
    #[derive(Clone, Default, Debug)]
    struct Balances {
        per_stream: HashMap<StreamId, i64>,
        order: Vec<(StreamId, u64)>,
    }

    impl Fold<Ev> for Balances {
        fn apply(&mut self, e: &Recorded<Ev>) {
            self.order
                .push((e.stream_id.clone(), e.stream_version.get()));
            let b = self.per_stream.entry(e.stream_id.clone()).or_default();
            match e.event {
                Ev::Deposited(n) => *b += i64::from(n),
                Ev::Withdrawn(n) => *b -= i64::from(n),
                _ => {}
            }
        }
    }

    /// Balances, and the streams that links named.
    #[derive(Clone, Default, Debug)]
    struct Linked {
        balances: Balances,
        linked: Vec<StreamId>,
    }

    impl Fold<Ev> for Linked {
        fn apply(&mut self, e: &Recorded<Ev>) {
            if let Ev::Linked(name) = &e.event {
                self.linked.push(sid(name));
            }
            self.balances.apply(e);
        }
    }

    struct Transfer {
        from: StreamId,
        to: StreamId,
        amount: u32,
    }
    impl Command for Transfer {
        type Event = Ev;
        type State = Balances;
        type Streams = [StreamId; 2];
        fn streams(&self) -> [StreamId; 2] {
            [self.from.clone(), self.to.clone()]
        }
        fn handle<'x>(
            &self,
            state: &Balances,
            [from, to]: [StreamRef<'x>; 2],
            out: &mut Emit<'x, Ev>,
        ) -> Result<(), CommandError> {
            let balance = state.per_stream.get(&self.from).copied().unwrap_or(0);
            if balance < i64::from(self.amount) {
                return Err(CommandError::rejected(
                    "insufficient_funds",
                    format!("{balance} < {}", self.amount),
                ));
            }
            out.append(from, Ev::Withdrawn(self.amount));
            out.append(to, Ev::Deposited(self.amount));
            Ok(())
        }
    }

    #[test]
    fn decides_on_the_folded_history() {
        let (a, b) = (sid("a"), sid("b"));
        CommandTest::given([
            (&a, Ev::Opened),
            (&b, Ev::Opened),
            (&a, Ev::Deposited(10)),
            (&sid("unrelated"), Ev::Deposited(1000)),
        ])
        .when(Transfer {
            from: a.clone(),
            to: b.clone(),
            amount: 7,
        })
        .then_expect([(&a, Ev::Withdrawn(7)), (&b, Ev::Deposited(7))])
        .then_reads([&a, &b])
        .then_state(|s| {
            s.order == vec![(sid("a"), 1), (sid("b"), 1), (sid("a"), 2)]
                && !s.per_stream.contains_key(&sid("unrelated"))
        });
    }

    #[test]
    fn reports_rejections() {
        let (a, b) = (sid("a"), sid("b"));
        let then = CommandTest::given([(&a, Ev::Deposited(3))])
            .when(Transfer {
                from: a.clone(),
                to: b,
                amount: 7,
            })
            .then_rejected("insufficient_funds")
            .then_error(|e| e.to_string().contains("3 < 7"));
        assert!(then.events().is_none());
        assert!(then.error().is_some());
    }

    #[test]
    fn mismatch_report_shows_both_sides_with_streams() {
        let (a, b) = (sid("acct-a"), sid("acct-b"));
        let outcome = std::panic::catch_unwind(|| {
            CommandTest::given([(&a, Ev::Deposited(10))])
                .when(Transfer {
                    from: a.clone(),
                    to: b.clone(),
                    amount: 5,
                })
                .then_expect([(&a, Ev::Withdrawn(4))]);
        });
        let panic = outcome.unwrap_err();
        let text = panic.downcast_ref::<String>().unwrap();
        assert!(text.contains("expected:\n  acct-a: Withdrawn(4)"), "{text}");
        assert!(
            text.contains("actual:\n  acct-a: Withdrawn(5)\n  acct-b: Deposited(5)"),
            "{text}"
        );
        assert!(text.contains("acct-a@1: Deposited(10)"), "{text}");
    }

    #[test]
    fn wrong_rule_fails() {
        let a = sid("a");
        let outcome = std::panic::catch_unwind(|| {
            CommandTest::given_nothing()
                .when(Transfer {
                    from: a.clone(),
                    to: a.clone(),
                    amount: 1,
                })
                .then_rejected("other_rule");
        });
        assert!(outcome.is_err());
    }

    /// Reads a hub stream that links to other streams, and those streams in turn.
    struct FollowLinks {
        hub: StreamId,
    }
    impl Command for FollowLinks {
        type Event = Ev;
        type State = Linked;
        type Streams = StreamId;
        fn streams(&self) -> StreamId {
            self.hub.clone()
        }
        fn discover(&self, state: &Linked) -> Vec<StreamId> {
            state.linked.clone()
        }
        fn handle<'x>(
            &self,
            state: &Linked,
            _hub: StreamRef<'x>,
            out: &mut Emit<'x, Ev>,
        ) -> Result<(), CommandError> {
            for linked in &state.linked {
                let token = out
                    .stream(linked)
                    .ok_or_else(|| CommandError::InvalidState(format!("{linked} not read")))?;
                let balance = state.balances.per_stream.get(linked).copied().unwrap_or(0);
                out.append(token, Ev::Withdrawn(balance as u32));
            }
            Ok(())
        }
    }

    #[test]
    fn discovery_runs_until_nothing_new() {
        let (hub, x, y) = (sid("hub"), sid("x"), sid("y"));
        CommandTest::given([
            (&x, Ev::Deposited(5)),
            (&hub, Ev::Linked("x".into())),
            (&x, Ev::Linked("y".into())),
            (&y, Ev::Deposited(2)),
        ])
        .when(FollowLinks { hub: hub.clone() })
        .then_reads([&hub, &x, &y])
        .then_expect([(&x, Ev::Withdrawn(5)), (&y, Ev::Withdrawn(2))]);
    }

    struct Endless;
    impl Command for Endless {
        type Event = Ev;
        type State = ();
        type Streams = ();
        fn streams(&self) {}
        fn discover(&self, _: &()) -> Vec<StreamId> {
            vec![StreamId::new(format!("s-{}", EventId::generate())).unwrap()]
        }
        fn handle<'x>(&self, _: &(), _: (), _: &mut Emit<'x, Ev>) -> Result<(), CommandError> {
            Ok(())
        }
    }

    #[test]
    fn endless_discovery_is_an_error_not_a_hang() {
        CommandTest::given_nothing().when(Endless).then_error(
            |e| matches!(e, CommandError::InvalidState(m) if m.contains("kept discovering")),
        );
    }

    #[test]
    fn stored_events_are_read_through_the_upcasters() {
        use crossfold_core::Payload;
        let a = sid("a");
        let mut upcasters = Upcasters::new();
        upcasters
            .rename("Credited", "Deposited")
            .register_typed("Deposited", 1, |units: u32| Ev::Deposited(units * 10))
            .retire("Frozen");
        let given = Given::<Ev>::new()
            .and(&a, Ev::Opened)
            .and_stored(
                &a,
                EventData::new("Credited", Payload::json("2")),
                &upcasters,
            )
            .unwrap()
            .and_stored(
                &a,
                EventData::new("Frozen", Payload::json("{}")),
                &upcasters,
            )
            .unwrap()
            .and(&a, Ev::Withdrawn(5));
        let h = given.history();
        assert_eq!(h.len(), 3, "the retired event is skipped");
        assert_eq!(h[1].event, Ev::Deposited(20));
        assert_eq!(h[2].stream_version.get(), 4, "but it took its version");
        assert!(h.windows(2).all(|w| w[0].event_id < w[1].event_id));
        given
            .when(Tally::<true> {
                streams: [a.clone(), sid("b")],
            })
            .then_expect([(&a, Ev::Deposited(3))]);
        // An event that does not decode is an error naming it.
        let error = Given::<Ev>::new()
            .and_stored(
                &a,
                EventData::new("Deposited", Payload::json("{}")),
                &upcasters,
            )
            .unwrap_err();
        assert!(error.to_string().contains("Deposited"), "{error}");
    }

    #[test]
    fn given_records_versions_per_stream_and_increasing_ids() {
        let (a, b) = (sid("a"), sid("b"));
        let given = CommandTest::given([(&a, Ev::Opened), (&b, Ev::Opened), (&a, Ev::Opened)]);
        let h = given.history();
        assert_eq!(
            h.iter()
                .map(|e| (e.stream_id.as_str(), e.stream_version.get(), e.position))
                .collect::<Vec<_>>(),
            vec![
                ("a", 1, Position::new(1, 0)),
                ("b", 1, Position::new(2, 0)),
                ("a", 2, Position::new(3, 0))
            ]
        );
        assert!(h.windows(2).all(|w| w[0].event_id < w[1].event_id));
    }

    /// Counts events across streams; claims PER_STREAM with a correct or a broken merge.
    #[derive(Clone, Default, Debug)]
    struct Count<const CORRECT: bool>(u32);

    impl<const CORRECT: bool> Fold<Ev> for Count<CORRECT> {
        const PER_STREAM: bool = true;
        fn apply(&mut self, _: &Recorded<Ev>) {
            self.0 += 1;
        }
        fn merge(&mut self, part: &Self) {
            // The broken variant forgets to add: a state that is not a merge of its parts.
            self.0 = if CORRECT { self.0 + part.0 } else { part.0 };
        }
    }

    /// Writes the count of its streams' events.
    struct Tally<const CORRECT: bool> {
        streams: [StreamId; 2],
    }
    impl<const CORRECT: bool> Command for Tally<CORRECT> {
        type Event = Ev;
        type State = Count<CORRECT>;
        type Streams = [StreamId; 2];
        fn streams(&self) -> [StreamId; 2] {
            self.streams.clone()
        }
        fn handle<'x>(
            &self,
            count: &Count<CORRECT>,
            [a, _]: [StreamRef<'x>; 2],
            out: &mut Emit<'x, Ev>,
        ) -> Result<(), CommandError> {
            out.append(a, Ev::Deposited(count.0));
            Ok(())
        }
    }

    #[test]
    fn a_correct_per_stream_claim_passes() {
        let (a, b) = (sid("a"), sid("b"));
        CommandTest::given([(&a, Ev::Opened), (&b, Ev::Opened), (&b, Ev::Deposited(1))])
            .when(Tally::<true> {
                streams: [a.clone(), b],
            })
            .then_expect([(&a, Ev::Deposited(3))]);
    }

    #[test]
    #[should_panic(expected = "not a merge of per-stream parts")]
    fn a_broken_per_stream_claim_is_caught() {
        let (a, b) = (sid("a"), sid("b"));
        CommandTest::given([(&a, Ev::Opened), (&b, Ev::Opened), (&b, Ev::Deposited(1))])
            .when(Tally::<false> { streams: [a, b] });
    }
}
