//! Run with: `cargo run --example ecommerce --features projections`
//! On PostgreSQL: `cargo run --example ecommerce --features projections,postgres -- --postgres [URL]`
//! (URL defaults to `DATABASE_URL`, then `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! A small shop. Placing an order reserves stock on every product it names in one atomic
//! command (the product streams are discovered from the order's lines). A payment saga — a
//! process manager — pays orders when the payment provider reports a payment, refunds payments
//! that come too late, and schedules a durable deadline that cancels an order left unpaid for
//! 15 minutes, releasing its stock. The clock is driven by the example, so "15 minutes later"
//! takes no time. Read models (order summaries, stock, top sellers) are kept by projections:
//! in memory, or on PostgreSQL in tables written in the transaction that commits their
//! checkpoint.
//! It ends with a concurrent run and checks the shop's invariants on the log.

mod app;
mod saga;
mod shop;
mod views;
mod workload;

use std::time::Duration;

use crossfold::core::checkpoint::CheckpointStore;
use crossfold::core::deadline::DeadlineStore;
use crossfold::executor::Executed;
use crossfold::prelude::*;

use app::{App, Failure};
use shop::{
    AddProduct, CancelOrder, CancelReason, OrderId, PlaceOrder, ReceivePayment, Restock, Sku,
};
use views::{MemoryViews, ShopReadModels};

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {
            use crossfold::memory::{MemoryCheckpoints, MemoryDeadlineStore};
            println!("Crossfold e-commerce example (in-memory store)\n");
            let app = App::start(
                MemoryStore::new(),
                MemoryDeadlineStore::new(),
                MemoryCheckpoints::new(),
                MemoryViews::default(),
            );
            story(&app).await?;
            concurrent(&app).await?;
            app.shutdown().await;
            Ok(())
        }
        Some("--postgres") => postgres(args.next()).await,
        Some(other) => Err(format!("unknown argument {other:?}; try --postgres [URL]").into()),
    }
}

/// The same story on PostgreSQL, in a schema of its own that is reset first (so the example
/// can run again) and kept afterwards for you to look at. The read models are tables there
/// (`shop_stock`, `shop_orders`), written in the transaction that commits their checkpoint.
#[cfg(feature = "postgres")]
async fn postgres(url: Option<String>) -> Result<(), Failure> {
    use crossfold::postgres::{PgCheckpoints, PgConfig, PgDeadlineStore, PgEventStore};
    const SCHEMA: &str = "crossfold_ecommerce_example";
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
    println!("Crossfold e-commerce example (PostgreSQL, schema {SCHEMA})\n");
    let app = App::start(
        store.clone(),
        PgDeadlineStore::new(&store),
        PgCheckpoints::new(&store),
        views::PgViews::create(&store).await?,
    );
    story(&app).await?;
    concurrent(&app).await?;
    app.shutdown().await;
    println!(
        "\nThe events and the read models (tables shop_stock, shop_orders) are in schema \
         {SCHEMA}; it is reset the next time the example runs."
    );
    Ok(())
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_url: Option<String>) -> Result<(), Failure> {
    Err("this build has no PostgreSQL support: run with `--features projections,postgres`".into())
}

fn show(what: &str, result: &Result<Executed, Error>) {
    match result {
        Ok(done) if done.replayed => {
            println!("  {what}: already recorded — the first outcome, nothing written")
        }
        Ok(done) if done.events.is_empty() => println!("  {what}: nothing to do"),
        Ok(done) => {
            let written: Vec<String> = done
                .events
                .iter()
                .map(|e| format!("{} @ {}", e.event_type, e.stream_id))
                .collect();
            println!("  {what}: {}", written.join(", "));
        }
        Err(error) => println!("  {what}: refused — {error}"),
    }
}

async fn print_stock<S, D, K, R>(app: &App<S, D, K, R>, title: &str) -> Result<(), Failure>
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
    K: CheckpointStore,
    R: ShopReadModels<Unit = K::Unit>,
{
    println!("\n{title} (read model \"product stock\"):");
    println!(
        "  {:<8} {:>9} {:>8} {:>5}",
        "product", "available", "reserved", "sold"
    );
    for (sku, level) in &app.views.snapshot().await?.stock {
        println!(
            "  {:<8} {:>9} {:>8} {:>5}",
            sku.to_string(),
            level.available,
            level.reserved,
            level.sold
        );
    }
    Ok(())
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

async fn story<S, D, K, R>(app: &App<S, D, K, R>) -> Result<(), Failure>
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
    K: CheckpointStore,
    R: ShopReadModels<Unit = K::Unit>,
{
    let exec = &app.executor;
    let (mug, tea, pot) = (Sku::new("mug")?, Sku::new("tea")?, Sku::new("pot")?);
    println!("Listing products:");
    for (sku, name, price, stock) in [
        (&mug, "Enamel mug", 8_00, 5),
        (&tea, "Green tea", 4_50, 3),
        (&pot, "Tea pot", 25_00, 2),
    ] {
        let add = AddProduct {
            sku: sku.clone(),
            name: name.into(),
            price_cents: price,
            stock,
        };
        show(
            &format!("list {sku} at {} x{stock}", money(price)),
            &exec.execute(add).await,
        );
    }
    app.settle().await?;
    print_stock(app, "Stock before any order").await?;

    println!("\nPlacing orders (one atomic append reserves every product of an order):");
    let (ada, bob, cy, dee) = (
        OrderId::new("o-ada")?,
        OrderId::new("o-bob")?,
        OrderId::new("o-cy")?,
        OrderId::new("o-dee")?,
    );
    show(
        "ada: 2 mugs + 1 tea",
        &exec
            .execute(PlaceOrder::new(
                ada.clone(),
                [(mug.clone(), 2), (tea.clone(), 1)],
            )?)
            .await,
    );
    show(
        "bob: 1 pot + 1 tea",
        &exec
            .execute(PlaceOrder::new(
                bob.clone(),
                [(pot.clone(), 1), (tea.clone(), 1)],
            )?)
            .await,
    );
    show(
        "cy:  1 mug + 3 teas (only 1 tea left)",
        &exec
            .execute(PlaceOrder::new(
                cy.clone(),
                [(mug.clone(), 1), (tea.clone(), 3)],
            )?)
            .await,
    );
    show(
        "dee: 1 pot",
        &exec
            .execute(PlaceOrder::new(dee.clone(), [(pot.clone(), 1)])?)
            .await,
    );
    app.settle().await?;
    let pending = app.deadlines.deadline_counts(app.clock.now()).await?;
    println!(
        "  the payment saga scheduled {} payment deadline(s), due in 15 minutes",
        pending.pending
    );
    print_stock(app, "Stock with three orders reserved").await?;

    println!("\nThe payment provider reports a payment (the saga pays the order with it):");
    // Received under the provider's payment id as the idempotency key (`ReceivePayment::context`).
    let payment = || ReceivePayment {
        order: ada.clone(),
        amount_cents: 20_50,
        payment_ref: "pay-1001".into(),
    };
    show(
        "payment of 20.50 for o-ada",
        &exec.execute_with(payment(), &payment().context()).await,
    );
    show(
        "the same payment reported twice",
        &exec.execute_with(payment(), &payment().context()).await,
    );
    show(
        "dee cancels her order",
        &exec
            .execute(CancelOrder {
                order: dee.clone(),
                reason: CancelReason::Customer,
            })
            .await,
    );
    app.settle().await?;
    let views = app.views.snapshot().await?;
    for id in [&ada, &dee] {
        if let Some(o) = views.orders.get(id) {
            println!("  {id} is now {}", o.status);
        }
    }
    let counts = app.deadlines.deadline_counts(app.clock.now()).await?;
    println!(
        "  deadlines pending: {} (paid and cancelled orders cancelled theirs), overdue: {}",
        counts.pending, counts.overdue
    );

    println!("\nTime passes (the example moves the clock; bob never pays):");
    app.clock.advance(Duration::from_secs(10 * 60));
    let report = app.fire_due_deadlines().await?;
    println!("  at +10 min: {} deadline(s) fired", report.fired);
    app.clock.advance(Duration::from_secs(6 * 60));
    let overdue = app.deadlines.deadline_counts(app.clock.now()).await?;
    println!(
        "  at +16 min: {} overdue before the worker polls",
        overdue.overdue
    );
    let report = app.fire_due_deadlines().await?;
    println!(
        "  at +16 min: {} deadline(s) fired; {} pending, {} overdue",
        report.fired, report.counts.pending, report.counts.overdue
    );
    app.settle().await?;

    show(
        "the warehouse restocks 4 teas",
        &exec
            .execute(Restock {
                sku: tea.clone(),
                quantity: 4,
            })
            .await,
    );

    println!("\nbob pays too late (the saga cannot pay a cancelled order, so it refunds):");
    let late = ReceivePayment {
        order: bob.clone(),
        amount_cents: 29_50,
        payment_ref: "pay-1002".into(),
    };
    let context = late.context();
    show(
        "payment of 29.50 for o-bob",
        &exec.execute_with(late, &context).await,
    );
    app.settle().await?;

    let views = app.views.snapshot().await?;
    println!("\nOrders (read model \"order summary\"):");
    for (id, o) in &views.orders {
        println!(
            "  {:<6} {:<17} {} item(s), total {:>6}, paid {:>6}, refunded {:>6}",
            id.to_string(),
            o.status,
            o.items,
            money(o.total_cents),
            money(o.paid_cents),
            money(o.refunded_cents)
        );
    }
    print_stock(app, "Stock after payment, cancellation and expiry").await?;
    println!("\nTop sellers (read model \"top sellers\"):");
    for (sku, units) in views.top_sellers(3) {
        println!("  {sku:<8} {units} sold");
    }
    Ok(())
}

async fn concurrent<S, D, K, R>(app: &App<S, D, K, R>) -> Result<(), Failure>
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
    K: CheckpointStore,
    R: ShopReadModels<Unit = K::Unit>,
{
    println!("\nA concurrent run: 8 customers place 10 orders each on 4 products, some pay,");
    println!("some cancel, the rest expire; then the invariants are checked on the log:");
    let outcome = workload::run(app, 8, 10, 7).await?;
    println!("  {outcome}");
    let checked = workload::check(app).await?;
    println!("  {checked}");
    Ok(())
}
