-- One durable single-row insert per transaction, no checks: the cheapest write there is.
\set n random(1, 100000)
INSERT INTO floor_events (event_id, stream_id, stream_version, event_type, data, metadata)
    VALUES (gen_random_uuid(), 'floor-' || :n || '-' || gen_random_uuid(), 1, 'MoneyDeposited', '{"amount": 100}', '{"correlation_id": "x"}');
