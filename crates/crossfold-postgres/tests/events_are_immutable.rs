//! The database itself refuses to change or remove stored events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{events, fresh_store, raw_client, sid};
use crossfold_core::{AppendRequest, EventStore, ExpectedVersion};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_delete_and_truncate_are_refused() {
    let store = fresh_store().await;
    store
        .append(AppendRequest::new().stream(sid("s"), ExpectedVersion::NoStream, events("E", 3)))
        .await
        .unwrap();
    let schema = store.schema().to_owned();
    let client = raw_client().await;
    for statement in [
        format!("UPDATE {schema}.events SET event_type = 'Forged'"),
        format!("UPDATE {schema}.events SET payload_json = '{{}}' WHERE stream_version = 2"),
        format!("DELETE FROM {schema}.events WHERE stream_version = 1"),
        format!("DELETE FROM {schema}.events"),
        format!("TRUNCATE {schema}.events"),
    ] {
        let err = client.batch_execute(&statement).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("CF002"),
            "{statement}: {err:?}"
        );
    }
    let read = store
        .read_stream(&sid("s"), Default::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(read.events.len(), 3);
    assert!(read.events.iter().all(|e| e.event_type == "E"));
}
