//! Any interleaving of concurrent transfers conserves the total money, never drives a balance
//! negative, and leaves every stream's versions gap-free.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../examples/banking/bank.rs"]
#[allow(dead_code)]
mod bank;

use std::collections::HashSet;

use bank::{AccountId, Money, OpenAccount, Transfer, TransferId};
use crossfold::core::{EventId, LogFilter, Position};
use crossfold::executor::{Actor, RetryPolicy};
use crossfold::prelude::*;
use crossfold_testkit::concurrent::{command_sequences, execute_concurrently};
use proptest::prelude::*;

const ACCOUNTS: usize = 4;
const OPENING_BALANCE: i64 = 100;

/// One task's transfers: (from, to, amount) with from != to.
fn plans() -> impl Strategy<Value = Vec<Vec<(usize, usize, i64)>>> {
    let transfer = (0..ACCOUNTS, 1..ACCOUNTS, 1..80i64)
        .prop_map(|(from, offset, amount)| (from, (from + offset) % ACCOUNTS, amount));
    command_sequences(transfer, 2..8, 1..25)
}

fn account(i: usize) -> AccountId {
    AccountId::new(format!("acct-{i}")).unwrap()
}

async fn run(plans: Vec<Vec<(usize, usize, i64)>>, executors: usize) {
    let store = MemoryStore::new();
    // Several executors share the store like several processes would: they contend through the
    // store's version checks, not only through one process's locks.
    let executors: Vec<_> = (0..executors)
        .map(|_| {
            Executor::builder(store.clone())
                .retry(RetryPolicy::default().max_attempts(1_000))
                .build()
        })
        .collect();
    let opener = ExecutionContext::new().actor(Actor::new("test").with_permission("accounts:open"));
    for i in 0..ACCOUNTS {
        let open = OpenAccount {
            account: account(i),
            owner: format!("owner {i}"),
            initial_deposit: Money::from_cents(OPENING_BALANCE).unwrap(),
        };
        executors[0].execute_with(open, &opener).await.unwrap();
    }

    let sequences: Vec<Vec<Transfer>> = plans
        .into_iter()
        .map(|plan| {
            plan.into_iter()
                .map(|(from, to, amount)| {
                    Transfer::new(
                        TransferId::new(),
                        account(from),
                        account(to),
                        Money::positive(amount).unwrap(),
                    )
                    .unwrap()
                })
                .collect()
        })
        .collect();
    for outcome in execute_concurrently(&executors, sequences)
        .await
        .into_iter()
        .flatten()
    {
        match outcome {
            Ok(_) => {}
            Err(e) if e.rule() == Some("insufficient_funds") => {}
            Err(e) => panic!("transfer failed: {e}"),
        }
    }

    let mut total = 0u64;
    for i in 0..ACCOUNTS {
        let view = bank::balance(&store, &account(i)).await.unwrap();
        total += view.balance.cents();
        let stream = store
            .read_stream(account(i).stream(), StreamVersion::EMPTY, usize::MAX)
            .await
            .unwrap();
        for (k, event) in stream.events.iter().enumerate() {
            assert_eq!(
                event.stream_version.get(),
                k as u64 + 1,
                "gap in {}",
                account(i)
            );
        }
        assert_eq!(stream.version.get(), stream.events.len() as u64);
    }
    assert_eq!(
        total,
        (ACCOUNTS as u64) * OPENING_BALANCE as u64,
        "money was created or lost"
    );

    // Balances never went negative at any point: replay the global log in order.
    let log = store
        .read_all(Position::START, usize::MAX, &LogFilter::all())
        .await
        .unwrap();
    let mut ids: HashSet<EventId> = HashSet::new();
    let mut balances = [0i64; ACCOUNTS];
    for event in &log {
        assert!(
            ids.insert(event.event_id),
            "event {} twice in the log",
            event.event_id
        );
        let decoded: Recorded<bank::BankEvent> = crossfold::core::Upcasters::new()
            .decode(&crossfold::core::Json, event)
            .unwrap();
        let index = |a: &AccountId| (0..ACCOUNTS).find(|i| account(*i) == *a).unwrap();
        match &decoded.event {
            bank::BankEvent::MoneyDeposited { account, amount } => {
                balances[index(account)] += amount.cents() as i64
            }
            bank::BankEvent::MoneyWithdrawn { account, amount } => {
                let i = index(account);
                balances[i] -= amount.cents() as i64;
                assert!(
                    balances[i] >= 0,
                    "{account} went negative at {}",
                    event.position
                );
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_transfers_conserve_money(plans in plans(), executors in 1usize..4) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(plans, executors));
    }
}
