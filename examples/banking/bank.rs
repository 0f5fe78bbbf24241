//! The bank domain: value types with smart constructors, events, and the commands that open
//! accounts and move money. Each command folds only the streams it declares.

use std::fmt;

use crossfold::core::{TypedId, ValidationError};
use crossfold::prelude::*;
use serde::{Deserialize, Serialize};

/// An amount of money in cents. Never negative: the type has no negative values, and
/// subtraction that would go below zero is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Money(u64);

impl Money {
    /// Zero.
    pub(crate) const ZERO: Money = Money(0);

    /// From a number of cents; negative amounts are refused.
    pub(crate) fn from_cents(cents: i64) -> Result<Self, ValidationError> {
        u64::try_from(cents)
            .map(Money)
            .map_err(|_| ValidationError::new("amount", format!("{cents} is negative")))
    }

    /// A positive amount (transfers and deposits of zero make no sense).
    pub(crate) fn positive(cents: i64) -> Result<Self, ValidationError> {
        match Self::from_cents(cents)? {
            Money(0) => Err(ValidationError::new("amount", "must be more than zero")),
            m => Ok(m),
        }
    }

    /// The amount in cents.
    #[allow(dead_code)] // used by the tests that include this module
    pub(crate) fn cents(self) -> u64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub(crate) fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// `self - other`, or `None` if that would be negative.
    pub(crate) fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}.{:02}", self.0 / 100, self.0 % 100))
    }
}

/// An account number: 1–32 lowercase letters, digits or dashes. Not interchangeable with any
/// other id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct AccountId {
    id: String,
    /// Built once, when the id is validated, so commands never fail to name their streams.
    stream: StreamId,
}

impl AccountId {
    /// Validates an account number.
    pub(crate) fn new(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 32
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            let stream = StreamId::compose("account", &id)?;
            Ok(AccountId { id, stream })
        } else {
            Err(ValidationError::new(
                "account_id",
                format!("{id:?} is not 1-32 lowercase letters, digits or dashes"),
            ))
        }
    }

    /// The account's stream.
    pub(crate) fn stream(&self) -> &StreamId {
        &self.stream
    }
}

impl TryFrom<String> for AccountId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AccountId::new(value)
    }
}

impl From<AccountId> for String {
    fn from(value: AccountId) -> Self {
        value.id
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.id)
    }
}

/// Marker for transfer ids.
pub(crate) enum TransferTag {}
/// A transfer's id: a UUID that cannot be confused with any other kind of id.
pub(crate) type TransferId = TypedId<TransferTag>;

/// Everything that happens in the bank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum BankEvent {
    /// An account was opened.
    AccountOpened { account: AccountId, owner: String },
    /// Money came in.
    MoneyDeposited { account: AccountId, amount: Money },
    /// Money went out.
    MoneyWithdrawn { account: AccountId, amount: Money },
    /// A transfer between two accounts completed (recorded on the transfer's own stream).
    TransferCompleted {
        transfer: TransferId,
        from: AccountId,
        to: AccountId,
        amount: Money,
    },
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> &'static str {
        match self {
            BankEvent::AccountOpened { .. } => "AccountOpened",
            BankEvent::MoneyDeposited { .. } => "MoneyDeposited",
            BankEvent::MoneyWithdrawn { .. } => "MoneyWithdrawn",
            BankEvent::TransferCompleted { .. } => "TransferCompleted",
        }
    }
}

/// What a command knows about one account.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AccountView {
    pub(crate) open: bool,
    pub(crate) balance: Money,
}

/// The state every bank command folds: the accounts it read, and whether the transfer it read
/// (if any) already happened.
#[derive(Clone, Debug, Default)]
pub(crate) struct Accounts {
    accounts: Vec<(AccountId, AccountView)>,
    pub(crate) transfer_completed: bool,
}

impl Accounts {
    /// The view of `account` (closed and empty if no event mentioned it).
    pub(crate) fn get(&self, account: &AccountId) -> AccountView {
        self.accounts
            .iter()
            .find(|(id, _)| id == account)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn entry(&mut self, account: &AccountId) -> &mut AccountView {
        match self.accounts.iter().position(|(id, _)| id == account) {
            Some(i) => &mut self.accounts[i].1,
            None => {
                self.accounts
                    .push((account.clone(), AccountView::default()));
                let last = self.accounts.len() - 1;
                &mut self.accounts[last].1
            }
        }
    }

    fn require_open(&self, account: &AccountId) -> Result<AccountView, CommandError> {
        let view = self.get(account);
        if view.open {
            Ok(view)
        } else {
            Err(CommandError::rejected(
                "unknown_account",
                format!("account {account} does not exist"),
            ))
        }
    }
}

/// Every bank command decides on [`Accounts`], so they all share this fold. Each event changes
/// only its own account (or the transfer's own flag), so the state is a union of per-stream
/// parts: the executor caches one part per stream, and a transfer between accounts that never
/// met starts from their cached parts instead of reading and refolding both histories.
impl Fold<BankEvent> for Accounts {
    const PER_STREAM: bool = true;

    fn apply(&mut self, event: &Recorded<BankEvent>) {
        match &event.event {
            BankEvent::AccountOpened { account, .. } => self.entry(account).open = true,
            BankEvent::MoneyDeposited { account, amount } => {
                let view = self.entry(account);
                view.balance = view.balance.checked_add(*amount).unwrap_or(view.balance);
            }
            BankEvent::MoneyWithdrawn { account, amount } => {
                let view = self.entry(account);
                view.balance = view.balance.checked_sub(*amount).unwrap_or(Money::ZERO);
            }
            BankEvent::TransferCompleted { .. } => self.transfer_completed = true,
        }
    }

    /// Parts simply add up: no two parts hold the same account's events.
    fn merge(&mut self, part: &Accounts) {
        self.transfer_completed |= part.transfer_completed;
        for (account, view) in &part.accounts {
            let entry = self.entry(account);
            entry.open |= view.open;
            entry.balance = entry
                .balance
                .checked_add(view.balance)
                .unwrap_or(entry.balance);
        }
    }
}

fn withdraw_from(
    view: &AccountView,
    account: &AccountId,
    amount: Money,
) -> Result<(), CommandError> {
    match view.balance.checked_sub(amount) {
        Some(_) => Ok(()),
        None => Err(CommandError::rejected(
            "insufficient_funds",
            format!("account {account} holds {}, needs {amount}", view.balance),
        )),
    }
}

/// Opens an account, optionally with a first deposit.
pub(crate) struct OpenAccount {
    pub(crate) account: AccountId,
    pub(crate) owner: String,
    pub(crate) initial_deposit: Money,
}

impl Command for OpenAccount {
    type Event = BankEvent;
    type State = Accounts;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.stream().clone()
    }

    fn handle<'x>(
        &self,
        state: &Accounts,
        account: StreamRef<'x>,
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        if state.get(&self.account).open {
            return Err(CommandError::rejected(
                "account_exists",
                format!("account {} is already open", self.account),
            ));
        }
        out.append(
            account,
            BankEvent::AccountOpened {
                account: self.account.clone(),
                owner: self.owner.clone(),
            },
        );
        if self.initial_deposit > Money::ZERO {
            out.append(
                account,
                BankEvent::MoneyDeposited {
                    account: self.account.clone(),
                    amount: self.initial_deposit,
                },
            );
        }
        Ok(())
    }

    fn required_permission(&self) -> Option<&str> {
        Some("accounts:open")
    }
}

/// Puts money into an open account.
pub(crate) struct Deposit {
    pub(crate) account: AccountId,
    pub(crate) amount: Money,
}

impl Command for Deposit {
    type Event = BankEvent;
    type State = Accounts;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.stream().clone()
    }

    fn handle<'x>(
        &self,
        state: &Accounts,
        account: StreamRef<'x>,
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        state.require_open(&self.account)?;
        out.append(
            account,
            BankEvent::MoneyDeposited {
                account: self.account.clone(),
                amount: self.amount,
            },
        );
        Ok(())
    }
}

/// Takes money out of an open account that holds enough.
pub(crate) struct Withdraw {
    pub(crate) account: AccountId,
    pub(crate) amount: Money,
}

impl Command for Withdraw {
    type Event = BankEvent;
    type State = Accounts;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.account.stream().clone()
    }

    fn handle<'x>(
        &self,
        state: &Accounts,
        account: StreamRef<'x>,
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        let view = state.require_open(&self.account)?;
        withdraw_from(&view, &self.account, self.amount)?;
        out.append(
            account,
            BankEvent::MoneyWithdrawn {
                account: self.account.clone(),
                amount: self.amount,
            },
        );
        Ok(())
    }
}

/// Moves money between two accounts. Reads and writes three streams atomically: both
/// accounts and the transfer's own stream, which makes it idempotent on the transfer id.
pub(crate) struct Transfer {
    id: TransferId,
    from: AccountId,
    to: AccountId,
    amount: Money,
    stream: StreamId,
}

impl Transfer {
    /// A transfer between two different accounts.
    pub(crate) fn new(
        id: TransferId,
        from: AccountId,
        to: AccountId,
        amount: Money,
    ) -> Result<Self, ValidationError> {
        if from == to {
            return Err(ValidationError::new(
                "to",
                "a transfer needs two different accounts",
            ));
        }
        Ok(Self {
            stream: StreamId::compose("transfer", id)?,
            id,
            from,
            to,
            amount,
        })
    }
}

impl Command for Transfer {
    type Event = BankEvent;
    type State = Accounts;
    type Streams = [StreamId; 3];

    fn streams(&self) -> [StreamId; 3] {
        [
            self.from.stream().clone(),
            self.to.stream().clone(),
            self.stream.clone(),
        ]
    }

    fn handle<'x>(
        &self,
        state: &Accounts,
        [from, to, transfer]: [StreamRef<'x>; 3],
        out: &mut Emit<'x, BankEvent>,
    ) -> Result<(), CommandError> {
        if state.transfer_completed {
            return Ok(()); // Already done: executing it again changes nothing.
        }
        let source = state.require_open(&self.from)?;
        state.require_open(&self.to)?;
        withdraw_from(&source, &self.from, self.amount)?;
        out.append(
            from,
            BankEvent::MoneyWithdrawn {
                account: self.from.clone(),
                amount: self.amount,
            },
        );
        out.append(
            to,
            BankEvent::MoneyDeposited {
                account: self.to.clone(),
                amount: self.amount,
            },
        );
        out.append(
            transfer,
            BankEvent::TransferCompleted {
                transfer: self.id,
                from: self.from.clone(),
                to: self.to.clone(),
                amount: self.amount,
            },
        );
        Ok(())
    }

    fn expects_new(&self, stream: &StreamId) -> bool {
        *stream == self.stream
    }
}

/// Reads an account's balance straight from its stream.
pub(crate) async fn balance<S: EventStore>(
    store: &S,
    account: &AccountId,
) -> Result<AccountView, Box<dyn std::error::Error + Send + Sync>> {
    let stream = store
        .read_stream(account.stream(), StreamVersion::EMPTY, usize::MAX)
        .await?;
    let mut state = Accounts::default();
    let upcasters = crossfold::core::Upcasters::new();
    for raw in &stream.events {
        let event: Recorded<BankEvent> = upcasters.decode(&crossfold::core::Json, raw)?;
        state.apply(&event);
    }
    Ok(state.get(account))
}
