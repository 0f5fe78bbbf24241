-- W1 as the store sends it when the executor's state cache holds the account (the load
-- harness's steady state): the append alone, its version check standing in for the read.
\set a :client_id * :per + random(1, :per)
SELECT transaction_id, version, sequences FROM append_one('account-' || :a, -1, ARRAY[('01900000-0000-7000-8000-' || lpad(to_hex(nextval('bench_ids')), 12, '0'))::uuid], '{MoneyDeposited}', '{1}', '{"{\"amount\": 100}"}'::jsonb[], '{NULL}'::bytea[], '{"{\"recorded_at\": \"2026-12-07T12:00:00.000000Z\", \"correlation_id\": \"0190b4d2-0000-7000-8000-000000000000\"}"}'::jsonb[]);
