//! What a successful execution returns.

use crossfold_core::{CodecError, DomainEvent, Json, Recorded, RecordedEvent, Upcasters};

/// What a successful execution did.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed {
    /// The events written, in the order the command emitted them (empty if it decided that
    /// nothing needed doing).
    pub events: Vec<RecordedEvent>,
    /// How many times the command ran (1 unless it met conflicts or transient failures).
    pub attempts: u32,
    /// How many of those attempts ended in a version conflict.
    pub conflicts: u32,
    /// Whether this is the outcome of an earlier execution with the same idempotency key,
    /// returned without writing anything.
    pub replayed: bool,
}

impl Executed {
    /// The written events, decoded.
    pub fn decode<E: DomainEvent>(&self) -> Result<Vec<Recorded<E>>, CodecError> {
        let upcasters = Upcasters::new();
        self.events
            .iter()
            .map(|e| upcasters.decode(&Json, e))
            .collect()
    }
}
