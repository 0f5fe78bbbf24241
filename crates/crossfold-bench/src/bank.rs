//! The bank domain the workloads run: accounts, deposits, withdrawals, transfers between two
//! accounts and splits from one account to four.

use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, Fold, Recorded, SnapshotState, StreamId, StreamRef,
    ValidationError,
};
use serde::{Deserialize, Serialize};

/// Events of the benchmark bank. Amounts are in cents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum BankEvent {
    /// An account was opened with a balance.
    Opened {
        /// Opening balance.
        initial: i64,
    },
    /// Money came in.
    Deposited {
        /// Amount.
        amount: i64,
    },
    /// Money went out.
    Withdrawn {
        /// Amount.
        amount: i64,
    },
    /// A transfer completed (recorded on the transfer's own stream).
    TransferCompleted {
        /// Amount.
        amount: i64,
    },
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> &'static str {
        match self {
            BankEvent::Opened { .. } => "Opened",
            BankEvent::Deposited { .. } => "Deposited",
            BankEvent::Withdrawn { .. } => "Withdrawn",
            BankEvent::TransferCompleted { .. } => "TransferCompleted",
        }
    }
}

impl BankEvent {
    /// How the event changes its stream's balance.
    pub fn balance_change(&self) -> i64 {
        match self {
            BankEvent::Opened { initial } => *initial,
            BankEvent::Deposited { amount } => *amount,
            BankEvent::Withdrawn { amount } => -*amount,
            BankEvent::TransferCompleted { .. } => 0,
        }
    }
}

/// The name of account `n`'s stream.
pub fn account_stream(n: usize) -> Result<StreamId, ValidationError> {
    StreamId::new(format!("account-{n}"))
}

/// Open accounts and balances of the streams a command read, plus whether the transfer it read
/// (if any) completed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Balances {
    accounts: Vec<(StreamId, i64)>,
    completed: bool,
}

impl Balances {
    fn balance(&self, stream: &StreamId) -> Option<i64> {
        self.accounts
            .iter()
            .find(|(s, _)| s == stream)
            .map(|(_, b)| *b)
    }

    fn open(&self, stream: &StreamId) -> Result<i64, CommandError> {
        self.balance(stream)
            .ok_or_else(|| CommandError::StreamNotFound(stream.clone()))
    }
}

/// Every bank command decides on [`Balances`] and shares this fold; each event changes only its
/// own stream's balance (or the transfer's flag), so parts are cached per stream.
impl Fold<BankEvent> for Balances {
    const PER_STREAM: bool = true;

    fn apply(&mut self, event: &Recorded<BankEvent>) {
        match event.event {
            BankEvent::TransferCompleted { .. } => self.completed = true,
            ref e => {
                let change = e.balance_change();
                match self
                    .accounts
                    .iter_mut()
                    .find(|(s, _)| *s == event.stream_id)
                {
                    Some((_, balance)) => *balance += change,
                    None => self.accounts.push((event.stream_id.clone(), change)),
                }
            }
        }
    }

    /// Parts folded from single streams combine by union: each event touches only its stream.
    fn merge(&mut self, part: &Balances) {
        self.completed |= part.completed;
        for (stream, balance) in &part.accounts {
            match self.accounts.iter_mut().find(|(s, _)| s == stream) {
                Some((_, b)) => *b += balance,
                None => self.accounts.push((stream.clone(), *balance)),
            }
        }
    }
}

/// W8's cold start keeps snapshots of the bank's state (one per account, the state being
/// per stream).
impl SnapshotState for Balances {
    const NAME: &'static str = "bench.balances";
    const VERSION: u32 = 1;
}

/// Opens an account.
pub struct Open {
    /// The account's stream.
    pub account: StreamId,
    /// Opening balance.
    pub initial: i64,
}

impl Command for Open {
    type Event = BankEvent;
    type State = Balances;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.clone()
    }

    fn handle<'x>(
        &self,
        state: &Balances,
        account: StreamRef<'x>,
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        if state.balance(&self.account).is_some() {
            return Err(CommandError::rejected("account_exists", "already open"));
        }
        out.append(
            account,
            BankEvent::Opened {
                initial: self.initial,
            },
        );
        Ok(())
    }

    fn expects_new(&self, _stream: &StreamId) -> bool {
        true
    }
}

/// W1: a single-stream command.
pub struct Deposit {
    /// The account's stream.
    pub account: StreamId,
    /// Amount.
    pub amount: i64,
}

impl Command for Deposit {
    type Event = BankEvent;
    type State = Balances;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.clone()
    }

    fn handle<'x>(
        &self,
        state: &Balances,
        account: StreamRef<'x>,
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        state.open(&self.account)?;
        out.append(
            account,
            BankEvent::Deposited {
                amount: self.amount,
            },
        );
        Ok(())
    }
}

/// Takes money out of an account, refusing to overdraw it.
pub struct Withdraw {
    /// The account's stream.
    pub account: StreamId,
    /// Amount.
    pub amount: i64,
}

impl Command for Withdraw {
    type Event = BankEvent;
    type State = Balances;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.clone()
    }

    fn handle<'x>(
        &self,
        state: &Balances,
        account: StreamRef<'x>,
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        let balance = state.open(&self.account)?;
        if balance < self.amount {
            return Err(CommandError::rejected(
                "insufficient_funds",
                format!("{balance} < {}", self.amount),
            ));
        }
        out.append(
            account,
            BankEvent::Withdrawn {
                amount: self.amount,
            },
        );
        Ok(())
    }
}

/// W2/W4: a three-stream command — both accounts and the transfer's own (new) stream.
pub struct Transfer {
    /// Source account.
    pub from: StreamId,
    /// Destination account.
    pub to: StreamId,
    /// The transfer's stream (`transfer-<uuid>`).
    pub transfer: StreamId,
    /// Amount.
    pub amount: i64,
}

impl Command for Transfer {
    type Event = BankEvent;
    type State = Balances;
    type Streams = [StreamId; 3];

    fn streams(&self) -> [StreamId; 3] {
        [self.from.clone(), self.to.clone(), self.transfer.clone()]
    }

    fn handle<'x>(
        &self,
        state: &Balances,
        [from, to, transfer]: [StreamRef<'x>; 3],
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        if state.completed {
            return Ok(());
        }
        let balance = state.open(&self.from)?;
        state.open(&self.to)?;
        if balance < self.amount {
            return Err(CommandError::rejected(
                "insufficient_funds",
                format!("{balance} < {}", self.amount),
            ));
        }
        let amount = self.amount;
        out.append(from, BankEvent::Withdrawn { amount });
        out.append(to, BankEvent::Deposited { amount });
        out.append(transfer, BankEvent::TransferCompleted { amount });
        Ok(())
    }

    fn expects_new(&self, stream: &StreamId) -> bool {
        *stream == self.transfer
    }
}

/// W3: a five-stream command — debit one account, credit four others.
pub struct Split {
    /// Source account.
    pub from: StreamId,
    /// Destination accounts.
    pub to: [StreamId; 4],
    /// Amount for each destination.
    pub amount: i64,
}

impl Command for Split {
    type Event = BankEvent;
    type State = Balances;
    type Streams = [StreamId; 5];

    fn streams(&self) -> [StreamId; 5] {
        [
            self.from.clone(),
            self.to[0].clone(),
            self.to[1].clone(),
            self.to[2].clone(),
            self.to[3].clone(),
        ]
    }

    fn handle<'x>(
        &self,
        state: &Balances,
        [from, a, b, c, d]: [StreamRef<'x>; 5],
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        let balance = state.open(&self.from)?;
        for to in &self.to {
            state.open(to)?;
        }
        let total = self.amount * 4;
        if balance < total {
            return Err(CommandError::rejected(
                "insufficient_funds",
                format!("{balance} < {total}"),
            ));
        }
        out.append(from, BankEvent::Withdrawn { amount: total });
        for to in [a, b, c, d] {
            out.append(
                to,
                BankEvent::Deposited {
                    amount: self.amount,
                },
            );
        }
        Ok(())
    }
}
