//! Appends in doubt: an append that failed without telling whether it committed (the connection
//! dropped after the request was sent, a time limit struck while it ran) is found out from the
//! store before anything is decided again, and looked at one last time when the retry policy
//! gives up. The append is atomic and its event ids are unique, so the first stream it wrote
//! tells: if the event after the version it expected there is one of its own, it committed; if
//! it is another, it never will.

use crossfold_core::{EventId, EventStore, RecordedEvent, StoreError, StreamRead};

use crate::error::Error;
use crate::executed::Executed;
use crate::load::Working;

/// Whether a failed append may have committed. A conflict, a refused request, contention
/// (the store rolled the append back) and a permanent failure all mean nothing was written;
/// a lost connection or a time limit may strike after the store committed.
pub(crate) fn may_have_committed(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_) | StoreError::Timeout(_))
}

/// An append that failed without telling whether it committed.
pub(crate) struct InDoubt {
    /// The streams it wrote: the events after the version it expected, as many as it wrote.
    written: Vec<StreamRead>,
    /// Its events' ids, in the order they were emitted (rising).
    ids: Vec<EventId>,
    /// Whether the store has been asked, and showed its place free.
    checked: bool,
}

impl InDoubt {
    pub(crate) fn new(written: Vec<StreamRead>, ids: Vec<EventId>) -> Self {
        Self {
            written,
            ids,
            checked: false,
        }
    }

    /// Whether `work` shows the first stream this append wrote still at the version it
    /// expected there.
    fn free_in<St>(&self, work: &Working<St>) -> bool {
        self.written
            .first()
            .is_some_and(|first| work.shows(&first.stream, first.after))
    }
}

/// What the store says about an append in doubt.
enum Settled {
    /// It committed: its events as stored, in the order they were emitted.
    Committed(Vec<RecordedEvent>),
    /// Another event holds its place: it did not commit, and never will.
    Lost,
    /// Its place is still free: it has not committed (yet — a request still running on a
    /// server that lost its client may commit later).
    Open,
}

/// The appends of one execution whose outcome is not known yet, and the error that left the
/// last of them in doubt.
#[derive(Default)]
pub(crate) struct Doubts {
    appends: Vec<InDoubt>,
    error: Option<StoreError>,
}

impl Doubts {
    pub(crate) fn add(&mut self, doubt: InDoubt) {
        self.appends.push(doubt);
    }

    /// Remembers the store error that left the last append in doubt.
    pub(crate) fn left_open_by(&mut self, error: StoreError) {
        self.error = Some(error);
    }

    /// After the view was caught up in one snapshot: an append in doubt whose first stream
    /// this snapshot shows still at the version it expected had not committed when the
    /// snapshot was taken, so the read doubles as its first look.
    pub(crate) fn note_free<St>(&mut self, work: &Working<St>) {
        for doubt in &mut self.appends {
            doubt.checked |= doubt.free_in(work);
        }
    }

    /// Settles the appends in doubt before a decision on `work`: the committed one's events,
    /// if one committed. Each is looked up in the store once. After that, one whose first
    /// stream is still at the version it expected in this view needs no further look — a
    /// decision on this view expects that version too, so at most one of the two can commit —
    /// but a view that shows the stream moved (after a conflict) may hold its events, late
    /// committed, and it is looked up again.
    pub(crate) async fn settle_before_deciding<S: EventStore, St>(
        &mut self,
        store: &S,
        work: &mut Working<St>,
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        let mut i = 0;
        while i < self.appends.len() {
            let doubt = &self.appends[i];
            if doubt.checked && doubt.free_in(work) {
                i += 1;
                continue;
            }
            match settle(store, doubt).await? {
                Settled::Committed(events) => return Ok(Some(events)),
                Settled::Lost => {
                    self.appends.swap_remove(i);
                    // Another command took its place: the view is behind.
                    work.verified = false;
                }
                Settled::Open => {
                    self.appends[i].checked = true;
                    i += 1;
                }
            }
        }
        Ok(None)
    }

    /// The retry policy gave up (or a permanent failure struck) while appends of this
    /// execution were in doubt: a last look tells whether one committed (then that is the
    /// outcome), whether none ever will (then `error` stands), or that nobody can tell.
    pub(crate) async fn give_up<S: EventStore>(
        self,
        store: &S,
        error: Error,
        attempts: u32,
    ) -> Result<Executed, Error> {
        let mut unreachable = None;
        let mut open = false;
        for doubt in &self.appends {
            match settle(store, doubt).await {
                Ok(Settled::Committed(events)) => {
                    return Ok(Executed {
                        events,
                        attempts,
                        conflicts: 0,
                        replayed: false,
                    });
                }
                Ok(Settled::Lost) => {}
                Ok(Settled::Open) => open = true,
                Err(e) => {
                    open = true;
                    unreachable = Some(e);
                }
            }
        }
        match (error, open) {
            // Every append in doubt is known not to have committed: the error is the outcome.
            (Error::OutcomeUnknown { source, attempts }, false) => {
                Err(Error::store(source, attempts))
            }
            (error, false) => Err(error),
            (error, true) => {
                let source = match (unreachable, error) {
                    (Some(read), _) => read,
                    (None, Error::OutcomeUnknown { source, .. }) => source,
                    (None, _) => self.error.unwrap_or_else(|| {
                        StoreError::Unavailable("an earlier append's outcome is unknown".into())
                    }),
                };
                Err(Error::OutcomeUnknown { source, attempts })
            }
        }
    }
}

/// Asks the store whether an append in doubt committed.
async fn settle<S: EventStore>(store: &S, doubt: &InDoubt) -> Result<Settled, StoreError> {
    let read = store.read_streams(&doubt.written).await?;
    let decided_by = read.first().and_then(|s| s.events.first());
    match decided_by {
        None => Ok(Settled::Open),
        Some(event) if doubt.ids.contains(&event.event_id) => {
            let mut events: Vec<RecordedEvent> = read.into_iter().flat_map(|s| s.events).collect();
            events.sort_unstable_by_key(|e| e.event_id);
            let whole = events.len() == doubt.ids.len()
                && events
                    .iter()
                    .zip(&doubt.ids)
                    .all(|(e, id)| e.event_id == *id);
            if whole {
                Ok(Settled::Committed(events))
            } else {
                Err(StoreError::Backend(
                    "the store holds only part of an atomic append".into(),
                ))
            }
        }
        Some(_) => Ok(Settled::Lost),
    }
}
