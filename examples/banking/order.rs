//! Type-state: an order's lifecycle in its type. Only a confirmed order has a `ship` method, so
//! shipping a draft is a compile error, not a runtime check.

use std::marker::PhantomData;

use crossfold::ValidationError;

/// Being put together; lines can be added.
pub enum Draft {}
/// Confirmed by the customer; can be shipped.
pub enum Confirmed {}
/// On its way.
pub enum Shipped {}

/// An order in state `S`.
#[derive(Debug)]
pub struct Order<S> {
    pub id: String,
    pub lines: Vec<(String, u32)>,
    pub carrier: Option<String>,
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
    pub fn draft(id: impl Into<String>) -> Self {
        Order {
            id: id.into(),
            lines: Vec::new(),
            carrier: None,
            _state: PhantomData,
        }
    }

    /// Adds a line.
    pub fn add_line(mut self, sku: impl Into<String>, quantity: u32) -> Self {
        self.lines.push((sku.into(), quantity));
        self
    }

    /// Confirms the order; an order without lines cannot be confirmed.
    pub fn confirm(self) -> Result<Order<Confirmed>, ValidationError> {
        if self.lines.is_empty() {
            return Err(ValidationError::new("lines", "an order needs at least one line"));
        }
        Ok(self.into_state())
    }
}

impl Order<Confirmed> {
    /// Hands the order to a carrier.
    pub fn ship(mut self, carrier: impl Into<String>) -> Order<Shipped> {
        self.carrier = Some(carrier.into());
        self.into_state()
    }
}
