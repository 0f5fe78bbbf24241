//! Since migration 9 the tables have no CHECK constraints (each cost every write a parse and a
//! compile): the append functions check the same rules on what a caller gives them. Called
//! directly, with arguments the store never sends — a schema version out of range, no payload
//! or two, a negative count, an offset of 0, arrays of the wrong length — each is refused with
//! `check_violation`, as the constraints refused it, and nothing is written. Good calls still
//! go through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fresh_store, raw_client};

/// `append_one(stream, expected, ids, types, schema versions, json, bytes, metadata)` with the
/// arrays given as SQL literals.
fn append_one(schema: &str, stream: &str, versions: &str, json: &str, bytes: &str) -> String {
    format!(
        "SELECT * FROM \"{schema}\".append_one('{stream}', 0, \
         ARRAY['0190b4d2-0000-7000-8000-000000000001']::uuid[], ARRAY['E'], \
         {versions}::integer[], {json}::jsonb[], {bytes}::bytea[], ARRAY['{{}}']::jsonb[])"
    )
}

/// `append(streams, expected, counts, event stream, event offset, ids, types, schema
/// versions, json, bytes, metadata)` of one event on one stream.
fn append(schema: &str, stream: &str, count: i32, offset: i32, version: i32) -> String {
    format!(
        "SELECT * FROM \"{schema}\".append(ARRAY['{stream}'], ARRAY[0]::bigint[], \
         ARRAY[{count}], ARRAY[1], ARRAY[{offset}], \
         ARRAY['0190b4d2-0000-7000-8000-000000000002']::uuid[], ARRAY['E'], \
         ARRAY[{version}], ARRAY['{{}}']::jsonb[], ARRAY[NULL]::bytea[], \
         ARRAY['{{}}']::jsonb[])"
    )
}

#[tokio::test]
async fn bad_arguments_are_refused_and_write_nothing() {
    let store = fresh_store().await;
    let schema = store.schema().to_owned();
    let client = raw_client().await;

    // No CHECK constraint is left on the tables the appends write.
    let checks: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'c' AND conrelid IN \
                 ('\"{schema}\".events'::regclass, '\"{schema}\".streams'::regclass)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(checks, 0);

    let refused = [
        // Schema versions out of 0..65535.
        append_one(&schema, "s-1", "ARRAY[65536]", "ARRAY['{}']", "ARRAY[NULL]"),
        append_one(&schema, "s-2", "ARRAY[-1]", "ARRAY['{}']", "ARRAY[NULL]"),
        // No payload, and two.
        append_one(&schema, "s-3", "ARRAY[1]", "ARRAY[NULL]", "ARRAY[NULL]"),
        append_one(&schema, "s-4", "ARRAY[1]", "ARRAY['{}']", "ARRAY['\\x01']"),
        // Payload arrays shorter than the events, or missing.
        append_one(&schema, "s-5", "ARRAY[1]", "ARRAY[]", "ARRAY[]"),
        append_one(&schema, "s-6", "ARRAY[1]", "NULL", "NULL"),
        // Through `append`: a negative count, an offset of 0, a schema version out of range.
        append(&schema, "s-7", -1, 1, 1),
        append(&schema, "s-8", 1, 0, 1),
        append(&schema, "s-9", 1, 1, 70_000),
    ];
    for call in &refused {
        let error = client.batch_execute(call).await.unwrap_err();
        assert_eq!(
            error.code().map(|c| c.code()),
            Some("23514"),
            "{call}: {error:?}"
        );
    }
    let written: i64 = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{schema}\".events) \
                      + (SELECT count(*) FROM \"{schema}\".streams)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0, "a refused call wrote nothing");

    // Calls the rules allow go through, either payload.
    client
        .batch_execute(&append_one(
            &schema,
            "ok-1",
            "ARRAY[65535]",
            "ARRAY[NULL]",
            "ARRAY['\\x01']",
        ))
        .await
        .unwrap();
    client
        .batch_execute(&append(&schema, "ok-2", 1, 1, 0))
        .await
        .unwrap();
    let events: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".events"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 2);
}
