//! The shop domain: products with stock, orders that reserve stock on every product they name
//! in one atomic command, payments, and cancellation (by the customer or by the payment
//! deadline) that releases the stock. Every command folds the same [`Shop`] state from the
//! streams it reads: its declared stream and the product streams it discovers.

use std::collections::BTreeMap;
use std::fmt;

use crossfold::core::{EventId, ValidationError};
use crossfold::prelude::*;
use serde::{Deserialize, Serialize};

fn checked_name(kind: &'static str, id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            kind,
            format!("{id:?} is not 1-32 lowercase letters, digits or dashes"),
        ))
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub(crate) struct $name {
            id: String,
            stream: StreamId,
        }

        impl $name {
            /// Validates the id: 1-32 lowercase letters, digits or dashes.
            pub(crate) fn new(id: impl Into<String>) -> Result<Self, ValidationError> {
                let id = id.into();
                checked_name($kind, &id)?;
                let stream = StreamId::compose($prefix, &id)?;
                Ok(Self { id, stream })
            }

            /// Its stream.
            pub(crate) fn stream(&self) -> &StreamId {
                &self.stream
            }

            /// The id as text.
            #[allow(dead_code)]
            pub(crate) fn as_str(&self) -> &str {
                &self.id
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.id
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.id)
            }
        }
    };
}

name_type!(
    /// A product's stock-keeping unit; its stream is `product-<sku>`.
    Sku,
    "sku",
    "product"
);
name_type!(
    /// An order's id; its stream is `order-<id>`, its payments' stream `payment-<id>`.
    OrderId,
    "order_id",
    "order"
);

impl OrderId {
    /// The stream the payment provider's messages about this order are recorded in.
    pub(crate) fn payment_stream(&self) -> Result<StreamId, ValidationError> {
        StreamId::compose("payment", &self.id)
    }
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Line {
    pub(crate) sku: Sku,
    pub(crate) quantity: u32,
}

/// Why an order was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CancelReason {
    /// The customer changed their mind.
    Customer,
    /// It was not paid in time.
    PaymentTimeout,
}

/// Everything that happens in the shop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum ShopEvent {
    /// A product was listed with its first stock.
    ProductAdded {
        sku: Sku,
        name: String,
        price_cents: u64,
        stock: u32,
    },
    /// More units arrived.
    Restocked { sku: Sku, quantity: u32 },
    /// Units were set aside for an order (on the product's stream).
    StockReserved {
        sku: Sku,
        order: OrderId,
        quantity: u32,
    },
    /// Reserved units went back on the shelf (the order was cancelled or expired).
    StockReleased {
        sku: Sku,
        order: OrderId,
        quantity: u32,
    },
    /// Reserved units were sold (the order was paid).
    StockSold {
        sku: Sku,
        order: OrderId,
        quantity: u32,
    },
    /// An order was placed; its stock is reserved.
    OrderPlaced {
        order: OrderId,
        lines: Vec<Line>,
        total_cents: u64,
    },
    /// The order was paid; its reservations became sales.
    OrderPaid { order: OrderId, amount_cents: u64 },
    /// The order was cancelled; its reservations were released.
    OrderCancelled {
        order: OrderId,
        reason: CancelReason,
    },
    /// The payment provider took the customer's money (on the payment stream).
    PaymentReceived { order: OrderId, amount_cents: u64 },
    /// The money went back: the order could not take it (on the payment stream).
    PaymentRefunded {
        order: OrderId,
        amount_cents: u64,
        reason: String,
    },
}

impl DomainEvent for ShopEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ShopEvent::ProductAdded { .. } => "ProductAdded",
            ShopEvent::Restocked { .. } => "Restocked",
            ShopEvent::StockReserved { .. } => "StockReserved",
            ShopEvent::StockReleased { .. } => "StockReleased",
            ShopEvent::StockSold { .. } => "StockSold",
            ShopEvent::OrderPlaced { .. } => "OrderPlaced",
            ShopEvent::OrderPaid { .. } => "OrderPaid",
            ShopEvent::OrderCancelled { .. } => "OrderCancelled",
            ShopEvent::PaymentReceived { .. } => "PaymentReceived",
            ShopEvent::PaymentRefunded { .. } => "PaymentRefunded",
        }
    }
}

/// A product as the shop's commands (and its stock read model) see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Product {
    pub(crate) name: String,
    pub(crate) price_cents: u64,
    /// On the shelf, free to reserve.
    pub(crate) available: u32,
    /// Set aside for orders not yet paid or cancelled.
    pub(crate) reserved: u32,
    /// Sold to paid orders.
    pub(crate) sold: u32,
}

/// Where an order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrderStatus {
    /// Placed, stock reserved, waiting for payment.
    Placed,
    /// Paid: its stock is sold.
    Paid,
    /// Cancelled or expired: its stock is released.
    Cancelled(CancelReason),
}

/// An order as the shop's commands see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Order {
    pub(crate) status: OrderStatus,
    pub(crate) lines: Vec<Line>,
    pub(crate) total_cents: u64,
    /// The event that placed it: the payment deadline's id derives from it.
    pub(crate) placed_by: EventId,
    /// Money received for it and not refunded.
    pub(crate) received_cents: u64,
}

/// The state every shop command folds: the products and orders of the streams it read.
/// Arithmetic saturates: the commands never emit an event that would take a count below
/// zero, so saturation only matters for a corrupted log.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Shop {
    pub(crate) products: BTreeMap<Sku, Product>,
    pub(crate) orders: BTreeMap<OrderId, Order>,
}

impl Shop {
    fn order(&self, id: &OrderId) -> Result<&Order, CommandError> {
        self.orders.get(id).ok_or_else(|| {
            CommandError::rejected("unknown_order", format!("order {id} does not exist"))
        })
    }

    fn product(&self, sku: &Sku) -> Result<&Product, CommandError> {
        self.products.get(sku).ok_or_else(|| {
            CommandError::rejected("unknown_product", format!("product {sku} does not exist"))
        })
    }

    /// The product streams of an order's lines (what the order commands discover).
    fn product_streams_of(&self, order: &OrderId) -> Vec<StreamId> {
        self.orders
            .get(order)
            .map(|o| o.lines.iter().map(|l| l.sku.stream().clone()).collect())
            .unwrap_or_default()
    }
}

/// Every shop command (and the payment saga) decides on [`Shop`], so they share this fold.
impl Fold<ShopEvent> for Shop {
    fn apply(&mut self, event: &Recorded<ShopEvent>) {
        match &event.event {
            ShopEvent::ProductAdded {
                sku,
                name,
                price_cents,
                stock,
            } => {
                let p = self.products.entry(sku.clone()).or_default();
                p.name = name.clone();
                p.price_cents = *price_cents;
                p.available = p.available.saturating_add(*stock);
            }
            ShopEvent::Restocked { sku, quantity } => {
                let p = self.products.entry(sku.clone()).or_default();
                p.available = p.available.saturating_add(*quantity);
            }
            ShopEvent::StockReserved { sku, quantity, .. } => {
                let p = self.products.entry(sku.clone()).or_default();
                p.available = p.available.saturating_sub(*quantity);
                p.reserved = p.reserved.saturating_add(*quantity);
            }
            ShopEvent::StockReleased { sku, quantity, .. } => {
                let p = self.products.entry(sku.clone()).or_default();
                p.reserved = p.reserved.saturating_sub(*quantity);
                p.available = p.available.saturating_add(*quantity);
            }
            ShopEvent::StockSold { sku, quantity, .. } => {
                let p = self.products.entry(sku.clone()).or_default();
                p.reserved = p.reserved.saturating_sub(*quantity);
                p.sold = p.sold.saturating_add(*quantity);
            }
            ShopEvent::OrderPlaced {
                order,
                lines,
                total_cents,
            } => {
                self.orders.insert(
                    order.clone(),
                    Order {
                        status: OrderStatus::Placed,
                        lines: lines.clone(),
                        total_cents: *total_cents,
                        placed_by: event.event_id,
                        received_cents: 0,
                    },
                );
            }
            ShopEvent::OrderPaid { order, .. } => {
                if let Some(o) = self.orders.get_mut(order) {
                    o.status = OrderStatus::Paid;
                }
            }
            ShopEvent::OrderCancelled { order, reason } => {
                if let Some(o) = self.orders.get_mut(order) {
                    o.status = OrderStatus::Cancelled(*reason);
                }
            }
            ShopEvent::PaymentReceived {
                order,
                amount_cents,
            } => {
                if let Some(o) = self.orders.get_mut(order) {
                    o.received_cents = o.received_cents.saturating_add(*amount_cents);
                }
            }
            ShopEvent::PaymentRefunded {
                order,
                amount_cents,
                ..
            } => {
                if let Some(o) = self.orders.get_mut(order) {
                    o.received_cents = o.received_cents.saturating_sub(*amount_cents);
                }
            }
        }
    }
}

fn token<'x>(out: &Emit<'x, ShopEvent>, stream: &StreamId) -> Result<StreamRef<'x>, CommandError> {
    out.stream(stream).ok_or_else(|| {
        CommandError::InvalidState(format!("stream {stream} was not read by the command"))
    })
}

/// Lists a product with its first stock.
pub(crate) struct AddProduct {
    pub(crate) sku: Sku,
    pub(crate) name: String,
    pub(crate) price_cents: u64,
    pub(crate) stock: u32,
}

impl Command for AddProduct {
    type Event = ShopEvent;
    type State = Shop;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.sku.stream().clone()
    }

    fn handle<'x>(
        &self,
        state: &Shop,
        product: StreamRef<'x>,
        out: &mut Emit<'x, ShopEvent>,
    ) -> Result<(), CommandError> {
        if state.products.contains_key(&self.sku) {
            return Err(CommandError::rejected(
                "product_exists",
                format!("product {} is already listed", self.sku),
            ));
        }
        out.append(
            product,
            ShopEvent::ProductAdded {
                sku: self.sku.clone(),
                name: self.name.clone(),
                price_cents: self.price_cents,
                stock: self.stock,
            },
        );
        Ok(())
    }
}

/// Adds units to a listed product.
pub(crate) struct Restock {
    pub(crate) sku: Sku,
    pub(crate) quantity: u32,
}

impl Command for Restock {
    type Event = ShopEvent;
    type State = Shop;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.sku.stream().clone()
    }

    fn handle<'x>(
        &self,
        state: &Shop,
        product: StreamRef<'x>,
        out: &mut Emit<'x, ShopEvent>,
    ) -> Result<(), CommandError> {
        state.product(&self.sku)?;
        out.append(
            product,
            ShopEvent::Restocked {
                sku: self.sku.clone(),
                quantity: self.quantity,
            },
        );
        Ok(())
    }
}

/// Places an order: reserves stock on every product it names, or nothing at all. Declares the
/// order's stream and discovers the products' streams from its lines, so the order and every
/// reservation are appended atomically, checked against the versions of every product read.
pub(crate) struct PlaceOrder {
    order: OrderId,
    lines: Vec<Line>,
}

impl PlaceOrder {
    /// An order of `lines`; lines naming the same product are added up. Refuses an empty
    /// order, a quantity of zero and more than 20 products.
    pub(crate) fn new(
        order: OrderId,
        lines: impl IntoIterator<Item = (Sku, u32)>,
    ) -> Result<Self, ValidationError> {
        let mut merged: BTreeMap<Sku, u32> = BTreeMap::new();
        for (sku, quantity) in lines {
            if quantity == 0 {
                return Err(ValidationError::new(
                    "quantity",
                    format!("{sku}: must be at least 1"),
                ));
            }
            let q = merged.entry(sku).or_default();
            *q = q
                .checked_add(quantity)
                .ok_or_else(|| ValidationError::new("quantity", "too many units of one product"))?;
        }
        if merged.is_empty() || merged.len() > 20 {
            return Err(ValidationError::new(
                "lines",
                format!("an order names 1 to 20 products, not {}", merged.len()),
            ));
        }
        Ok(Self {
            order,
            lines: merged
                .into_iter()
                .map(|(sku, quantity)| Line { sku, quantity })
                .collect(),
        })
    }

    /// The order's id.
    #[allow(dead_code)]
    pub(crate) fn order(&self) -> &OrderId {
        &self.order
    }
}

impl Command for PlaceOrder {
    type Event = ShopEvent;
    type State = Shop;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.order.stream().clone()
    }

    fn discover(&self, _state: &Shop) -> Vec<StreamId> {
        self.lines.iter().map(|l| l.sku.stream().clone()).collect()
    }

    fn handle<'x>(
        &self,
        state: &Shop,
        order: StreamRef<'x>,
        out: &mut Emit<'x, ShopEvent>,
    ) -> Result<(), CommandError> {
        if state.orders.contains_key(&self.order) {
            return Err(CommandError::rejected(
                "order_exists",
                format!("order {} was already placed", self.order),
            ));
        }
        let mut total: u64 = 0;
        for line in &self.lines {
            let product = state.product(&line.sku)?;
            if product.available < line.quantity {
                return Err(CommandError::rejected(
                    "out_of_stock",
                    format!(
                        "{} has {} available, the order wants {}",
                        line.sku, product.available, line.quantity
                    ),
                ));
            }
            total = total.saturating_add(product.price_cents.saturating_mul(line.quantity.into()));
        }
        out.append(
            order,
            ShopEvent::OrderPlaced {
                order: self.order.clone(),
                lines: self.lines.clone(),
                total_cents: total,
            },
        );
        for line in &self.lines {
            out.append(
                token(out, line.sku.stream())?,
                ShopEvent::StockReserved {
                    sku: line.sku.clone(),
                    order: self.order.clone(),
                    quantity: line.quantity,
                },
            );
        }
        Ok(())
    }
}

/// Records a payment the provider took (its webhook): one event on the payment stream. The
/// payment saga then tries to pay the order with it.
pub(crate) struct ReceivePayment {
    pub(crate) order: OrderId,
    pub(crate) amount_cents: u64,
    /// The provider's id of the payment: receiving the same payment twice records it once.
    pub(crate) payment_ref: String,
}

impl ReceivePayment {
    /// The context to receive it in: idempotent on the provider's payment id, so a payment the
    /// provider reports twice is recorded once.
    pub(crate) fn context(&self) -> ExecutionContext {
        ExecutionContext::new().idempotency_key(format!("payment/{}", self.payment_ref))
    }
}

impl Command for ReceivePayment {
    type Event = ShopEvent;
    type State = Shop;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        // A valid order id always makes a valid payment stream (same rules, shorter prefix).
        self.order
            .payment_stream()
            .unwrap_or_else(|_| self.order.stream().clone())
    }

    fn handle<'x>(
        &self,
        _state: &Shop,
        payment: StreamRef<'x>,
        out: &mut Emit<'x, ShopEvent>,
    ) -> Result<(), CommandError> {
        out.append(
            payment,
            ShopEvent::PaymentReceived {
                order: self.order.clone(),
                amount_cents: self.amount_cents,
            },
        );
        Ok(())
    }
}

/// Pays an order: its reservations become sales on every product (discovered from the order).
pub(crate) struct PayOrder {
    pub(crate) order: OrderId,
    pub(crate) amount_cents: u64,
}

impl Command for PayOrder {
    type Event = ShopEvent;
    type State = Shop;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.order.stream().clone()
    }

    fn discover(&self, state: &Shop) -> Vec<StreamId> {
        state.product_streams_of(&self.order)
    }

    fn handle<'x>(
        &self,
        state: &Shop,
        stream: StreamRef<'x>,
        out: &mut Emit<'x, ShopEvent>,
    ) -> Result<(), CommandError> {
        let order = state.order(&self.order)?;
        match order.status {
            OrderStatus::Placed => {}
            OrderStatus::Paid => {
                return Err(CommandError::rejected(
                    "already_paid",
                    format!("order {} is already paid", self.order),
                ));
            }
            OrderStatus::Cancelled(_) => {
                return Err(CommandError::rejected(
                    "order_cancelled",
                    format!("order {} was cancelled", self.order),
                ));
            }
        }
        if self.amount_cents != order.total_cents {
            return Err(CommandError::rejected(
                "wrong_amount",
                format!(
                    "order {} costs {} cents, not {}",
                    self.order, order.total_cents, self.amount_cents
                ),
            ));
        }
        out.append(
            stream,
            ShopEvent::OrderPaid {
                order: self.order.clone(),
                amount_cents: self.amount_cents,
            },
        );
        for line in &order.lines {
            out.append(
                token(out, line.sku.stream())?,
                ShopEvent::StockSold {
                    sku: line.sku.clone(),
                    order: self.order.clone(),
                    quantity: line.quantity,
                },
            );
        }
        Ok(())
    }
}

/// Cancels an unpaid order and releases its stock on every product (discovered from the
/// order). Cancelling a cancelled order does nothing; a paid order cannot be cancelled by the
/// customer, and a payment deadline that finds it paid does nothing.
pub(crate) struct CancelOrder {
    pub(crate) order: OrderId,
    pub(crate) reason: CancelReason,
}

impl Command for CancelOrder {
    type Event = ShopEvent;
    type State = Shop;
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.order.stream().clone()
    }

    fn discover(&self, state: &Shop) -> Vec<StreamId> {
        state.product_streams_of(&self.order)
    }

    fn handle<'x>(
        &self,
        state: &Shop,
        stream: StreamRef<'x>,
        out: &mut Emit<'x, ShopEvent>,
    ) -> Result<(), CommandError> {
        let order = state.order(&self.order)?;
        match (order.status, self.reason) {
            (OrderStatus::Placed, _) => {}
            (OrderStatus::Cancelled(_), _) | (OrderStatus::Paid, CancelReason::PaymentTimeout) => {
                return Ok(());
            }
            (OrderStatus::Paid, CancelReason::Customer) => {
                return Err(CommandError::rejected(
                    "already_paid",
                    format!("order {} is paid; ask for a refund instead", self.order),
                ));
            }
        }
        out.append(
            stream,
            ShopEvent::OrderCancelled {
                order: self.order.clone(),
                reason: self.reason,
            },
        );
        for line in &order.lines {
            out.append(
                token(out, line.sku.stream())?,
                ShopEvent::StockReleased {
                    sku: line.sku.clone(),
                    order: self.order.clone(),
                    quantity: line.quantity,
                },
            );
        }
        Ok(())
    }
}

/// Gives a payment back (the order could not take it). Reads the order too, so that a refund
/// is only decided on a state in which the order really did not take the money.
pub(crate) struct RefundPayment {
    pub(crate) order: OrderId,
    pub(crate) amount_cents: u64,
    pub(crate) reason: String,
}

impl Command for RefundPayment {
    type Event = ShopEvent;
    type State = Shop;
    type Streams = [StreamId; 2];

    fn streams(&self) -> [StreamId; 2] {
        let payment = self
            .order
            .payment_stream()
            .unwrap_or_else(|_| self.order.stream().clone());
        [payment, self.order.stream().clone()]
    }

    fn handle<'x>(
        &self,
        state: &Shop,
        [payment, _order]: [StreamRef<'x>; 2],
        out: &mut Emit<'x, ShopEvent>,
    ) -> Result<(), CommandError> {
        let order = state.order(&self.order)?;
        let kept = if order.status == OrderStatus::Paid {
            order.total_cents
        } else {
            0
        };
        if order.received_cents.saturating_sub(kept) < self.amount_cents {
            return Err(CommandError::rejected(
                "nothing_to_refund",
                format!(
                    "order {} holds no unused payment of {} cents",
                    self.order, self.amount_cents
                ),
            ));
        }
        out.append(
            payment,
            ShopEvent::PaymentRefunded {
                order: self.order.clone(),
                amount_cents: self.amount_cents,
                reason: self.reason.clone(),
            },
        );
        Ok(())
    }
}
