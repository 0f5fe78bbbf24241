//! One decide-and-append: the decision on the view, new event ids above the causal floor, the
//! request (one entry per stream read, plus the idempotency marker), and the store's answer
//! read back into the view.

use std::sync::Arc;

use crossfold_core::{
    AppendRequest, AppendStream, Command, EventId, EventStore, ExpectedVersion, Fold, Metadata,
    Recorded, RecordedEvent, StoreError, StreamConflict, StreamId, StreamRead, StreamTurn,
    Timestamp, encode_events,
};

use crate::context::ExecutionContext;
use crate::doubt::{InDoubt, may_have_committed};
use crate::error::Error;
use crate::executed::Executed;
use crate::idempotency;
use crate::load::{self, Backend, Refresh, Working};

/// Why an attempt did not stand.
pub(crate) enum Failure {
    Conflict(Vec<StreamConflict>),
    /// A refusal or no-op was decided on a state that turned out to be behind.
    Stale {
        rebuild: bool,
    },
    /// The idempotency marker exists: an earlier execution with the same key wrote it.
    Replay(StreamId),
    /// The store failed, and nothing was written.
    Transient(StoreError),
    /// The append failed in a way that does not tell whether it committed.
    InDoubt(Box<(StoreError, InDoubt)>),
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(value: Error) -> Self {
        match value {
            Error::Store { source, .. } if source.is_transient() => Failure::Transient(source),
            other => Failure::Fatal(other),
        }
    }
}

/// What every attempt of one execution writes besides the command's events: the metadata the
/// events carry, and the idempotency marker when the context has a key.
pub(crate) struct Envelope {
    pub(crate) metadata: Arc<Metadata>,
    pub(crate) marker: Option<StreamId>,
}

impl Envelope {
    pub(crate) fn new(context: &ExecutionContext, marker: Option<StreamId>) -> Self {
        Self {
            metadata: Arc::new(metadata(context)),
            marker,
        }
    }
}

fn metadata(context: &ExecutionContext) -> Metadata {
    Metadata {
        recorded_at: Timestamp::now(),
        correlation_id: Some(
            context
                .correlation_id
                .unwrap_or_else(|| EventId::generate().as_uuid()),
        ),
        causation_id: context.causation_id,
        actor: context.actor.as_ref().map(|a| a.id.clone()),
        custom: context.custom.clone(),
    }
}

/// One decide-and-append, under `turn` when the execution holds one. On success `work`
/// reflects the events written.
pub(crate) async fn decide_and_append<B: Backend, Cmd: Command>(
    backend: &B,
    command: &Cmd,
    work: &mut Working<Cmd::State>,
    envelope: &Envelope,
    attempts: u32,
    turn: Option<&StreamTurn>,
) -> Result<Executed, Failure> {
    let decided = work.read_set.decide(command, work.decision_state());
    let decided = match decided {
        Ok(events) if !events.is_empty() => events,
        refusal_or_nothing => {
            // A refusal or a no-op made on a cached state must not stand if the state was
            // behind: confirm the versions (reading any new events) before answering.
            if !work.verified {
                match load::refresh(backend, command, work, None).await? {
                    Refresh::Unchanged => {}
                    Refresh::Changed => return Err(Failure::Stale { rebuild: false }),
                    Refresh::Rebuild => return Err(Failure::Stale { rebuild: true }),
                }
            }
            return match refusal_or_nothing {
                Err(error) => Err(Failure::Fatal(Error::from(error))),
                Ok(_) => Ok(Executed {
                    events: Vec::new(),
                    attempts,
                    conflicts: 0,
                    replayed: false,
                }),
            };
        }
    };

    // New ids rise above everything the command read, and above each other in the order
    // the events were emitted.
    let mut event_ids: Vec<EventId> = Vec::with_capacity(decided.len());
    let mut last_id = work.floor;
    for _ in &decided {
        let id = match last_id {
            Some(floor) => EventId::generate_after(floor),
            None => EventId::generate(),
        };
        last_id = Some(id);
        event_ids.push(id);
    }
    // One request entry per stream read: read-only streams carry their version as a
    // condition and no events.
    let ids = work.read_set.ids();
    let mut streams: Vec<AppendStream> = Vec::with_capacity(ids.len() + 1);
    streams.extend(
        ids.iter()
            .zip(&work.versions)
            .map(|(id, version)| AppendStream {
                stream: id.clone(),
                expected: ExpectedVersion::Exact(*version),
                events: Vec::new(),
            }),
    );
    let mut targets = decided.iter().map(|(stream, _)| *stream);
    encode_events(
        backend.codec(),
        event_ids
            .iter()
            .copied()
            .zip(decided.iter().map(|(_, e)| e)),
        &envelope.metadata,
        |data| {
            if let Some(stream) = targets.next() {
                streams[stream].events.push(data);
            }
        },
    )
    .map_err(|e| Failure::Fatal(Error::Codec(e)))?;
    let marker = envelope.marker.as_ref();
    if let Some(marker) = marker {
        streams.push(
            idempotency::marker_append(
                command.name(),
                marker,
                &streams,
                &work.versions,
                &envelope.metadata,
            )
            .map_err(|e| Failure::Fatal(Error::Codec(e)))?,
        );
    }

    let request = AppendRequest { streams };
    let appended = match turn {
        Some(turn) => backend.store().append_in_turn(turn, request).await,
        None => backend.store().append(request).await,
    };
    let appended = match appended {
        Ok(appended) => appended,
        Err(StoreError::Conflict(conflicts)) => {
            if let Some(marker) = marker
                && conflicts
                    .iter()
                    .any(|c| &c.stream == marker && !c.turn_held)
            {
                return Err(Failure::Replay(marker.clone()));
            }
            return Err(Failure::Conflict(conflicts));
        }
        Err(error) if may_have_committed(&error) => {
            // Built only now, from what the request was made of, so that an append that
            // succeeds pays nothing for it.
            let written = ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| {
                    let count = decided.iter().filter(|(stream, _)| *stream == i).count();
                    (count > 0).then(|| StreamRead {
                        stream: id.clone(),
                        after: work.versions[i],
                        limit: count,
                    })
                })
                .collect();
            let doubt = InDoubt::new(written, event_ids);
            return Err(Failure::InDoubt(Box::new((error, doubt))));
        }
        Err(error) if error.is_transient() => return Err(Failure::Transient(error)),
        Err(error) => return Err(Failure::Fatal(Error::store(error, attempts))),
    };

    // The events as stored, back in the order they were emitted (their ids rise in it).
    let mut recorded: Vec<RecordedEvent> = appended
        .into_events()
        .into_iter()
        .filter(|e| Some(&e.stream_id) != marker)
        .collect();
    recorded.sort_unstable_by_key(|e| e.event_id);
    let answered = recorded.len() == decided.len()
        && recorded
            .iter()
            .zip(&decided)
            .zip(&event_ids)
            .all(|((e, (stream, _)), id)| e.event_id == *id && e.stream_id == ids[*stream]);
    if !answered {
        return Err(Failure::Fatal(Error::store(
            StoreError::Backend("the store's answer does not list the events appended".into()),
            attempts,
        )));
    }

    // Record what was written: the streams' cached events, the new state, the versions.
    if work.parts.is_none() {
        for (i, id) in ids.iter().enumerate() {
            let events: Vec<RecordedEvent> = recorded
                .iter()
                .filter(|e| e.stream_id == *id)
                .cloned()
                .collect();
            if !events.is_empty() {
                backend
                    .loader()
                    .extend_cached_stream(id, work.versions[i], events);
            }
        }
    }
    for ((stream, event), raw) in decided.into_iter().zip(&recorded) {
        work.versions[stream] = raw.stream_version;
        let event = Recorded::new(event, raw);
        match work.parts.as_mut() {
            Some(parts) => {
                parts[stream].state.apply(&event);
                parts[stream].floor = Some(raw.event_id);
            }
            None => {
                work.state.apply(&event);
                work.track_base(stream, &event, Fold::apply);
            }
        }
    }
    work.floor = last_id.or(work.floor);
    work.verified = true;
    Ok(Executed {
        events: recorded,
        attempts,
        conflicts: 0,
        replayed: false,
    })
}
