//! [proptest](mod@proptest) strategies for Crossfold's types, and a runner that checks a random
//! sequence of appends against the reference [`StoreModel`].
//!
//! Generated [`EventData`] get fresh ids from [`EventId::generate`] each time a value is built,
//! so every generated event is distinct from every other; everything else follows proptest's
//! seed and shrinks.
//!
//! ```
//! use crossfold_testkit::strategies::{append_steps, check_append_steps, stream_pool};
//! use proptest::prelude::*;
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(8))]
//!     fn memory_store_behaves_like_the_model(steps in append_steps(stream_pool(3), 1..10)) {
//!         let store = crossfold_memory::MemoryStore::new();
//!         crossfold_testkit::block_on(check_append_steps(&store, &steps))
//!             .map_err(TestCaseError::fail)?;
//!     }
//! }
//! # memory_store_behaves_like_the_model();
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crossfold_core::{
    AppendRequest, AppendStream, Codec, EventData, EventId, EventStore, EventType, ExpectedVersion,
    Json, MessagePack, Metadata, Payload, StreamId, StreamVersion, Timestamp,
};
use proptest::collection::{SizeRange, btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};

use crate::model::StoreModel;

/// Valid stream ids of many shapes: plain names, inner spaces and punctuation, non-ASCII.
pub fn stream_id() -> impl Strategy<Value = StreamId> {
    prop_oneof![
        "[a-z]{1,10}-[0-9]{1,4}",
        "[A-Za-z0-9][A-Za-z0-9 ._:/#-]{0,40}[A-Za-z0-9]",
        "[a-zäöüß✓λ]{1,12}",
    ]
    .prop_filter_map("not a valid stream id", |name| StreamId::new(name).ok())
}

/// `size` distinct stream ids (`stream-0`, `stream-1`, ...): a small pool makes generated appends
/// meet on the same streams.
pub fn stream_pool(size: usize) -> Vec<StreamId> {
    (0..size)
        .filter_map(|i| StreamId::compose("stream", i).ok())
        .collect()
}

/// A stream id from `pool`.
pub fn stream_from(pool: Vec<StreamId>) -> impl Strategy<Value = StreamId> {
    select(pool)
}

/// An event type name from a small set.
pub fn event_type() -> impl Strategy<Value = EventType> {
    select(&["Created", "Renamed", "Deposited", "Withdrawn", "Closed"][..])
        .prop_map(EventType::from_static)
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9 äöü✓]{0,12}".prop_map(serde_json::Value::from),
    ];
    btree_map("[a-z]{1,8}", leaf, 0..5).prop_map(|map| {
        serde_json::Value::Object(map.into_iter().collect::<serde_json::Map<_, _>>())
    })
}

/// A payload: a small JSON object, encoded as JSON or as MessagePack.
pub fn payload() -> impl Strategy<Value = Payload> {
    (json_value(), any::<bool>()).prop_filter_map("unencodable", |(value, packed)| {
        if packed {
            MessagePack.encode(&value).ok()
        } else {
            Json.encode(&value).ok()
        }
    })
}

/// Metadata with every field sometimes set and sometimes not.
pub fn metadata() -> impl Strategy<Value = Arc<Metadata>> {
    (
        0i64..4_102_444_800_000_000,
        any::<bool>(),
        any::<bool>(),
        proptest::option::of("[a-z]{1,8}:[a-z0-9]{1,8}"),
        btree_map("[a-z]{1,6}", any::<i32>(), 0..3),
    )
        .prop_map(|(micros, correlated, caused, actor, custom)| {
            Arc::new(Metadata {
                recorded_at: Timestamp::from_unix_micros(micros),
                correlation_id: correlated.then(|| EventId::generate().as_uuid()),
                causation_id: caused.then(|| EventId::generate().as_uuid()),
                actor,
                custom: custom
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::from(v)))
                    .collect::<BTreeMap<_, _>>(),
            })
        })
}

/// An event ready to append, with a fresh id.
pub fn event_data() -> impl Strategy<Value = EventData> {
    (event_type(), 0u16..4, payload(), metadata()).prop_map(
        |(event_type, schema_version, payload, metadata)| EventData {
            event_id: EventId::generate(),
            event_type,
            schema_version,
            payload,
            metadata,
        },
    )
}

/// A batch of events (as one stream of one append would carry).
pub fn event_batch(size: impl Into<SizeRange>) -> impl Strategy<Value = Vec<EventData>> {
    vec(event_data(), size)
}

/// Any [`ExpectedVersion`], with small exact versions.
pub fn expected_version() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::StreamExists),
        (0u64..6).prop_map(|n| ExpectedVersion::Exact(StreamVersion::new(n))),
    ]
}

/// The condition an [`AppendStep`] puts on a stream, chosen relative to the stream's version at
/// the time the step runs, so that generated sequences both succeed and conflict often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionChoice {
    /// [`ExpectedVersion::Any`].
    Any,
    /// [`ExpectedVersion::NoStream`].
    NoStream,
    /// [`ExpectedVersion::StreamExists`].
    StreamExists,
    /// `Exact` of the stream's current version: passes.
    Current,
    /// `Exact` of a version the stream is not at: conflicts.
    Stale,
    /// This exact version, whatever the stream's.
    Exact(StreamVersion),
}

impl VersionChoice {
    /// The condition for a stream currently at `current`.
    pub fn resolve(self, current: StreamVersion) -> ExpectedVersion {
        match self {
            VersionChoice::Any => ExpectedVersion::Any,
            VersionChoice::NoStream => ExpectedVersion::NoStream,
            VersionChoice::StreamExists => ExpectedVersion::StreamExists,
            VersionChoice::Current => ExpectedVersion::Exact(current),
            VersionChoice::Stale => ExpectedVersion::Exact(if current.is_empty() {
                StreamVersion::new(1)
            } else {
                StreamVersion::new(current.get() - 1)
            }),
            VersionChoice::Exact(v) => ExpectedVersion::Exact(v),
        }
    }
}

/// A [`VersionChoice`], mostly ones that pass.
pub fn version_choice() -> impl Strategy<Value = VersionChoice> {
    prop_oneof![
        3 => Just(VersionChoice::Current),
        2 => Just(VersionChoice::Any),
        1 => Just(VersionChoice::NoStream),
        1 => Just(VersionChoice::StreamExists),
        1 => Just(VersionChoice::Stale),
        1 => (0u64..4).prop_map(|n| VersionChoice::Exact(StreamVersion::new(n))),
    ]
}

/// One stream of an [`AppendStep`].
#[derive(Clone, Debug)]
pub struct StepStream {
    /// The stream.
    pub stream: StreamId,
    /// Its condition.
    pub expected: VersionChoice,
    /// Its new events (none: the stream is only checked).
    pub events: Vec<EventData>,
}

/// One append of a generated sequence, resolved against the store's state when it runs.
#[derive(Clone, Debug)]
pub struct AppendStep {
    /// The streams, each named once.
    pub streams: Vec<StepStream>,
    /// Replace the first event's id by that of an already stored event (picked by this index),
    /// to provoke a duplicate.
    pub reuse_stored_id: Option<Index>,
    /// Name the first stream a second time, to provoke an invalid request.
    pub repeat_stream: bool,
}

impl AppendStep {
    /// The request this step makes against a store in the state of `model`.
    pub fn resolve(&self, model: &StoreModel) -> AppendRequest {
        let mut streams: Vec<AppendStream> = self
            .streams
            .iter()
            .map(|s| AppendStream {
                stream: s.stream.clone(),
                expected: s.expected.resolve(model.version(&s.stream)),
                events: s.events.clone(),
            })
            .collect();
        if let Some(index) = self.reuse_stored_id
            && !model.log().is_empty()
            && let Some(first) = streams.iter_mut().find_map(|s| s.events.first_mut())
        {
            first.event_id = model.log()[index.index(model.log().len())].data.event_id;
        }
        if self.repeat_stream
            && let Some(first) = streams.first()
        {
            let again = AppendStream {
                stream: first.stream.clone(),
                expected: ExpectedVersion::Any,
                events: Vec::new(),
            };
            streams.push(again);
        }
        AppendRequest { streams }
    }
}

/// One append step over 1–3 distinct streams of `pool`, each with 0–3 events.
pub fn append_step(pool: Vec<StreamId>) -> impl Strategy<Value = AppendStep> {
    let most = pool.len().clamp(1, 3);
    (
        subsequence(pool, 1..=most).prop_shuffle(),
        vec((version_choice(), event_batch(0..=3)), most),
        proptest::option::weighted(0.1, any::<Index>()),
        proptest::bool::weighted(0.05),
    )
        .prop_map(
            |(streams, specs, reuse_stored_id, repeat_stream)| AppendStep {
                streams: streams
                    .into_iter()
                    .zip(specs)
                    .map(|(stream, (expected, events))| StepStream {
                        stream,
                        expected,
                        events,
                    })
                    .collect(),
                reuse_stored_id,
                repeat_stream,
            },
        )
}

/// A sequence of append steps over the streams of `pool`.
pub fn append_steps(
    pool: Vec<StreamId>,
    length: impl Into<SizeRange>,
) -> impl Strategy<Value = Vec<AppendStep>> {
    vec(append_step(pool), length)
}

/// Runs `steps` against `store` (which must start empty) and the reference model side by side:
/// every append must answer as the model does (same versions, same conflicting streams, same
/// duplicate id, same refusal), and in the end the store must hold exactly the model's events.
/// `Err` describes the first difference.
pub async fn check_append_steps<S: EventStore>(
    store: &S,
    steps: &[AppendStep],
) -> Result<(), String> {
    let mut model = StoreModel::new();
    for (i, step) in steps.iter().enumerate() {
        let request = step.resolve(&model);
        let expected = model.append(&request);
        let actual = store.append(request).await;
        StoreModel::compare(&expected, &actual).map_err(|e| format!("step {i}: {e}"))?;
    }
    model.check_store(store).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn generated_values_are_valid() {
        let mut runner = TestRunner::deterministic();
        for _ in 0..50 {
            let id = stream_id().new_tree(&mut runner).unwrap().current();
            assert!(StreamId::new(id.as_str()).is_ok());
            let step = append_step(stream_pool(4))
                .new_tree(&mut runner)
                .unwrap()
                .current();
            assert!((1..=3).contains(&step.streams.len()));
            let request = step.resolve(&StoreModel::new());
            if !step.repeat_stream {
                assert!(request.validate().is_ok());
            }
        }
    }

    #[test]
    fn choices_resolve_relative_to_the_current_version() {
        let three = StreamVersion::new(3);
        assert_eq!(
            VersionChoice::Current.resolve(three),
            ExpectedVersion::Exact(three)
        );
        assert!(!VersionChoice::Stale.resolve(three).is_met_by(three));
        assert!(
            !VersionChoice::Stale
                .resolve(StreamVersion::EMPTY)
                .is_met_by(StreamVersion::EMPTY)
        );
    }
}
