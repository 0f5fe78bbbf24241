//! `EventCheck` on PostgreSQL: events stored in an old shape, as JSONB and as MessagePack
//! bytes, fail to decode into today's type without the upcaster (each failure at its position,
//! read back in small batches across several commits) and pass with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fresh_store, sid};
use crossfold_core::check::EventCheck;
use crossfold_core::{
    AppendRequest, Codec, DomainEvent, EventData, EventStore, ExpectedVersion, Json, LogFilter,
    MessagePack, Upcasters,
};
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

fn old(codec: &impl Codec, units: u64) -> EventData {
    let mut event = EventData::new(
        "Deposited",
        codec.encode(&json!({ "units": units })).unwrap(),
    );
    event.schema_version = 1;
    event
}

#[tokio::test]
async fn old_events_fail_without_their_upcaster_and_pass_with_it() {
    let test = fresh_store().await;
    let store = &test.store;
    let mut positions = Vec::new();
    for (i, event) in [
        old(&Json, 1),
        old(&MessagePack, 2),
        old(&Json, 3),
        EventData::new("Deposited", Json.encode(&Deposited { cents: 400 }).unwrap()),
    ]
    .into_iter()
    .enumerate()
    {
        let mut event = event;
        if i == 3 {
            event.schema_version = 2;
        }
        let appended = store
            .append(AppendRequest::new().stream(
                sid(&format!("account-{i}")),
                ExpectedVersion::Any,
                vec![event],
            ))
            .await
            .unwrap();
        positions.push(appended.events[0].position);
    }

    let without = EventCheck::new(store)
        .decode::<Deposited, _>(LogFilter::all(), Json, Upcasters::new())
        .batch(2)
        .run()
        .await
        .unwrap();
    assert_eq!((without.read, without.failed), (4, 3), "{without}");
    let failed: Vec<_> = without.failures.iter().map(|f| f.position).collect();
    assert_eq!(failed, positions[..3]);
    assert_eq!(without.failures[1].stream.as_str(), "account-1");
    assert_eq!(without.failures[1].schema_version, 1);
    assert_eq!(without.head, positions[3]);

    let mut upcasters = Upcasters::new();
    upcasters.register("Deposited", 1, |v| {
        let units = v["units"].as_u64().ok_or("units missing")?;
        Ok(json!({ "cents": units * 100 }))
    });
    let report = assert_every_event_decodes(
        EventCheck::new(store)
            .decode::<Deposited, _>(LogFilter::all(), Json, upcasters)
            .batch(3),
    )
    .await;
    assert_eq!(report.read, 4);
}
