//! The fold: how a state is built from events. It belongs to the state, not to the commands
//! that decide on it, so every command over one state shares a single fold.

use crate::event::Recorded;

/// A state built by folding events of type `E` in: a command's view of the streams it reads
/// ([`Command::State`](crate::Command::State)).
///
/// The fold is a property of the state: commands over the same state share it, and the
/// executor caches folded states (by command type) without asking the command anything. A
/// state must depend only on the events folded into it.
///
/// ```
/// use crossfold_core::{Fold, Recorded};
///
/// enum CounterEvent { Incremented, Reset }
///
/// /// How many times a counter was incremented since it was last reset.
/// #[derive(Clone, Default)]
/// struct Count(u32);
///
/// impl Fold<CounterEvent> for Count {
///     fn apply(&mut self, event: &Recorded<CounterEvent>) {
///         match event.event {
///             CounterEvent::Incremented => self.0 += 1,
///             CounterEvent::Reset => self.0 = 0,
///         }
///     }
/// }
/// ```
///
/// A command that needs no state uses `()`, which folds every event into nothing.
pub trait Fold<E>: Default + Clone + Send + Sync + 'static {
    /// Declares that the state is a union of independent per-stream parts: every event changes
    /// only the part that belongs to its own stream, so folding each stream alone and
    /// [`merge`](Self::merge)-ing the results gives the same state as folding the merged
    /// events. The executor then caches one folded part per stream and combines parts, instead
    /// of refolding whole histories for every new combination of streams (a transfer between
    /// two accounts that never met before costs no read). `CommandTest` in the testkit checks
    /// the claim on every scenario it runs.
    const PER_STREAM: bool = false;

    /// Folds one event in. Events of all the streams a command reads arrive merged in
    /// event-id order.
    fn apply(&mut self, event: &Recorded<E>);

    /// Merges `part` — the state folded from one stream's events alone — into `self`. Only
    /// called when [`PER_STREAM`](Self::PER_STREAM) is true.
    fn merge(&mut self, part: &Self) {
        let _ = part;
    }
}

/// The state of a command that needs none: every event folds into nothing.
impl<E> Fold<E> for () {
    fn apply(&mut self, _event: &Recorded<E>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Metadata, Recorded};
    use crate::id::{EventId, StreamId};
    use crate::version::{Position, StreamVersion};

    #[test]
    fn the_state_of_a_command_without_one_folds_events_into_nothing() {
        let event = Recorded {
            event: 7_u8,
            event_id: EventId::generate(),
            stream_id: StreamId::new("any").unwrap(),
            stream_version: StreamVersion::new(1),
            position: Position::new(1, 0),
            metadata: std::sync::Arc::new(Metadata::now()),
        };
        let mut state = ();
        state.apply(&event);
        Fold::<u8>::merge(&mut state, &());
    }

    // Commands with no state keep the executor's per-combination caches, as before `Fold`.
    const _: () = assert!(!<() as Fold<u8>>::PER_STREAM);
}
