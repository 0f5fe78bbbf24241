//! Type-state: an order's lifecycle in its type. Only a confirmed order has a `ship` method, so
//! shipping a draft is a compile error, not a runtime check.

use std::marker::PhantomData;

/// Being put together; lines can be added.
pub(crate) enum Draft {}
/// Confirmed by the customer; can be shipped.
pub(crate) enum Confirmed {}
/// On its way.
pub(crate) enum Shipped {}

/// Refusal to confirm an order without lines.
#[derive(Debug, thiserror::Error)]
#[error("an order needs at least one line")]
pub(crate) struct EmptyOrder;

/// An order in state `S`.
#[derive(Debug)]
pub(crate) struct Order<S> {
    pub(crate) id: String,
    pub(crate) lines: Vec<(String, u32)>,
    pub(crate) carrier: Option<String>,
    _state: PhantomData<S>,
}

impl<S> Order<S> {
    fn into_state<T>(self) -> Order<T> {
        Order {
            id: self.id,
            lines: self.lines,
            carrier: self.carrier,
            _state: PhantomData,
        }
    }
}

impl Order<Draft> {
    /// An empty draft.
    pub(crate) fn draft(id: impl Into<String>) -> Self {
        Order {
            id: id.into(),
            lines: Vec::new(),
            carrier: None,
            _state: PhantomData,
        }
    }

    /// Adds a line.
    pub(crate) fn add_line(mut self, sku: impl Into<String>, quantity: u32) -> Self {
        self.lines.push((sku.into(), quantity));
        self
    }

    /// Confirms the order; an order without lines cannot be confirmed.
    pub(crate) fn confirm(self) -> Result<Order<Confirmed>, EmptyOrder> {
        if self.lines.is_empty() {
            return Err(EmptyOrder);
        }
        Ok(self.into_state())
    }
}

impl Order<Confirmed> {
    /// Hands the order to a carrier.
    pub(crate) fn ship(mut self, carrier: impl Into<String>) -> Order<Shipped> {
        self.carrier = Some(carrier.into());
        self.into_state()
    }
}
