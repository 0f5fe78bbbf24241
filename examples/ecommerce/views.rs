//! Read models kept by projections: each order's summary, each product's stock, and the top
//! sellers. One fold ([`ShopViews::apply`]) builds them, whether a projection feeds it event
//! by event or a check folds the whole log at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use crossfold::core::{LogFilter, Recorded};
use crossfold::memory::MemoryUnit;
use crossfold::projections::{ApplyContext, HandlerError, Projection};

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

/// A projection keeping the three read models, and a way to read them back.
pub(crate) trait ShopReadModels: Projection<Event = ShopEvent> + Clone {
    /// The read models as they are now.
    fn snapshot(
        &self,
    ) -> impl Future<Output = Result<ShopViews, Box<dyn std::error::Error + Send + Sync>>> + Send;
}

/// The read models in this process's memory: changes apply when the batch's checkpoint
/// commits, so a batch that fails half-way changes nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryViews(Arc<Mutex<ShopViews>>);

impl MemoryViews {
    fn lock(&self) -> MutexGuard<'_, ShopViews> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ShopReadModels for MemoryViews {
    async fn snapshot(&self) -> Result<ShopViews, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.lock().clone())
    }
}

impl Projection for MemoryViews {
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
        let views = self.clone();
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
        let views = self.clone();
        unit.on_commit(move || *views.lock() = ShopViews::default());
        Ok(())
    }
}

#[cfg(feature = "postgres")]
pub(crate) use pg::PgViews;

/// The read models as tables of the store's schema, written in the projection's transaction:
/// every event is applied to them exactly once, whatever crashes.
#[cfg(feature = "postgres")]
mod pg {
    use std::collections::BTreeMap;

    use crossfold::core::LogFilter;
    use crossfold::core::Recorded;
    use crossfold::postgres::{PgEventStore, PgUnit};
    use crossfold::projections::{ApplyContext, HandlerError, Projection};

    use super::{OrderSummary, ShopReadModels, ShopViews, StockLevel};
    use crate::shop::{CancelReason, OrderId, ShopEvent, Sku};

    type Failure = Box<dyn std::error::Error + Send + Sync>;

    /// The tables `shop_stock` and `shop_orders`; the top sellers are a query on the first.
    #[derive(Clone)]
    pub(crate) struct PgViews {
        store: PgEventStore,
        stock: String,
        orders: String,
    }

    const STATUSES: [&str; 4] = ["awaiting payment", "paid", "cancelled", "expired"];

    impl PgViews {
        /// Creates the tables if they do not exist.
        pub(crate) async fn create(store: &PgEventStore) -> Result<Self, Failure> {
            let schema = format!("\"{}\"", store.schema().replace('"', "\"\""));
            let views = Self {
                store: store.clone(),
                stock: format!("{schema}.shop_stock"),
                orders: format!("{schema}.shop_orders"),
            };
            store
                .pool()
                .get()
                .await?
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (sku text PRIMARY KEY, name text NOT NULL, \
                     available bigint NOT NULL, reserved bigint NOT NULL, sold bigint NOT NULL); \
                     CREATE TABLE IF NOT EXISTS {} (order_id text PRIMARY KEY, status text NOT NULL, \
                     items bigint NOT NULL, total_cents bigint NOT NULL, paid_cents bigint NOT NULL, \
                     refunded_cents bigint NOT NULL)",
                    views.stock, views.orders
                ))
                .await?;
            Ok(views)
        }
    }

    /// A product's row change: sku, name (when listed), and deltas of available, reserved and
    /// sold units.
    type StockChange<'a> = (&'a Sku, Option<&'a str>, i64, i64, i64);
    /// An order's row change: id, new status, and deltas of paid and refunded cents.
    type OrderChange<'a> = (&'a OrderId, Option<&'a str>, i64, i64);

    fn cents(value: u64) -> i64 {
        i64::try_from(value).unwrap_or(i64::MAX)
    }

    impl Projection for PgViews {
        type Event = ShopEvent;
        type Unit = PgUnit;

        fn name(&self) -> &str {
            "shop-views"
        }

        fn filter(&self) -> LogFilter {
            LogFilter::categories(["product", "order", "payment"])
        }

        async fn apply(
            &self,
            unit: &mut PgUnit,
            _context: &ApplyContext,
            events: &[Recorded<ShopEvent>],
        ) -> Result<(), HandlerError> {
            let client = unit.client()?;
            let stock = client
                .prepare_cached(&format!(
                    "INSERT INTO {} AS s (sku, name, available, reserved, sold) \
                     VALUES ($1, coalesce($2, ''), $3, $4, $5) ON CONFLICT (sku) DO UPDATE SET \
                     name = coalesce($2, s.name), available = s.available + $3, \
                     reserved = s.reserved + $4, sold = s.sold + $5",
                    self.stock
                ))
                .await
                .map_err(HandlerError::transient)?;
            let order = client
                .prepare_cached(&format!(
                    "UPDATE {} SET status = coalesce($2, status), paid_cents = paid_cents + $3, \
                     refunded_cents = refunded_cents + $4 WHERE order_id = $1",
                    self.orders
                ))
                .await
                .map_err(HandlerError::transient)?;
            for event in events {
                let (stock_change, order_change): (
                    Option<StockChange<'_>>,
                    Option<OrderChange<'_>>,
                ) = match &event.event {
                    ShopEvent::ProductAdded {
                        sku, name, stock, ..
                    } => (Some((sku, Some(name), (*stock).into(), 0, 0)), None),
                    ShopEvent::Restocked { sku, quantity } => {
                        (Some((sku, None, (*quantity).into(), 0, 0)), None)
                    }
                    ShopEvent::StockReserved { sku, quantity, .. } => {
                        let q = i64::from(*quantity);
                        (Some((sku, None, -q, q, 0)), None)
                    }
                    ShopEvent::StockReleased { sku, quantity, .. } => {
                        let q = i64::from(*quantity);
                        (Some((sku, None, q, -q, 0)), None)
                    }
                    ShopEvent::StockSold { sku, quantity, .. } => {
                        let q = i64::from(*quantity);
                        (Some((sku, None, 0, -q, q)), None)
                    }
                    ShopEvent::OrderPlaced {
                        order,
                        lines,
                        total_cents,
                    } => {
                        let items: i64 = lines.iter().map(|l| i64::from(l.quantity)).sum();
                        client
                            .execute(
                                &format!(
                                    "INSERT INTO {} VALUES ($1, 'awaiting payment', $2, $3, 0, 0)",
                                    self.orders
                                ),
                                &[&order.as_str(), &items, &cents(*total_cents)],
                            )
                            .await
                            .map_err(HandlerError::transient)?;
                        (None, None)
                    }
                    ShopEvent::OrderPaid { order, .. } => (None, Some((order, Some("paid"), 0, 0))),
                    ShopEvent::OrderCancelled { order, reason } => {
                        let status = match reason {
                            CancelReason::Customer => "cancelled",
                            CancelReason::PaymentTimeout => "expired",
                        };
                        (None, Some((order, Some(status), 0, 0)))
                    }
                    ShopEvent::PaymentReceived {
                        order,
                        amount_cents,
                    } => (None, Some((order, None, cents(*amount_cents), 0))),
                    ShopEvent::PaymentRefunded {
                        order,
                        amount_cents,
                        ..
                    } => (None, Some((order, None, 0, cents(*amount_cents)))),
                };
                if let Some((sku, name, available, reserved, sold)) = stock_change {
                    client
                        .execute(
                            &stock,
                            &[&sku.as_str(), &name, &available, &reserved, &sold],
                        )
                        .await
                        .map_err(HandlerError::transient)?;
                }
                if let Some((id, status, paid, refunded)) = order_change {
                    client
                        .execute(&order, &[&id.as_str(), &status, &paid, &refunded])
                        .await
                        .map_err(HandlerError::transient)?;
                }
            }
            Ok(())
        }

        // These tables are rebuilt in place: a `reset` clears them and replays the log into
        // them, and readers see them fill up again. A blue/green `rebuild` would need a table
        // per generation, as `docs/projections.md` shows for balances; this example keeps one
        // pair of tables, so operators should reset it rather than rebuild it.
        async fn reset(
            &self,
            unit: &mut PgUnit,
            _context: &ApplyContext,
        ) -> Result<(), HandlerError> {
            unit.client()?
                .batch_execute(&format!(
                    "DELETE FROM {}; DELETE FROM {}",
                    self.stock, self.orders
                ))
                .await
                .map_err(HandlerError::transient)?;
            Ok(())
        }
    }

    impl ShopReadModels for PgViews {
        async fn snapshot(&self) -> Result<ShopViews, Failure> {
            let client = self.store.pool().get().await?;
            let mut views = ShopViews::default();
            for row in client
                .query(
                    &format!(
                        "SELECT sku, name, available, reserved, sold FROM {}",
                        self.stock
                    ),
                    &[],
                )
                .await?
            {
                let sku = Sku::new(row.try_get::<_, String>(0)?)?;
                let sold: i64 = row.try_get(4)?;
                if sold > 0 {
                    views.sold.insert(sku.clone(), u64::try_from(sold)?);
                }
                views.stock.insert(
                    sku,
                    StockLevel {
                        name: row.try_get(1)?,
                        available: row.try_get(2)?,
                        reserved: row.try_get(3)?,
                        sold,
                    },
                );
            }
            let mut orders = BTreeMap::new();
            for row in client
                .query(&format!("SELECT * FROM {}", self.orders), &[])
                .await?
            {
                let status: String = row.try_get(1)?;
                let status = STATUSES
                    .into_iter()
                    .find(|s| *s == status)
                    .ok_or_else(|| format!("unknown order status {status:?}"))?;
                orders.insert(
                    OrderId::new(row.try_get::<_, String>(0)?)?,
                    OrderSummary {
                        status,
                        items: u32::try_from(row.try_get::<_, i64>(2)?)?,
                        total_cents: u64::try_from(row.try_get::<_, i64>(3)?)?,
                        paid_cents: u64::try_from(row.try_get::<_, i64>(4)?)?,
                        refunded_cents: u64::try_from(row.try_get::<_, i64>(5)?)?,
                    },
                );
            }
            views.orders = orders;
            Ok(views)
        }
    }
}
