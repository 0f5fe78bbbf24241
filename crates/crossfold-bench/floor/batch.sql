-- W5 by hand: a new stream and 100 events in one transaction.
\set n random(1, 9000000000000000000)
BEGIN;
INSERT INTO floor_streams VALUES ('batch-' || :client_id || '-' || :n, 100);
INSERT INTO floor_events (event_id, stream_id, stream_version, event_type, data, metadata)
    SELECT gen_random_uuid(), 'batch-' || :client_id || '-' || :n, v, 'ItemAdded', '{"sku": "abc", "qty": 1}', '{"correlation_id": "x"}'
    FROM generate_series(1, 100) AS v;
COMMIT;
