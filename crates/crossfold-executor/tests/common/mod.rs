//! A small ledger domain shared by the executor's tests.
#![allow(dead_code)]

use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, EventStore, Fold, Json, Recorded, StreamId,
    StreamRef, StreamVersion, Upcasters,
};
use serde::{Deserialize, Serialize};

pub(crate) fn sid(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum Ledger {
    Credited { amount: i64 },
    Debited { amount: i64 },
    Counted { seen: u64 },
}

impl DomainEvent for Ledger {
    fn event_type(&self) -> &'static str {
        match self {
            Ledger::Credited { .. } => "Credited",
            Ledger::Debited { .. } => "Debited",
            Ledger::Counted { .. } => "Counted",
        }
    }
}

/// Balances by stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Balances {
    pub(crate) by_stream: Vec<(StreamId, i64)>,
    pub(crate) events: u64,
}

impl Balances {
    pub(crate) fn of(&self, stream: &StreamId) -> i64 {
        self.by_stream
            .iter()
            .find(|(s, _)| s == stream)
            .map_or(0, |(_, b)| *b)
    }
}

/// Every ledger command decides on [`Balances`] and shares this fold. The state is a union of
/// per-stream parts but does not say so, so these commands exercise the executor's
/// per-combination caches; [`PerStreamBalances`] is the same state declaring it.
impl Fold<Ledger> for Balances {
    fn apply(&mut self, event: &Recorded<Ledger>) {
        self.events += 1;
        let delta = match event.event {
            Ledger::Credited { amount } => amount,
            Ledger::Debited { amount } => -amount,
            Ledger::Counted { .. } => 0,
        };
        match self
            .by_stream
            .iter_mut()
            .find(|(s, _)| *s == event.stream_id)
        {
            Some((_, b)) => *b += delta,
            None => self.by_stream.push((event.stream_id.clone(), delta)),
        }
    }
}

/// [`Balances`], declared a union of per-stream parts (`PER_STREAM`).
#[derive(Clone, Debug, Default)]
pub(crate) struct PerStreamBalances(pub(crate) Balances);

impl Fold<Ledger> for PerStreamBalances {
    const PER_STREAM: bool = true;
    fn apply(&mut self, event: &Recorded<Ledger>) {
        self.0.apply(event);
    }
    /// Balances are per stream, so parts folded from single streams simply add up.
    fn merge(&mut self, part: &Self) {
        self.0.events += part.0.events;
        for (stream, balance) in &part.0.by_stream {
            match self.0.by_stream.iter_mut().find(|(s, _)| s == stream) {
                Some((_, b)) => *b += balance,
                None => self.0.by_stream.push((stream.clone(), *balance)),
            }
        }
    }
}

pub(crate) struct Credit {
    pub(crate) account: StreamId,
    pub(crate) amount: i64,
}

impl Command for Credit {
    type Event = Ledger;
    type State = Balances;
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.account.clone()
    }
    fn handle<'x>(
        &self,
        _: &Balances,
        account: StreamRef<'x>,
        out: &mut Emit<'x, Ledger>,
    ) -> Result<(), CommandError> {
        out.append(
            account,
            Ledger::Credited {
                amount: self.amount,
            },
        );
        Ok(())
    }
}

pub(crate) struct Debit {
    pub(crate) account: StreamId,
    pub(crate) amount: i64,
}

impl Command for Debit {
    type Event = Ledger;
    type State = Balances;
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.account.clone()
    }
    fn handle<'x>(
        &self,
        state: &Balances,
        account: StreamRef<'x>,
        out: &mut Emit<'x, Ledger>,
    ) -> Result<(), CommandError> {
        let balance = state.of(&self.account);
        if balance < self.amount {
            return Err(CommandError::rejected(
                "insufficient_funds",
                format!("balance {balance} < {}", self.amount),
            ));
        }
        out.append(
            account,
            Ledger::Debited {
                amount: self.amount,
            },
        );
        Ok(())
    }
}

/// Moves money between two streams; refuses to overdraw.
pub(crate) struct Move {
    pub(crate) from: StreamId,
    pub(crate) to: StreamId,
    pub(crate) amount: i64,
}

impl Command for Move {
    type Event = Ledger;
    type State = Balances;
    type Streams = [StreamId; 2];
    fn streams(&self) -> [StreamId; 2] {
        [self.from.clone(), self.to.clone()]
    }
    fn handle<'x>(
        &self,
        state: &Balances,
        [from, to]: [StreamRef<'x>; 2],
        out: &mut Emit<'x, Ledger>,
    ) -> Result<(), CommandError> {
        if state.of(&self.from) < self.amount {
            return Err(CommandError::rejected("insufficient_funds", "not enough"));
        }
        out.append(
            from,
            Ledger::Debited {
                amount: self.amount,
            },
        );
        out.append(
            to,
            Ledger::Credited {
                amount: self.amount,
            },
        );
        Ok(())
    }
}

/// Reads several streams and writes, to the first one only, how many events it saw in all.
pub(crate) struct Count {
    pub(crate) streams: Vec<StreamId>,
}

impl Command for Count {
    type Event = Ledger;
    type State = Balances;
    type Streams = Vec<StreamId>;
    fn streams(&self) -> Vec<StreamId> {
        self.streams.clone()
    }
    fn handle<'x>(
        &self,
        state: &Balances,
        streams: Vec<StreamRef<'x>>,
        out: &mut Emit<'x, Ledger>,
    ) -> Result<(), CommandError> {
        out.append(streams[0], Ledger::Counted { seen: state.events });
        Ok(())
    }
}

/// Folds a stream straight from the store.
pub(crate) async fn balance<S: EventStore>(store: &S, stream: &StreamId) -> i64 {
    let read = store
        .read_stream(stream, StreamVersion::EMPTY, usize::MAX)
        .await
        .unwrap();
    let mut state = Balances::default();
    for raw in &read.events {
        state.apply(&Upcasters::new().decode(&Json, raw).unwrap());
    }
    state.of(stream)
}

/// Runs a ledger command with per-stream state caching: on [`PerStreamBalances`].
pub(crate) struct PerStream<C>(pub(crate) C);

impl<C: Command<Event = Ledger, State = Balances>> Command for PerStream<C> {
    type Event = Ledger;
    type State = PerStreamBalances;
    type Streams = C::Streams;
    fn streams(&self) -> C::Streams {
        self.0.streams()
    }
    fn handle<'x>(
        &self,
        state: &PerStreamBalances,
        streams: <C::Streams as crossfold_core::StreamSet>::Tokens<'x>,
        out: &mut Emit<'x, Ledger>,
    ) -> Result<(), CommandError> {
        self.0.handle(&state.0, streams, out)
    }
    fn discover(&self, state: &PerStreamBalances) -> Vec<StreamId> {
        self.0.discover(&state.0)
    }
    fn expects_new(&self, stream: &StreamId) -> bool {
        self.0.expects_new(stream)
    }
    fn name(&self) -> &'static str {
        self.0.name()
    }
}
