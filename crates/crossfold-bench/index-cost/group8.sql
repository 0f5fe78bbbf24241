-- Group commit of W1 as the store sends a group of 8: one `append_group` call of eight
-- one-event appends to eight different accounts, the version checks "any" (as in w1-cached).
-- The event ids come from :n, not from a sequence: nextval gives its transaction an id now
-- and then, and an append must be its transaction's first write.
\set a random(1, 10000)
\set n random(1, 1000000000000)
SELECT * FROM append_group(array_fill(1, ARRAY[8]), array_fill(1, ARRAY[8]), array_fill(1, ARRAY[8]), ARRAY(SELECT 'account-' || ((:a + k * 1237) % 10000 + 1) FROM generate_series(0, 7) k), array_fill(-1::bigint, ARRAY[8]), array_fill(1, ARRAY[8]), array_fill(1, ARRAY[8]), array_fill(1, ARRAY[8]), ARRAY(SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(:n::bigint * 8 + k), 12, '0'))::uuid FROM generate_series(0, 7) k), array_fill('MoneyDeposited'::text, ARRAY[8]), array_fill(1, ARRAY[8]), array_fill('{"amount": 100}'::jsonb, ARRAY[8]), array_fill(NULL::bytea, ARRAY[8]), array_fill('{"recorded_at": "2026-12-07T12:00:00.000000Z", "correlation_id": "0190b4d2-0000-7000-8000-000000000000"}'::jsonb, ARRAY[8]));
