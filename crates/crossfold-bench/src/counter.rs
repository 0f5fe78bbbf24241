//! The domain of W12: one counter stream that hands out gapless invoice numbers, each number
//! recorded on the counter and on a fresh invoice stream in the same append.

use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, Fold, Recorded, StreamId, StreamRef, ValidationError,
};
use serde::{Deserialize, Serialize};

/// Events of the invoice numbering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum InvoiceEvent {
    /// The counter handed out its next number (on the counter's stream).
    NumberTaken {
        /// The number: 1 for the counter's first event, then one more each time.
        number: u64,
    },
    /// An invoice got its number (on the invoice's own stream).
    InvoiceNumbered {
        /// The number the counter handed out for it.
        number: u64,
    },
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> &'static str {
        match self {
            InvoiceEvent::NumberTaken { .. } => "NumberTaken",
            InvoiceEvent::InvoiceNumbered { .. } => "InvoiceNumbered",
        }
    }
}

/// The name of counter `n`'s stream.
pub fn counter_stream(n: usize) -> Result<StreamId, ValidationError> {
    StreamId::new(format!("counter-{n}"))
}

/// The counter's last number, and whether the invoice already has one.
#[derive(Clone, Debug, Default)]
pub struct Numbering {
    last: u64,
    numbered: bool,
}

impl Fold<InvoiceEvent> for Numbering {
    fn apply(&mut self, event: &Recorded<InvoiceEvent>) {
        match event.event {
            InvoiceEvent::NumberTaken { number } => self.last = number,
            InvoiceEvent::InvoiceNumbered { .. } => self.numbered = true,
        }
    }
}

/// W12: gives an invoice the counter's next number.
///
/// Written in the plain shape a guide reader would write it — two declared streams, the state
/// folded from both, no per-stream merging and no hint that the invoice stream is new — so that
/// the workload measures what such a command costs as the counter's history grows.
pub struct NumberInvoice {
    /// The counter's stream.
    pub counter: StreamId,
    /// The invoice's stream (`invoice-<id>`), new for every command.
    pub invoice: StreamId,
}

impl Command for NumberInvoice {
    type Event = InvoiceEvent;
    type State = Numbering;
    type Streams = [StreamId; 2];

    fn streams(&self) -> [StreamId; 2] {
        [self.counter.clone(), self.invoice.clone()]
    }

    fn handle<'x>(
        &self,
        state: &Numbering,
        [counter, invoice]: [StreamRef<'x>; 2],
        out: &mut Emit<'x, InvoiceEvent>,
    ) -> Result<(), CommandError> {
        if state.numbered {
            return Err(CommandError::rejected(
                "already_numbered",
                format!("{} already has a number", self.invoice),
            ));
        }
        let number = state.last + 1;
        out.append(counter, InvoiceEvent::NumberTaken { number });
        out.append(invoice, InvoiceEvent::InvoiceNumbered { number });
        Ok(())
    }
}
