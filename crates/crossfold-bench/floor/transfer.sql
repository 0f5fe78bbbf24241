-- W2 by hand: lock two accounts in order, create the transfer stream, write three events.
\set a random(1, 100000)
\set b random(1, 100000)
BEGIN;
SELECT stream_id, version FROM floor_streams WHERE stream_id IN ('account-' || :a, 'account-' || :b) ORDER BY stream_id FOR UPDATE;
INSERT INTO floor_events (event_id, stream_id, stream_version, event_type, data, metadata)
    SELECT gen_random_uuid(), stream_id, version + 1, 'Moved', '{"amount": 100}', '{"correlation_id": "x"}'
    FROM floor_streams WHERE stream_id IN ('account-' || :a, 'account-' || :b);
UPDATE floor_streams SET version = version + 1 WHERE stream_id IN ('account-' || :a, 'account-' || :b);
INSERT INTO floor_streams VALUES ('transfer-' || :a || '-' || :b || '-' || gen_random_uuid(), 1);
INSERT INTO floor_events (event_id, stream_id, stream_version, event_type, data, metadata)
    VALUES (gen_random_uuid(), 'transfer-' || gen_random_uuid(), 1, 'TransferCompleted', '{"amount": 100}', '{"correlation_id": "x"}');
COMMIT;
