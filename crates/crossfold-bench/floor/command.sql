-- W1 by hand: read the stream, then append under a row lock.
\set n random(1, 100000)
SELECT event_id, stream_version, event_type, data, metadata FROM floor_events WHERE stream_id = 'account-' || :n ORDER BY stream_version;
BEGIN;
SELECT version FROM floor_streams WHERE stream_id = 'account-' || :n FOR UPDATE;
INSERT INTO floor_events (event_id, stream_id, stream_version, event_type, data, metadata)
    SELECT gen_random_uuid(), stream_id, version + 1, 'MoneyDeposited', '{"amount": 100}', '{"correlation_id": "x"}'
    FROM floor_streams WHERE stream_id = 'account-' || :n;
UPDATE floor_streams SET version = version + 1 WHERE stream_id = 'account-' || :n;
COMMIT;
