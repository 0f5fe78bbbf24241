//! Checking that every stored event still decodes: an assertion over
//! [`EventCheck`], for a test a user runs in CI against a
//! copy of production data after changing an event type.
//!
//! ```no_run
//! use crossfold_core::check::EventCheck;
//! use crossfold_core::{DomainEvent, EventStore, Json, LogFilter, Upcasters};
//! use crossfold_testkit::decoding::assert_every_event_decodes;
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct Deposited { cents: u64 }
//! # impl DomainEvent for Deposited { fn event_type(&self) -> &'static str { "Deposited" } }
//!
//! async fn stored_events_decode(production_copy: &impl EventStore, upcasters: Upcasters) {
//!     assert_every_event_decodes(
//!         EventCheck::new(production_copy)
//!             .decode::<Deposited, _>(LogFilter::all(), Json, upcasters),
//!     )
//!     .await;
//! }
//! ```

use crossfold_core::check::{CheckReport, EventCheck};
use crossfold_core::{ErrorChain, EventStore};

/// Runs `check` and panics with its report (each event that failed, with its position,
/// stream, version, type, schema version and error; each type no decoder applied to) unless
/// every event read decoded. Returns the report. A store failure panics too.
pub async fn assert_every_event_decodes<S: EventStore>(check: EventCheck<'_, S>) -> CheckReport {
    let report = check.run().await;
    assert!(
        report.is_ok(),
        "the stored events could not be read: {}",
        report
            .as_ref()
            .err()
            .map(|e| ErrorChain(e).to_string())
            .unwrap_or_default()
    );
    let report = report.unwrap_or_default();
    assert!(report.is_clean(), "stored events do not decode: {report}");
    report
}
