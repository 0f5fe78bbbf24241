//! A reference model of an event store: the obviously correct, single-threaded behaviour that a
//! real store's results are compared with in property tests.

use std::collections::{HashMap, HashSet};

use crossfold_core::{
    AppendRequest, EventData, EventId, EventStore, LogFilter, Position, StoreError, StreamConflict,
    StreamId, StreamVersion,
};

/// What the model says an append must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelOutcome {
    /// It succeeds, writing these events (stream, version, id), in request order.
    Appended(Vec<(StreamId, StreamVersion, EventId)>),
    /// It fails on these streams (request order) and writes nothing.
    Conflict(Vec<StreamConflict>),
    /// It fails because this event id (the first stored one, in request order) is stored.
    DuplicateEvent(EventId),
    /// The request is malformed.
    InvalidRequest,
}

/// One event as the model stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEvent {
    /// Its stream.
    pub stream: StreamId,
    /// Its version in that stream.
    pub version: StreamVersion,
    /// The event as appended.
    pub data: EventData,
}

/// An event store reduced to its rules: streams of events, a log in append order, and the
/// append conditions.
///
/// Error precedence: a malformed request is refused first, then a failed condition, then a
/// duplicate id.
#[derive(Clone, Debug, Default)]
pub struct StoreModel {
    versions: HashMap<StreamId, StreamVersion>,
    ids: HashSet<EventId>,
    log: Vec<ModelEvent>,
}

impl StoreModel {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream's version.
    pub fn version(&self, stream: &StreamId) -> StreamVersion {
        self.versions.get(stream).copied().unwrap_or_default()
    }

    /// Every event, in append order.
    pub fn log(&self) -> &[ModelEvent] {
        &self.log
    }

    /// Applies an append and says what it must do.
    pub fn append(&mut self, request: &AppendRequest) -> ModelOutcome {
        if request.validate().is_err() {
            return ModelOutcome::InvalidRequest;
        }
        let conflicts: Vec<StreamConflict> = request
            .streams
            .iter()
            .filter_map(|s| {
                let actual = self.version(&s.stream);
                (!s.expected.is_met_by(actual))
                    .then(|| StreamConflict::new(s.stream.clone(), s.expected, actual))
            })
            .collect();
        if !conflicts.is_empty() {
            return ModelOutcome::Conflict(conflicts);
        }
        if let Some(stored) = request
            .streams
            .iter()
            .flat_map(|s| &s.events)
            .find(|e| self.ids.contains(&e.event_id))
        {
            return ModelOutcome::DuplicateEvent(stored.event_id);
        }
        let mut written = Vec::with_capacity(request.event_count());
        for s in &request.streams {
            let mut version = self.version(&s.stream);
            for data in &s.events {
                version = version.next();
                self.ids.insert(data.event_id);
                written.push((s.stream.clone(), version, data.event_id));
                self.log.push(ModelEvent {
                    stream: s.stream.clone(),
                    version,
                    data: data.clone(),
                });
            }
            if !s.events.is_empty() {
                self.versions.insert(s.stream.clone(), version);
            }
        }
        ModelOutcome::Appended(written)
    }

    /// Compares a store's answer to an append with the model's. `Err` explains the difference.
    pub fn compare(
        expected: &ModelOutcome,
        actual: &Result<crossfold_core::Appended, StoreError>,
    ) -> Result<(), String> {
        let matches = match (expected, actual) {
            (ModelOutcome::Appended(written), Ok(appended)) => {
                appended.events.len() == written.len()
                    && appended.events.iter().zip(written).all(|(e, (s, v, id))| {
                        e.stream_id == *s && e.stream_version == *v && e.event_id == *id
                    })
                    && appended
                        .events
                        .windows(2)
                        .all(|w| w[0].position < w[1].position)
            }
            (ModelOutcome::Conflict(wanted), Err(StoreError::Conflict(got))) => {
                let mut wanted = wanted.clone();
                let mut got = got.clone();
                wanted.sort_by(|a, b| a.stream.cmp(&b.stream));
                got.sort_by(|a, b| a.stream.cmp(&b.stream));
                wanted == got
            }
            (ModelOutcome::DuplicateEvent(id), Err(StoreError::DuplicateEvent(got))) => id == got,
            (ModelOutcome::InvalidRequest, Err(StoreError::InvalidRequest(_))) => true,
            _ => false,
        };
        if matches {
            Ok(())
        } else {
            Err(format!("expected {expected:?}, store answered {actual:?}"))
        }
    }

    /// Checks that `store` holds exactly the model's events: the same log in the same order, and
    /// every stream with the same events and version. `Err` explains the first difference.
    pub async fn check_store<S: EventStore>(&self, store: &S) -> Result<(), String> {
        let mut log = Vec::new();
        let mut after = Position::START;
        loop {
            let page = store
                .read_all(after, 500, &LogFilter::all())
                .await
                .map_err(|e| format!("read_all failed: {e}"))?;
            if page.first().is_some_and(|e| e.position <= after) {
                return Err(format!(
                    "read_all after {after} returned an event at or before it"
                ));
            }
            let Some(last) = page.last() else { break };
            after = last.position;
            log.extend(page);
        }
        if log.len() != self.log.len() {
            return Err(format!(
                "the store's log holds {} events, the model's {}",
                log.len(),
                self.log.len()
            ));
        }
        for (i, (stored, model)) in log.iter().zip(&self.log).enumerate() {
            let same = stored.event_id == model.data.event_id
                && stored.stream_id == model.stream
                && stored.stream_version == model.version
                && stored.event_type == model.data.event_type
                && stored.schema_version == model.data.schema_version
                && stored.payload.format == model.data.payload.format
                && stored.metadata == model.data.metadata;
            if !same {
                return Err(format!(
                    "log entry {i} differs: store has {} at {}@{}, model has {} at {}@{}",
                    stored.event_id,
                    stored.stream_id,
                    stored.stream_version,
                    model.data.event_id,
                    model.stream,
                    model.version
                ));
            }
        }
        for (stream, version) in &self.versions {
            let read = store
                .read_stream(stream, StreamVersion::EMPTY, usize::MAX)
                .await
                .map_err(|e| format!("read_stream failed: {e}"))?;
            let expected: Vec<EventId> = self
                .log
                .iter()
                .filter(|e| &e.stream == stream)
                .map(|e| e.data.event_id)
                .collect();
            let got: Vec<EventId> = read.events.iter().map(|e| e.event_id).collect();
            if read.version != *version || got != expected {
                return Err(format!(
                    "stream {stream}: store at version {} with {got:?}, model at {version} with {expected:?}",
                    read.version
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{ExpectedVersion, Payload};

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    fn e() -> EventData {
        EventData::new("E", Payload::json("{}"))
    }

    #[test]
    fn follows_the_append_rules() {
        let mut model = StoreModel::new();
        let (a, b) = (sid("a"), sid("b"));
        let (first, second) = (e(), e());
        assert_eq!(
            model.append(
                &AppendRequest::new()
                    .stream(
                        a.clone(),
                        ExpectedVersion::NoStream,
                        vec![first.clone(), second.clone()]
                    )
                    .check(b.clone(), ExpectedVersion::NoStream)
            ),
            ModelOutcome::Appended(vec![
                (a.clone(), StreamVersion::new(1), first.event_id),
                (a.clone(), StreamVersion::new(2), second.event_id),
            ])
        );
        assert_eq!(
            model.append(
                &AppendRequest::new()
                    .stream(
                        a.clone(),
                        ExpectedVersion::Exact(StreamVersion::new(1)),
                        vec![e()]
                    )
                    .check(b.clone(), ExpectedVersion::StreamExists)
            ),
            ModelOutcome::Conflict(vec![
                StreamConflict::new(
                    a.clone(),
                    ExpectedVersion::Exact(StreamVersion::new(1)),
                    StreamVersion::new(2)
                ),
                StreamConflict::new(
                    b.clone(),
                    ExpectedVersion::StreamExists,
                    StreamVersion::EMPTY
                )
            ])
        );
        assert_eq!(
            model.append(&AppendRequest::new().stream(
                b.clone(),
                ExpectedVersion::Any,
                vec![first.clone()]
            )),
            ModelOutcome::DuplicateEvent(first.event_id)
        );
        assert_eq!(
            model.append(
                &AppendRequest::new()
                    .check(b.clone(), ExpectedVersion::Any)
                    .check(b.clone(), ExpectedVersion::Any)
            ),
            ModelOutcome::InvalidRequest
        );
        assert_eq!(model.log().len(), 2);
        assert_eq!(model.version(&b), StreamVersion::EMPTY);
    }
}
