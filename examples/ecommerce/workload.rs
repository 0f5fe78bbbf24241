//! A concurrent run of the shop and the checks of its invariants on the log: stock never goes
//! below zero, every reservation is released or consumed exactly once, every payment is kept
//! by a paid order or refunded, and the read models equal a fold of the log.

use std::collections::BTreeMap;
use std::time::Duration;

use crossfold::core::checkpoint::CheckpointStore;
use crossfold::core::deadline::DeadlineStore;
use crossfold::core::{EventStore, Json, LogFilter, Position, Upcasters};
use crossfold::executor::{Error, Executed, Executor};

use crate::app::{App, Failure};
use crate::saga::PAYMENT_TIMEOUT;
use crate::shop::{
    AddProduct, CancelOrder, CancelReason, OrderId, PlaceOrder, ReceivePayment, ShopEvent, Sku,
};
use crate::views::{ShopReadModels, ShopViews};

const PRODUCTS: [&str; 4] = ["w-a", "w-b", "w-c", "w-d"];

/// Receives a payment the provider reported, under its payment id's idempotency key.
async fn receive<S: EventStore>(
    executor: &Executor<S>,
    payment: ReceivePayment,
) -> Result<Executed, Error> {
    let context = payment.context();
    executor.execute_with(payment, &context).await
}

/// What one customer's orders came to.
#[derive(Default)]
struct Tally {
    placed: usize,
    out_of_stock: usize,
    paid: usize,
    cancelled: usize,
    late: usize,
}

/// Lists four products, then `customers` customers each place `orders` orders at once, paying
/// some (sometimes twice), cancelling some, paying some too late and leaving the rest to
/// expire; then moves the clock past the payment timeout and fires the deadlines.
pub(crate) async fn run<S, D, K, R>(
    app: &App<S, D, K, R>,
    customers: usize,
    orders: usize,
    seed: u64,
) -> Result<String, Failure>
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
    K: CheckpointStore,
    R: ShopReadModels<Unit = K::Unit>,
{
    for (i, sku) in PRODUCTS.iter().enumerate() {
        let add = AddProduct {
            sku: Sku::new(*sku)?,
            name: format!("Widget {}", i + 1),
            price_cents: 1_00 * (i as u64 + 1),
            stock: 5 * u32::try_from(customers).unwrap_or(u32::MAX),
        };
        // Listed already by an earlier run on the same store: keep it.
        if let Err(e) = app.executor.execute(add).await
            && e.rule() != Some("product_exists")
        {
            return Err(e.into());
        }
    }
    let run_id = fastrand::Rng::with_seed(seed).u32(..);
    let mut tasks = Vec::new();
    for c in 0..customers {
        let executor = app.executor.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(c as u64));
            let mut tally = Tally::default();
            for n in 0..orders {
                let order = OrderId::new(format!("r{run_id:x}-{c}-{n}"))?;
                let mut lines = Vec::new();
                for _ in 0..rng.usize(1..=3) {
                    lines.push((
                        Sku::new(PRODUCTS[rng.usize(..PRODUCTS.len())])?,
                        rng.u32(1..=3),
                    ));
                }
                let placed = match executor
                    .execute(PlaceOrder::new(order.clone(), lines)?)
                    .await
                {
                    Ok(done) => done,
                    Err(e) if e.rule() == Some("out_of_stock") => {
                        tally.out_of_stock += 1;
                        continue;
                    }
                    Err(e) => return Err::<Tally, Failure>(e.into()),
                };
                tally.placed += 1;
                let total = placed
                    .decode::<ShopEvent>()?
                    .iter()
                    .find_map(|e| match &e.event {
                        ShopEvent::OrderPlaced { total_cents, .. } => Some(*total_cents),
                        _ => None,
                    })
                    .unwrap_or_default();
                let pay = |times: u32| ReceivePayment {
                    order: order.clone(),
                    amount_cents: total,
                    payment_ref: format!("{order}-{times}"),
                };
                match rng.u32(0..10) {
                    0..=3 => {
                        receive(&executor, pay(1)).await?;
                        tally.paid += 1;
                    }
                    4 => {
                        // Reported twice by the provider, and a second, real payment.
                        receive(&executor, pay(1)).await?;
                        receive(&executor, pay(1)).await?;
                        receive(&executor, pay(2)).await?;
                        tally.paid += 1;
                    }
                    5 | 6 => {
                        let cancel = CancelOrder {
                            order: order.clone(),
                            reason: CancelReason::Customer,
                        };
                        match executor.execute(cancel).await {
                            Ok(_) => tally.cancelled += 1,
                            Err(e) if e.rule() == Some("already_paid") => {}
                            Err(e) => return Err(e.into()),
                        }
                        if rng.bool() {
                            // Paid after cancelling: the saga refunds it.
                            receive(&executor, pay(1)).await?;
                            tally.late += 1;
                        }
                    }
                    _ => {}
                }
                if rng.u32(0..4) == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok(tally)
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await??;
        all.placed += t.placed;
        all.out_of_stock += t.out_of_stock;
        all.paid += t.paid;
        all.cancelled += t.cancelled;
        all.late += t.late;
    }
    app.settle().await?;
    app.clock.advance(PAYMENT_TIMEOUT + Duration::from_secs(60));
    let fired = app.fire_due_deadlines().await?;
    app.settle().await?;
    Ok(format!(
        "{} orders placed ({} refused: out of stock), {} paid, {} cancelled by the customer \
         ({} paid after cancelling: refunded), {} expired by their deadline",
        all.placed, all.out_of_stock, all.paid, all.cancelled, all.late, fired.fired
    ))
}

/// Reads the shop's events from the log, in log order.
async fn log<S: EventStore>(store: &S) -> Result<Vec<ShopEvent>, Failure> {
    let filter = LogFilter::categories(["product", "order", "payment"]);
    let upcasters = Upcasters::new();
    let mut after = Position::START;
    let mut events = Vec::new();
    loop {
        let page = store.read_all(after, 1000, &filter).await?;
        let Some(last) = page.last() else {
            return Ok(events);
        };
        after = last.position;
        for e in &page {
            events.push(upcasters.decode::<ShopEvent, _>(&Json, e)?.event);
        }
    }
}

/// Checks the invariants on the log and the read models (after [`App::settle`]). Returns a
/// summary, or what is broken.
pub(crate) async fn check<S, D, K, R>(app: &App<S, D, K, R>) -> Result<String, Failure>
where
    S: EventStore + Clone + 'static,
    D: DeadlineStore + Clone + 'static,
    K: CheckpointStore,
    R: ShopReadModels<Unit = K::Unit>,
{
    app.settle().await?;
    let events = log(app.executor.store()).await?;

    // Stock never below zero, in the order each product's events were written.
    let mut stock: BTreeMap<Sku, (i64, i64)> = BTreeMap::new();
    // Each reservation, and what became of it.
    let mut reservations: BTreeMap<(OrderId, Sku), (u32, Vec<&'static str>)> = BTreeMap::new();
    let mut orders: BTreeMap<OrderId, (&'static str, u64, u64)> = BTreeMap::new();
    for event in &events {
        match event {
            ShopEvent::ProductAdded { sku, stock: n, .. } => {
                stock.entry(sku.clone()).or_default().0 += i64::from(*n)
            }
            ShopEvent::Restocked { sku, quantity } => {
                stock.entry(sku.clone()).or_default().0 += i64::from(*quantity)
            }
            ShopEvent::StockReserved {
                sku,
                order,
                quantity,
            } => {
                let s = stock.entry(sku.clone()).or_default();
                s.0 -= i64::from(*quantity);
                s.1 += i64::from(*quantity);
                if reservations
                    .insert((order.clone(), sku.clone()), (*quantity, Vec::new()))
                    .is_some()
                {
                    return Err(format!("{order} reserved {sku} twice").into());
                }
            }
            ShopEvent::StockReleased {
                sku,
                order,
                quantity,
            }
            | ShopEvent::StockSold {
                sku,
                order,
                quantity,
            } => {
                let s = stock.entry(sku.clone()).or_default();
                s.1 -= i64::from(*quantity);
                let sold = matches!(event, ShopEvent::StockSold { .. });
                if !sold {
                    s.0 += i64::from(*quantity);
                }
                match reservations.get_mut(&(order.clone(), sku.clone())) {
                    Some((reserved, fates)) if reserved == quantity => {
                        fates.push(if sold { "sold" } else { "released" })
                    }
                    _ => {
                        return Err(format!(
                            "{order} gave back {quantity} {sku} it had not reserved"
                        )
                        .into());
                    }
                }
            }
            ShopEvent::OrderPlaced {
                order, total_cents, ..
            } => {
                orders.insert(order.clone(), ("placed", *total_cents, 0));
            }
            ShopEvent::OrderPaid { order, .. } => {
                if let Some(o) = orders.get_mut(order) {
                    o.0 = "paid";
                }
            }
            ShopEvent::OrderCancelled { order, .. } => {
                if let Some(o) = orders.get_mut(order) {
                    o.0 = "cancelled";
                }
            }
            ShopEvent::PaymentReceived {
                order,
                amount_cents,
            } => {
                if let Some(o) = orders.get_mut(order) {
                    o.2 += amount_cents;
                }
            }
            ShopEvent::PaymentRefunded {
                order,
                amount_cents,
                ..
            } => {
                if let Some(o) = orders.get_mut(order) {
                    o.2 =
                        o.2.checked_sub(*amount_cents)
                            .ok_or_else(|| format!("{order} refunded more than it received"))?;
                }
            }
        }
        if let Some((sku, (available, reserved))) =
            stock.iter().find(|(_, (a, r))| *a < 0 || *r < 0)
        {
            return Err(format!(
                "stock of {sku} went below zero: {available} available, {reserved} reserved"
            )
            .into());
        }
    }
    for ((order, sku), (_, fates)) in &reservations {
        if fates.len() != 1 {
            return Err(format!(
                "the reservation of {sku} by {order} ended {} times ({fates:?})",
                fates.len()
            )
            .into());
        }
    }
    for (order, (status, total, kept)) in &orders {
        if *status == "placed" {
            return Err(format!("{order} is neither paid nor cancelled").into());
        }
        let expected = if *status == "paid" { *total } else { 0 };
        if kept != &expected {
            return Err(format!(
                "{order} ({status}) keeps {kept} cents of payments, should keep {expected}"
            )
            .into());
        }
    }

    let mut folded = ShopViews::default();
    for event in &events {
        folded.apply(event);
    }
    if folded != app.views.snapshot().await? {
        return Err("the read models differ from a fold of the log".into());
    }
    let sold = reservations
        .values()
        .filter(|(_, f)| f.first() == Some(&"sold"))
        .count();
    Ok(format!(
        "invariants hold: {} events, stock never negative, {} reservations ({} sold, {} released), \
         {} orders each paid or cancelled with its payments kept or refunded, read models equal a \
         fold of the log",
        events.len(),
        reservations.len(),
        sold,
        reservations.len() - sold,
        orders.len()
    ))
}
