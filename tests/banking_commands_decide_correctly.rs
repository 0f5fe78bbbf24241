//! The banking example's commands, tested without a store: given a history, when a command
//! runs, then these events (or this refusal).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Amounts are written as dollars_cents: 100_00 is 100.00.
#![allow(clippy::inconsistent_digit_grouping)]

#[path = "../examples/banking/bank.rs"]
#[allow(dead_code)]
mod bank;

use bank::{AccountId, BankEvent, Deposit, Money, OpenAccount, Transfer, TransferId};
use crossfold::core::StreamId;
use crossfold_testkit::CommandTest;

fn account(name: &str) -> AccountId {
    AccountId::new(name).unwrap()
}

fn opened(name: &str, cents: i64) -> Vec<(StreamId, BankEvent)> {
    let a = account(name);
    vec![
        (
            a.stream().clone(),
            BankEvent::AccountOpened {
                account: a.clone(),
                owner: name.into(),
            },
        ),
        (
            a.stream().clone(),
            BankEvent::MoneyDeposited {
                account: a.clone(),
                amount: Money::from_cents(cents).unwrap(),
            },
        ),
    ]
}

fn history(parts: &[Vec<(StreamId, BankEvent)>]) -> Vec<(StreamId, BankEvent)> {
    parts.concat()
}

#[test]
fn a_transfer_writes_three_streams() {
    let (alice, bob) = (account("alice"), account("bob"));
    let id = TransferId::new();
    let amount = Money::positive(25_00).unwrap();
    let transfer = Transfer::new(id, alice.clone(), bob.clone(), amount).unwrap();
    let transfer_stream = StreamId::compose("transfer", id).unwrap();
    CommandTest::given(history(&[opened("alice", 100_00), opened("bob", 0)]))
        .when(transfer)
        .then_expect([
            (
                alice.stream().clone(),
                BankEvent::MoneyWithdrawn {
                    account: alice.clone(),
                    amount,
                },
            ),
            (
                bob.stream().clone(),
                BankEvent::MoneyDeposited {
                    account: bob.clone(),
                    amount,
                },
            ),
            (
                transfer_stream,
                BankEvent::TransferCompleted {
                    transfer: id,
                    from: alice,
                    to: bob,
                    amount,
                },
            ),
        ]);
}

#[test]
fn a_transfer_beyond_the_balance_is_refused() {
    let transfer = Transfer::new(
        TransferId::new(),
        account("alice"),
        account("bob"),
        Money::positive(100_01).unwrap(),
    )
    .unwrap();
    CommandTest::given(history(&[opened("alice", 100_00), opened("bob", 0)]))
        .when(transfer)
        .then_rejected("insufficient_funds");
}

#[test]
fn a_transfer_to_an_unknown_account_is_refused() {
    let transfer = Transfer::new(
        TransferId::new(),
        account("alice"),
        account("nobody"),
        Money::positive(1).unwrap(),
    )
    .unwrap();
    CommandTest::given(opened("alice", 100_00))
        .when(transfer)
        .then_rejected("unknown_account");
}

#[test]
fn a_completed_transfer_runs_again_as_a_no_op() {
    let (alice, bob) = (account("alice"), account("bob"));
    let id = TransferId::new();
    let amount = Money::positive(5_00).unwrap();
    let mut given = history(&[opened("alice", 100_00), opened("bob", 0)]);
    given.push((
        StreamId::compose("transfer", id).unwrap(),
        BankEvent::TransferCompleted {
            transfer: id,
            from: alice.clone(),
            to: bob.clone(),
            amount,
        },
    ));
    CommandTest::given(given)
        .when(Transfer::new(id, alice, bob, amount).unwrap())
        .then_expect_nothing();
}

#[test]
fn an_account_opens_once() {
    let open = || OpenAccount {
        account: account("alice"),
        owner: "Alice".into(),
        initial_deposit: Money::ZERO,
    };
    CommandTest::given_nothing().when(open()).then_expect([(
        account("alice").stream().clone(),
        BankEvent::AccountOpened {
            account: account("alice"),
            owner: "Alice".into(),
        },
    )]);
    CommandTest::given(opened("alice", 0))
        .when(open())
        .then_rejected("account_exists");
}

#[test]
fn deposits_need_an_open_account() {
    CommandTest::given_nothing()
        .when(Deposit {
            account: account("ghost"),
            amount: Money::positive(1).unwrap(),
        })
        .then_rejected("unknown_account");
}
