//! A stored row the store cannot decode — an event id that is not a UUIDv7, metadata lacking
//! a field — fails reads with a typed error that names its position, and an operator can
//! quarantine it, after which every read (log, stream, subscription) skips it instead of
//! stopping there for good.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{events, fresh_store, raw_client, sid};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion, LogFilter, Position, StoreError};
use crossfold_postgres::PgUndecodableEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_names_its_position_and_can_be_quarantined() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    store
        .append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 1)))
        .await
        .unwrap();
    // Written by hand, past the store: a version-4 id, then metadata without `recorded_at`.
    raw_client()
        .await
        .batch_execute(&format!(
            "INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, \
                 schema_version, payload_json, metadata) \
             VALUES ('6f1c1f7e-2a8b-4c1e-9d3a-0d8b7f5e4a21', 's', 2, 'Bad', 1, '{{}}', \
                     '{{\"recorded_at\": 1}}'); \
             INSERT INTO {schema}.events (event_id, stream_id, stream_version, event_type, \
                 schema_version, payload_json, metadata) \
             VALUES ('0190b4d2-0000-7000-8000-0000000000bb', 's', 3, 'Bare', 1, '{{}}', '{{}}'); \
             UPDATE {schema}.streams SET version = 3 WHERE stream_id = 's'"
        ))
        .await
        .unwrap();
    store
        .append(AppendRequest::new().stream(
            sid("s"),
            ExpectedVersion::Exact(3.into()),
            events("E", 1),
        ))
        .await
        .unwrap();

    let first = store
        .read_all(Position::START, 1, &LogFilter::all())
        .await
        .unwrap();
    let mut after = first[0].position;
    for (bad_type, says) in [("Bad", "not a UUIDv7"), ("Bare", "recorded_at")] {
        let err = store
            .read_all(after, 10, &LogFilter::all())
            .await
            .unwrap_err();
        let StoreError::Serialization(codec) = &err else {
            panic!("expected an undecodable event, got {err:?}");
        };
        assert_eq!(codec.event_type, bad_type);
        let bad = PgUndecodableEvent::find(&err).unwrap();
        assert!(bad.position() > after, "{bad}");
        assert!(bad.reason().contains(says), "{bad}");
        assert!(
            bad.to_string().contains(&bad.position().to_string()),
            "{bad}"
        );
        assert!(!err.is_transient());
        // The same error on every read that meets it: the stream's too.
        assert!(matches!(
            store
                .read_stream(&sid("s"), Default::default(), usize::MAX)
                .await,
            Err(StoreError::Serialization(_))
        ));
        // An operator sets it aside; reads go on past it.
        store
            .quarantine(bad.position(), "written by hand, see incident 42")
            .await
            .unwrap();
        after = bad.position();
    }
    let rest = store
        .read_all(first[0].position, 10, &LogFilter::all())
        .await
        .unwrap();
    assert_eq!(
        rest.len(),
        1,
        "only the good event after the quarantined ones"
    );
    assert_eq!(rest[0].stream_version.get(), 4);
    let stream = store
        .read_stream(&sid("s"), Default::default(), usize::MAX)
        .await
        .unwrap();
    let versions: Vec<u64> = stream
        .events
        .iter()
        .map(|e| e.stream_version.get())
        .collect();
    assert_eq!(versions, [1, 4]);
    assert_eq!(stream.version.get(), 4);
}
