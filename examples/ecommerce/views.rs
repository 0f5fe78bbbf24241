//! Read models kept by projections: each order's summary, each product's stock, and the top
//! sellers. One fold ([`ShopViews::apply`]) builds them, whether a projection feeds it event
//! by event or a check folds the whole log at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crossfold::memory::MemoryUnit;
use crossfold::projections::{ApplyContext, HandlerError, Projection};
use crossfold::{LogFilter, Recorded};

use crate::shop::{CancelReason, OrderId, ShopEvent, Sku};

/// An order as a customer service screen shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderSummary {
    pub(crate) status: &'static str,
    pub(crate) items: u32,
    pub(crate) total_cents: u64,
    pub(crate) paid_cents: u64,
    pub(crate) refunded_cents: u64,
}

/// A product's stock as the warehouse screen shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StockLevel {
    pub(crate) name: String,
    pub(crate) available: i64,
    pub(crate) reserved: i64,
    pub(crate) sold: i64,
}

/// The three read models.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShopViews {
    pub(crate) orders: BTreeMap<OrderId, OrderSummary>,
    pub(crate) stock: BTreeMap<Sku, StockLevel>,
    /// Units sold per product.
    pub(crate) sold: BTreeMap<Sku, u64>,
}

impl ShopViews {
    /// Folds one event. Counts are signed, so a log that ever took stock below zero shows it
    /// instead of hiding it in a saturating subtraction.
    pub(crate) fn apply(&mut self, event: &ShopEvent) {
        match event {
            ShopEvent::ProductAdded {
                sku, name, stock, ..
            } => {
                let level = self.stock.entry(sku.clone()).or_default();
                level.name = name.clone();
                level.available += i64::from(*stock);
            }
            ShopEvent::Restocked { sku, quantity } => {
                self.stock.entry(sku.clone()).or_default().available += i64::from(*quantity);
            }
            ShopEvent::StockReserved { sku, quantity, .. } => {
                let level = self.stock.entry(sku.clone()).or_default();
                level.available -= i64::from(*quantity);
                level.reserved += i64::from(*quantity);
            }
            ShopEvent::StockReleased { sku, quantity, .. } => {
                let level = self.stock.entry(sku.clone()).or_default();
                level.reserved -= i64::from(*quantity);
                level.available += i64::from(*quantity);
            }
            ShopEvent::StockSold { sku, quantity, .. } => {
                let level = self.stock.entry(sku.clone()).or_default();
                level.reserved -= i64::from(*quantity);
                level.sold += i64::from(*quantity);
                *self.sold.entry(sku.clone()).or_default() += u64::from(*quantity);
            }
            ShopEvent::OrderPlaced {
                order,
                lines,
                total_cents,
            } => {
                self.orders.insert(
                    order.clone(),
                    OrderSummary {
                        status: "awaiting payment",
                        items: lines.iter().map(|l| l.quantity).sum(),
                        total_cents: *total_cents,
                        paid_cents: 0,
                        refunded_cents: 0,
                    },
                );
            }
            ShopEvent::OrderPaid { order, .. } => {
                if let Some(o) = self.orders.get_mut(order) {
                    o.status = "paid";
                }
            }
            ShopEvent::OrderCancelled { order, reason } => {
                if let Some(o) = self.orders.get_mut(order) {
                    o.status = match reason {
                        CancelReason::Customer => "cancelled",
                        CancelReason::PaymentTimeout => "expired",
                    };
                }
            }
            ShopEvent::PaymentReceived {
                order,
                amount_cents,
            } => {
                if let Some(o) = self.orders.get_mut(order) {
                    o.paid_cents += amount_cents;
                }
            }
            ShopEvent::PaymentRefunded {
                order,
                amount_cents,
                ..
            } => {
                if let Some(o) = self.orders.get_mut(order) {
                    o.refunded_cents += amount_cents;
                }
            }
        }
    }

    /// The best sellers, most units first (ties by name).
    pub(crate) fn top_sellers(&self, n: usize) -> Vec<(Sku, u64)> {
        let mut all: Vec<(Sku, u64)> = self.sold.iter().map(|(s, n)| (s.clone(), *n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// The shared, in-memory read models.
#[derive(Clone, Debug, Default)]
pub(crate) struct Views(Arc<Mutex<ShopViews>>);

impl Views {
    /// A copy of the read models as they are now.
    pub(crate) fn snapshot(&self) -> ShopViews {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, ShopViews> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The projection that keeps [`Views`]: changes apply when the batch's checkpoint commits, so
/// a batch that fails half-way changes nothing.
pub(crate) struct ViewsProjection {
    pub(crate) views: Views,
}

impl Projection for ViewsProjection {
    type Event = ShopEvent;
    type Unit = MemoryUnit;

    fn name(&self) -> &str {
        "shop-views"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["product", "order", "payment"])
    }

    async fn apply(
        &self,
        unit: &mut MemoryUnit,
        _context: &ApplyContext,
        events: &[Recorded<ShopEvent>],
    ) -> Result<(), HandlerError> {
        let events: Vec<ShopEvent> = events.iter().map(|e| e.event.clone()).collect();
        let views = self.views.clone();
        unit.on_commit(move || {
            let mut views = views.lock();
            for event in &events {
                views.apply(event);
            }
        });
        Ok(())
    }

    async fn reset(
        &self,
        unit: &mut MemoryUnit,
        _context: &ApplyContext,
    ) -> Result<(), HandlerError> {
        let views = self.views.clone();
        unit.on_commit(move || *views.lock() = ShopViews::default());
        Ok(())
    }
}
