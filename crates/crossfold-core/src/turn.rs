//! Turns on contended streams: what [`EventStore::take_turn`](crate::EventStore::take_turn)
//! hands out.
//!
//! Optimistic concurrency lets every writer race and the loser read again and retry. When the
//! same streams are written from several processes at once, the losers can keep losing: a
//! writer that just won holds the freshest state and wins the next race too. A turn is the
//! other way to meet contention: writers that asked for a turn on a stream wait for it in one
//! queue, in the order they asked, and each reads and appends while the others wait — one
//! decision per turn instead of a race per attempt.

use std::any::Any;
use std::fmt;

/// A caller's turn on some streams, taken by
/// [`EventStore::take_turn`](crate::EventStore::take_turn) and held until it is dropped.
///
/// A turn orders the callers that ask for one; a store may also make appends made without a
/// turn give way to it (see [`EventStore::take_turn`](crate::EventStore::take_turn)). The
/// append's version check still decides between everyone. A store without turns hands out
/// empty ones ([`StreamTurn::none`]).
///
/// ```
/// use crossfold_core::StreamTurn;
///
/// let turn = StreamTurn::none();
/// assert!(!turn.is_held() && !turn.waited());
/// // A store's turn: something that gives the turn back when dropped, and whether taking it
/// // had to wait for another caller's.
/// let turn = StreamTurn::new(String::from("released on drop"), true);
/// assert!(turn.is_held() && turn.waited());
/// ```
#[must_use = "a turn is given back as soon as it is dropped"]
pub struct StreamTurn {
    held: Option<Box<dyn Any + Send + Sync>>,
    waited: bool,
}

impl StreamTurn {
    /// No turn: what a store without turns hands out. Holding it orders nothing.
    pub fn none() -> Self {
        Self {
            held: None,
            waited: false,
        }
    }

    /// A turn a store holds through `held`, which gives it back when dropped; `waited` says
    /// whether it was taken only after another caller's turn on one of its streams ended.
    pub fn new(held: impl Send + Sync + 'static, waited: bool) -> Self {
        Self {
            held: Some(Box::new(held)),
            waited,
        }
    }

    /// What the store holds the turn through, if it is a `T`: for the store that handed the
    /// turn out, to do work under it
    /// ([`EventStore::append_in_turn`](crate::EventStore::append_in_turn)).
    pub fn held<T: Any>(&self) -> Option<&T> {
        self.held.as_deref()?.downcast_ref()
    }

    /// Whether the store holds a turn for the caller (false for [`StreamTurn::none`]).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// Whether taking the turn waited for another caller's: the streams are contended.
    pub fn waited(&self) -> bool {
        self.waited
    }
}

impl Default for StreamTurn {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for StreamTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamTurn")
            .field("held", &self.is_held())
            .field("waited", &self.waited)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Release(Arc<AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_turn_is_given_back_when_dropped() {
        let released = Arc::new(AtomicBool::new(false));
        let turn = StreamTurn::new(Release(released.clone()), false);
        assert!(turn.is_held() && !turn.waited());
        assert!(turn.held::<Release>().is_some());
        assert!(turn.held::<String>().is_none());
        assert!(!released.load(Ordering::SeqCst));
        drop(turn);
        assert!(released.load(Ordering::SeqCst));
    }

    #[test]
    fn no_turn_holds_nothing() {
        let turn = StreamTurn::default();
        assert!(!turn.is_held() && !turn.waited());
        assert_eq!(
            format!("{turn:?}"),
            "StreamTurn { held: false, waited: false }"
        );
    }
}
