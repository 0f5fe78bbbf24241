//! `EventCheck` on the memory store: events stored in an old shape (schema version 1, JSON and
//! MessagePack) fail to decode into today's type until the upcaster is registered, and each
//! failure names its event; types no decoder covers are counted; the first matching decoder
//! decides; progress is reported up to the head; `from`, `batch` and `keep_failures` do what
//! they say; and the testkit's assertion passes a clean log and panics with the report on one
//! that is not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crossfold_core::check::EventCheck;
use crossfold_core::{
    AppendRequest, Codec, DomainEvent, EventData, EventStore, ExpectedVersion, Json, LogFilter,
    MessagePack, Payload, Position, StreamId, Upcasters,
};
use crossfold_memory::MemoryStore;
use crossfold_testkit::block_on;
use crossfold_testkit::decoding::assert_every_event_decodes;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Today's shape: cents. Version 1 stored whole units as `units`.
#[derive(Debug, Serialize, Deserialize)]
struct Deposited {
    cents: u64,
}

impl DomainEvent for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
    fn schema_version(&self) -> u16 {
        2
    }
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn stored(payload: Payload, version: u16) -> EventData {
    let mut event = EventData::new("Deposited", payload);
    event.schema_version = version;
    event
}

fn upcasters() -> Upcasters {
    let mut upcasters = Upcasters::new();
    upcasters.register("Deposited", 1, |v| {
        let units = v["units"].as_u64().ok_or("units missing")?;
        Ok(json!({ "cents": units * 100 }))
    });
    upcasters
}

/// Two old JSON events, one old MessagePack event, one of today's, and one of another type
/// in another category.
async fn history(store: &MemoryStore) -> Vec<Position> {
    let old_json = |units: u64| {
        stored(
            Payload::json(json!({ "units": units }).to_string().into_bytes()),
            1,
        )
    };
    let old_packed = stored(MessagePack.encode(&json!({ "units": 7 })).unwrap(), 1);
    let today = stored(Json.encode(&Deposited { cents: 250 }).unwrap(), 2);
    let appended = store
        .append(AppendRequest::new().stream(
            sid("account-1"),
            ExpectedVersion::Any,
            vec![old_json(1), old_json(2), old_packed, today],
        ))
        .await
        .unwrap();
    let other = EventData::new(
        "Placed",
        MessagePack.encode(&json!({ "total": 1 })).unwrap(),
    );
    store
        .append(AppendRequest::new().stream(sid("order-1"), ExpectedVersion::Any, vec![other]))
        .await
        .unwrap();
    appended.events.iter().map(|e| e.position).collect()
}

#[test]
fn old_events_fail_without_their_upcaster_and_pass_with_it() {
    block_on(async {
        let store = MemoryStore::new();
        let positions = history(&store).await;
        let accounts = || LogFilter::categories(["account"]);

        let without = EventCheck::new(&store)
            .decode::<Deposited, _>(accounts(), Json, Upcasters::new())
            .run()
            .await
            .unwrap();
        assert_eq!(without.read, 5);
        assert_eq!(without.failed, 3, "{without}");
        assert!(!without.is_clean());
        let first = &without.failures[0];
        assert_eq!(first.position, positions[0]);
        assert_eq!(first.stream.as_str(), "account-1");
        assert_eq!(first.version.get(), 1);
        assert_eq!(first.event_type, "Deposited");
        assert_eq!(first.schema_version, 1);
        assert!(first.error.contains("cents"), "{}", first.error);
        assert_eq!(without.failures[2].version.get(), 3, "the MessagePack one");
        assert_eq!(without.unchecked.get("Placed"), Some(&1));
        let text = without.to_string();
        assert!(text.contains("3 failed to decode, 1 unchecked"), "{text}");
        assert!(
            text.contains("account-1@1 Deposited (schema version 1"),
            "{text}"
        );
        assert!(
            text.contains("unchecked: 1 event(s) of type Placed"),
            "{text}"
        );

        // With the upcaster, and a check for the other category: clean.
        let report = assert_every_event_decodes(
            EventCheck::new(&store)
                .decode::<Deposited, _>(accounts(), Json, upcasters())
                .check_with(LogFilter::all(), |_| Ok(())),
        )
        .await;
        assert_eq!((report.read, report.failed), (5, 0));
    });
}

#[test]
fn the_first_matching_decoder_decides() {
    block_on(async {
        let store = MemoryStore::new();
        history(&store).await;
        let report = EventCheck::new(&store)
            .check_with(LogFilter::all(), |_| Err("refused by the first".to_owned()))
            .decode::<Deposited, _>(LogFilter::all(), Json, upcasters())
            .run()
            .await
            .unwrap();
        assert_eq!(report.failed, 5);
        assert!(
            report
                .failures
                .iter()
                .all(|f| f.error == "refused by the first")
        );
    });
}

#[test]
fn from_batch_keep_and_progress() {
    block_on(async {
        let store = MemoryStore::new();
        let positions = history(&store).await;
        let mut seen = Vec::new();
        let report = EventCheck::new(&store)
            .decode::<Deposited, _>(LogFilter::all(), Json, Upcasters::new())
            .from(positions[0])
            .batch(2)
            .keep_failures(1)
            .on_progress(|p| seen.push((p.read, p.failed, p.fraction())))
            .run()
            .await
            .unwrap();
        // After the first event: three accounts' events and the order; the order and the two
        // old ones fail (the order is no Deposited at all).
        assert_eq!(report.read, 4);
        assert_eq!(report.failed, 3);
        assert_eq!(report.failures.len(), 1, "only the first is kept");
        assert!(report.to_string().contains("... and 2 more"));
        assert_eq!(seen.len(), 2, "one call per batch: {seen:?}");
        assert_eq!(seen.last().unwrap().0, 4);
        assert!((seen.last().unwrap().2 - 1.0).abs() < f64::EPSILON);
        assert!(seen[0].2 < 1.0);

        // An empty log: nothing read, clean.
        let empty = MemoryStore::new();
        let report = EventCheck::new(&empty).run().await.unwrap();
        assert_eq!(report.read, 0);
        assert!(report.is_clean());
    });
}

#[test]
#[should_panic(expected = "stored events do not decode")]
fn the_assertion_panics_with_the_report() {
    block_on(async {
        let store = MemoryStore::new();
        history(&store).await;
        assert_every_event_decodes(EventCheck::new(&store).decode::<Deposited, _>(
            LogFilter::all(),
            Json,
            Upcasters::new(),
        ))
        .await;
    });
}
