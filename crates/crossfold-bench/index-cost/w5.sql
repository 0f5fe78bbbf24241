-- W5 as the store sends it: 100 events to a new stream in one `append_one` call (expected
-- version 0), the events' ids ascending as the store generates them, their metadata shared.
\set n random(1, 9000000000000000000)
SELECT transaction_id, version, sequences FROM append_one('batch-' || :client_id || '-' || :n, 0, (SELECT array_agg(('01900000-0000-7000-8000-' || lpad(to_hex(b.k * 128 + g), 12, '0'))::uuid ORDER BY g) FROM (SELECT nextval('bench_ids') AS k) b, generate_series(1, 100) g), array_fill('ItemAdded'::text, ARRAY[100]), array_fill(1, ARRAY[100]), array_fill('{"sku": "abc", "qty": 1}'::jsonb, ARRAY[100]), array_fill(NULL::bytea, ARRAY[100]), '{"{\"recorded_at\": \"2026-12-07T12:00:00.000000Z\"}"}'::jsonb[]);
