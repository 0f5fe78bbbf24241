-- W1 as the store sends it on a cache miss: read the account (the store's `read_one`
-- statement, asking for events after a version no stream reaches, so it returns the stream's
-- version and no event), then append one deposit at that version (`append_one`). Each client
-- has accounts of its own (`per` of them, set by run.sh), so no append conflicts.
\set a :client_id * :per + random(1, :per)
SELECT s.version FROM (SELECT coalesce(max(st.version), 0) AS version FROM streams st WHERE st.stream_id = 'account-' || :a) s LEFT JOIN LATERAL (SELECT transaction_id, sequence, event_id, stream_id, stream_version, event_type, schema_version, payload_json, payload_bytes, metadata FROM events ev WHERE ev.stream_id = 'account-' || :a AND ev.stream_version > 4611686018427387904 ORDER BY ev.stream_version LIMIT 9223372036854775807) e ON true \gset
SELECT transaction_id, version, sequences FROM append_one('account-' || :a, :version, ARRAY[('01900000-0000-7000-8000-' || lpad(to_hex(nextval('bench_ids')), 12, '0'))::uuid], '{MoneyDeposited}', '{1}', '{"{\"amount\": 100}"}'::jsonb[], '{NULL}'::bytea[], '{"{\"recorded_at\": \"2026-12-07T12:00:00.000000Z\", \"correlation_id\": \"0190b4d2-0000-7000-8000-000000000000\"}"}'::jsonb[]);
