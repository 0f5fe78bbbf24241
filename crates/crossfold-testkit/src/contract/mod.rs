//! The store contract suite: every behaviour of [`EventStore`], as one public async function
//! each, run against a fresh store.
//!
//! Stores run them through [`store_contract_tests!`](crate::store_contract_tests), which turns
//! each behaviour into its own `#[test]`, so they run in parallel and fail by name. The
//! functions panic (with a message naming what differed) when the store misbehaves.
//!
//! Every function expects a store holding no events, and leaves events behind.
//!
//! The behaviours are grouped by theme, one file each: appends as a whole, expected-version
//! conditions, stream reads, the global log, subscriptions, and concurrent writers. All of them
//! are reached as `contract::NAME` and named in [`BEHAVIOURS`].
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the contract suite is test code: a failed expectation is reported by panicking"
)]

mod append;
mod concurrency;
mod conditions;
mod log;
mod reads;
mod subscriptions;

pub use append::*;
pub use concurrency::*;
pub use conditions::*;
pub use log::*;
pub use reads::*;
pub use subscriptions::*;

use std::future::Future;
use std::time::Duration;

use crossfold_core::{
    AppendRequest, Appended, EventData, EventId, EventStore, ExpectedVersion, LogFilter, Payload,
    PayloadFormat, Position, RecordedEvent, StoreError, StreamConflict, StreamId, StreamVersion,
};

/// How long one behaviour may take before it is reported as hung.
const BEHAVIOUR_DEADLINE: Duration = Duration::from_secs(120);

/// Runs a future to completion on a fresh multi-thread Tokio runtime (two workers), failing if
/// it takes longer than two minutes. Each generated contract test runs through this, so the
/// crate using the macro needs no runtime of its own; property tests of async code can use it
/// too.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start a Tokio runtime");
    runtime.block_on(async {
        match tokio::time::timeout(BEHAVIOUR_DEADLINE, future).await {
            Ok(output) => output,
            Err(_) => panic!("did not finish within {BEHAVIOUR_DEADLINE:?}"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// helpers

fn sid(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

fn event(event_type: &str, n: u64) -> EventData {
    EventData::new(event_type, Payload::json(format!(r#"{{"n":{n}}}"#)))
}

fn events(event_type: &str, count: u64) -> Vec<EventData> {
    (0..count).map(|n| event(event_type, n)).collect()
}

fn ids(events: &[RecordedEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.event_id).collect()
}

fn data_ids(events: &[EventData]) -> Vec<EventId> {
    events.iter().map(|e| e.event_id).collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version.get()).collect()
}

/// The version each stream written by an append reached, in the order the append names them.
fn written_versions(appended: &Appended) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for e in &appended.events {
        match out.iter_mut().find(|(s, _)| s == e.stream_id.as_str()) {
            Some((_, version)) => *version = e.stream_version.get(),
            None => out.push((e.stream_id.to_string(), e.stream_version.get())),
        }
    }
    out
}

/// The version the last event of a (one-stream) append reached (`EMPTY` if it wrote none).
fn last_version(appended: &Appended) -> StreamVersion {
    appended
        .events
        .last()
        .map_or(StreamVersion::EMPTY, |e| e.stream_version)
}

/// The positions an append returned, in request order.
fn positions(appended: &Appended) -> Vec<Position> {
    appended.events.iter().map(|e| e.position).collect()
}

/// `(stream, version)` pairs, for comparing with [`written_versions`].
fn sv(pairs: &[(&StreamId, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

fn v(n: u64) -> StreamVersion {
    StreamVersion::new(n)
}

/// How long an append may take to become visible in the log. Generous: on a shared PostgreSQL
/// server other sessions' transactions hold the visibility horizon back.
const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

/// Appends, and waits until the log shows the append, so that reads of the log that follow see
/// it however busy the store is.
async fn append_ok<S: EventStore>(store: &S, request: AppendRequest) -> Appended {
    let described = describe(&request);
    match store.append(request).await {
        Ok(appended) => {
            if let Some(position) = appended.position() {
                store
                    .wait_for_position(position, VISIBLE_WITHIN)
                    .await
                    .unwrap_or_else(|e| panic!("append of {described} never became visible: {e}"));
            }
            appended
        }
        Err(e) => panic!("append of {described} failed: {e}"),
    }
}

/// Waits until the log shows an append that was made without [`append_ok`] (by racing tasks).
async fn wait_visible<S: EventStore>(store: &S, appended: &Appended) {
    if let Some(position) = appended.position() {
        store
            .wait_for_position(position, VISIBLE_WITHIN)
            .await
            .unwrap_or_else(|e| panic!("an append at {position} never became visible: {e}"));
    }
}

async fn append_err<S: EventStore>(store: &S, request: AppendRequest) -> StoreError {
    let described = describe(&request);
    match store.append(request).await {
        Ok(appended) => panic!("append of {described} succeeded ({appended:?}) but should fail"),
        Err(e) => e,
    }
}

fn describe(request: &AppendRequest) -> String {
    let parts: Vec<String> = request
        .streams
        .iter()
        .map(|s| format!("{} ({}, {} events)", s.stream, s.expected, s.events.len()))
        .collect();
    format!("[{}]", parts.join(", "))
}

async fn write<S: EventStore>(store: &S, stream: &StreamId, events: Vec<EventData>) -> Appended {
    append_ok(
        store,
        AppendRequest::new().stream(stream.clone(), ExpectedVersion::Any, events),
    )
    .await
}

async fn read<S: EventStore>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, StreamVersion::EMPTY, usize::MAX)
        .await
        .unwrap()
        .events
}

async fn version_of<S: EventStore>(store: &S, stream: &StreamId) -> StreamVersion {
    store.stream_version(stream).await.unwrap()
}

/// One `read_all` call, checked for what every answer must satisfy: at most `limit` events,
/// all after `after`, in strictly increasing positions, all passing the filter. (Checking that
/// pages advance also keeps a broken store from looping a paging test forever.)
async fn read_page<S: EventStore>(
    store: &S,
    after: Position,
    limit: usize,
    filter: &LogFilter,
) -> Vec<RecordedEvent> {
    let page = store.read_all(after, limit, filter).await.unwrap();
    assert!(
        page.len() <= limit,
        "read_all after {after} with limit {limit} returned {} events",
        page.len()
    );
    if let Some(first) = page.first() {
        assert!(
            first.position > after,
            "read_all after {after} returned an event at {}",
            first.position
        );
    }
    assert_strictly_increasing(page.iter().map(|e| e.position), "read_all");
    if let Some(e) = page.iter().find(|e| !filter.matches(e)) {
        panic!(
            "read_all with {filter:?} returned {} of {} ({})",
            e.event_id, e.stream_id, e.event_type
        );
    }
    page
}

async fn whole_log<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let page = read_page(store, after, 1000, &LogFilter::all()).await;
        let Some(last) = page.last() else {
            return all;
        };
        after = last.position;
        all.extend(page);
    }
}

fn assert_conflicts(error: &StoreError, expected: &[(&StreamId, ExpectedVersion, u64)]) {
    let StoreError::Conflict(conflicts) = error else {
        panic!("expected a version conflict, got {error:?}");
    };
    let mut actual: Vec<StreamConflict> = conflicts.clone();
    actual.sort_by(|a, b| a.stream.cmp(&b.stream));
    let mut wanted: Vec<StreamConflict> = expected
        .iter()
        .map(|(s, e, a)| StreamConflict::new((*s).clone(), *e, v(*a)))
        .collect();
    wanted.sort_by(|a, b| a.stream.cmp(&b.stream));
    assert_eq!(actual, wanted, "conflict must name every failing stream");
    assert!(error.is_conflict());
}

fn assert_strictly_increasing(positions: impl IntoIterator<Item = Position>, what: &str) {
    let positions: Vec<Position> = positions.into_iter().collect();
    for pair in positions.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{what}: positions must increase strictly, got {} then {}",
            pair[0],
            pair[1]
        );
    }
}

fn json_value(payload: &Payload) -> serde_json::Value {
    serde_json::from_slice(&payload.bytes).unwrap_or_else(|e| {
        panic!(
            "stored JSON payload is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&payload.bytes)
        )
    })
}

/// Asserts that `recorded` is `data` as stored at `stream`/`version`/`position`. JSON payloads
/// compare as JSON values (a store may keep JSON in a normalized form); everything else,
/// MessagePack bytes included, must come back exactly.
fn assert_recorded_as(
    recorded: &RecordedEvent,
    data: &EventData,
    stream: &StreamId,
    version: u64,
    position: Option<Position>,
) {
    let at = format!("event {} at {stream}@{version}", data.event_id);
    assert_eq!(recorded.event_id, data.event_id, "{at}: event id");
    assert_eq!(&recorded.stream_id, stream, "{at}: stream");
    assert_eq!(recorded.stream_version, v(version), "{at}: stream version");
    if let Some(position) = position {
        assert_eq!(recorded.position, position, "{at}: position");
    }
    assert_eq!(recorded.event_type, data.event_type, "{at}: event type");
    assert_eq!(
        recorded.schema_version, data.schema_version,
        "{at}: schema version"
    );
    assert_eq!(
        recorded.payload.format, data.payload.format,
        "{at}: payload format"
    );
    match data.payload.format {
        PayloadFormat::Json => assert_eq!(
            json_value(&recorded.payload),
            json_value(&data.payload),
            "{at}: JSON payload"
        ),
        PayloadFormat::MessagePack => assert_eq!(
            recorded.payload.bytes, data.payload.bytes,
            "{at}: MessagePack payload bytes"
        ),
    }
    assert_eq!(recorded.metadata, data.metadata, "{at}: metadata");
}

/// Generates one `#[test]` per behaviour of the store contract suite (see [`contract`](crate::contract)),
/// each running on its own multi-thread Tokio runtime against a store from `$make`.
///
/// `$make` is the path of an `async fn` (no arguments) returning a fresh, empty store; it is
/// called inside the runtime, once per test, so a store that needs a connection or a new
/// database schema can create it there. The calling crate needs no Tokio dependency of its
/// own. Invoke it in a test file of its own: the generated tests take the behaviours' names
/// (listed in [`BEHAVIOURS`](crate::contract::BEHAVIOURS)).
///
/// ```
/// // In `tests/store_contract.rs` of a store's crate:
/// async fn fresh_store() -> crossfold_memory::MemoryStore {
///     // A database-backed store would connect and create a fresh schema here.
///     crossfold_memory::MemoryStore::new()
/// }
/// crossfold_testkit::store_contract_tests!(fresh_store);
/// ```
#[macro_export]
macro_rules! store_contract_tests {
    ($make:path) => {
        $crate::__with_behaviours!(__contract_tests[$make]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ([$make:path] $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::block_on(async {
                    let store = $make().await;
                    $crate::contract::$name(store).await
                })
            }
        )*
    };
}

/// Calls `$callback!([$args] behaviour, behaviour, ...)` with the name of every behaviour of
/// the contract suite: the one list both the test macro and [`BEHAVIOURS`] use. A behaviour
/// written in one of this module's files but missing here fails this crate's
/// `every_contract_behaviour_is_run` test.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_behaviours {
    ($callback:ident [$($args:tt)*]) => {
        $crate::$callback!([$($args)*]
            // append.rs
            appended_events_read_back_with_every_field,
            multi_stream_append_is_atomic,
            check_only_append_writes_nothing,
            duplicate_event_id_is_rejected_and_nothing_written,
            invalid_request_is_rejected_and_nothing_written,
            large_append_is_written_whole,
            input_no_store_can_hold_is_refused_by_every_store,
            // conditions.rs
            expected_any_always_appends,
            expected_no_stream_requires_an_empty_stream,
            expected_stream_exists_requires_events,
            expected_exact_requires_that_version,
            read_only_streams_are_checked,
            conflict_writes_nothing_and_names_every_stream,
            conflict_on_a_read_only_stream_writes_nothing,
            // reads.rs
            absent_stream_reads_as_empty,
            read_stream_paginates,
            read_streams_answers_in_request_order,
            stream_version_and_existence,
            // log.rs
            read_all_paginates,
            read_all_filters_by_stream_and_type,
            head_position_is_the_last_event,
            global_order_is_append_order,
            waiting_for_a_position_makes_an_append_readable,
            // subscriptions.rs
            wait_for_events_returns_on_events_or_timeout,
            subscription_catches_up_from_the_start,
            subscription_resumes_from_a_saved_position,
            subscription_delivers_live_events,
            filtered_subscriptions_deliver_only_matching_events,
            subscription_sees_every_event_once_under_concurrent_appends,
            system_streams_are_left_out_of_the_log_unless_asked,
            // concurrency.rs
            racing_exact_appends_on_one_stream_let_exactly_one_win,
            contending_writers_with_retries_lose_nothing,
            parallel_appends_to_different_streams_all_succeed,
            concurrent_multi_stream_appends_are_all_or_nothing,
            multi_stream_reads_are_snapshots,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __behaviour_names {
    ([] $($name:ident),* $(,)?) => {
        /// The name of every behaviour in the suite, in the order
        /// [`store_contract_tests!`](crate::store_contract_tests) generates their tests.
        pub const BEHAVIOURS: &[&str] = &[$(stringify!($name)),*];
    };
}
crate::__with_behaviours!(__behaviour_names []);
