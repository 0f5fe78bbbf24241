//! Run with: `cargo run --example banking`
//! On PostgreSQL: `cargo run --example banking --features postgres -- --postgres [URL]`
//! (URL defaults to `DATABASE_URL`, then `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! Opens accounts, deposits, withdraws and transfers money on the in-memory store, showing
//! what each command wrote and what each refusal looks like: a transfer is one command that
//! reads and writes three streams (both accounts and the transfer itself) atomically, and is
//! idempotent on its transfer id. Ends with a type-state example: only a confirmed order can
//! be shipped.

// Amounts are written as dollars_cents: 100_00 is 100.00.
#![allow(clippy::inconsistent_digit_grouping)]

mod bank;
mod order;

use bank::{AccountId, Deposit, Money, OpenAccount, Transfer, TransferId, Withdraw};
use crossfold::core::RecordedEvent;
use crossfold::executor::{Actor, Executed};
use crossfold::prelude::*;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn show(what: &str, result: &Result<Executed, Error>) {
    match result {
        Ok(done) if done.events.is_empty() => println!("  {what}: nothing to do"),
        Ok(done) => {
            println!(
                "  {what}: wrote {} event(s) in {} attempt(s)",
                done.events.len(),
                done.attempts
            );
            for e in &done.events {
                println!("      {}", describe(e));
            }
        }
        Err(error) => println!("  {what}: refused — {error}"),
    }
}

fn describe(e: &RecordedEvent) -> String {
    format!(
        "{:<20} @ {}#{}  {}",
        e.event_type,
        e.stream_id,
        e.stream_version,
        String::from_utf8_lossy(&e.payload.bytes)
    )
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {
            println!("Crossfold banking example (in-memory store)\n");
            run(MemoryStore::new()).await
        }
        Some("--postgres") => postgres(args.next()).await,
        Some(other) => Err(format!("unknown argument {other:?}; try --postgres [URL]").into()),
    }
}

/// The same commands on PostgreSQL, in a schema of their own that is reset first (so the
/// example can run again) and kept afterwards for you to look at.
#[cfg(feature = "postgres")]
async fn postgres(url: Option<String>) -> Result<(), Failure> {
    use crossfold::postgres::{PgConfig, PgEventStore};
    const SCHEMA: &str = "crossfold_banking_example";
    let url = url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let store = PgEventStore::connect(PgConfig::from_url(&url)?.schema(SCHEMA)).await?;
    store
        .pool()
        .get()
        .await?
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .await?;
    store.migrate().await?;
    println!("Crossfold banking example (PostgreSQL, schema {SCHEMA})\n");
    run(store).await?;
    println!("\nThe events are in schema {SCHEMA}; it is reset the next time the example runs.");
    Ok(())
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_url: Option<String>) -> Result<(), Failure> {
    Err("this build has no PostgreSQL support: run with `--features postgres`".into())
}

async fn run<S: EventStore + 'static>(store: S) -> Result<(), Failure> {
    let executor = Executor::new(store);
    let teller =
        ExecutionContext::new().actor(Actor::new("teller-7").with_permission("accounts:open"));

    let alice = AccountId::new("alice")?;
    let bob = AccountId::new("bob")?;
    let nobody = AccountId::new("nobody")?;

    println!("Opening accounts (requires the accounts:open permission):");
    for (account, owner, cents) in [(&alice, "Alice", 100_00), (&bob, "Bob", 20_00)] {
        let open = OpenAccount {
            account: account.clone(),
            owner: owner.into(),
            initial_deposit: Money::from_cents(cents)?,
        };
        show(
            &format!("open {account}"),
            &executor.execute_with(open, &teller).await,
        );
    }
    let anonymous = OpenAccount {
        account: AccountId::new("mallory")?,
        owner: "Mallory".into(),
        initial_deposit: Money::ZERO,
    };
    show(
        "open mallory without permission",
        &executor.execute(anonymous).await,
    );

    println!("\nDeposits and withdrawals (one stream each):");
    show(
        "deposit 50.00 to bob",
        &executor
            .execute(Deposit {
                account: bob.clone(),
                amount: Money::positive(50_00)?,
            })
            .await,
    );
    show(
        "withdraw 30.00 from alice",
        &executor
            .execute(Withdraw {
                account: alice.clone(),
                amount: Money::positive(30_00)?,
            })
            .await,
    );
    show(
        "withdraw 500.00 from alice",
        &executor
            .execute(Withdraw {
                account: alice.clone(),
                amount: Money::positive(500_00)?,
            })
            .await,
    );

    println!("\nTransfers (three streams, one atomic append):");
    let id = TransferId::new();
    let transfer = || {
        Transfer::new(
            id,
            alice.clone(),
            bob.clone(),
            Money::positive(25_00).unwrap_or_default(),
        )
    };
    show(
        "transfer 25.00 alice -> bob",
        &executor.execute(transfer()?).await,
    );
    show(
        "the same transfer again",
        &executor.execute(transfer()?).await,
    );
    show(
        "transfer 1000.00 alice -> bob",
        &executor
            .execute(Transfer::new(
                TransferId::new(),
                alice.clone(),
                bob.clone(),
                Money::positive(1000_00)?,
            )?)
            .await,
    );
    show(
        "transfer 1.00 alice -> nobody",
        &executor
            .execute(Transfer::new(
                TransferId::new(),
                alice.clone(),
                nobody.clone(),
                Money::positive(1_00)?,
            )?)
            .await,
    );
    match Transfer::new(
        TransferId::new(),
        alice.clone(),
        alice.clone(),
        Money::positive(1_00)?,
    ) {
        Ok(_) => println!("  transfer alice -> alice: accepted?!"),
        Err(e) => println!("  transfer alice -> alice: invalid before it is a command — {e}"),
    }

    println!("\nBalances, folded from each account's stream:");
    let mut total = Money::ZERO;
    for account in [&alice, &bob] {
        let view = bank::balance(executor.store(), account).await?;
        println!("  {account:<6} {:>8}", view.balance);
        total = total.checked_add(view.balance).unwrap_or(total);
    }
    println!("  total  {total:>8}  (120.00 opened + 50.00 deposited - 30.00 withdrawn)");

    println!("\nType-state: only a confirmed order can ship.");
    let draft = order::Order::draft("order-1").add_line("sku-42", 2);
    // draft.ship("DHL");  // does not compile: no method `ship` on `Order<Draft>`
    let shipped = draft.confirm()?.ship("DHL");
    println!(
        "  {} with {} line(s) shipped by {}",
        shipped.id,
        shipped.lines.len(),
        shipped.carrier.unwrap_or_default()
    );
    Ok(())
}
