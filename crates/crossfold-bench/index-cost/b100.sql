\set a random(1, 10000)
SELECT transaction_id FROM cf_index_cost.append_one('account-' || :a, -1, (SELECT array_agg(gen_random_uuid()) FROM generate_series(1,100)), array_fill('Deposited'::text, ARRAY[100]), array_fill(1, ARRAY[100]), array_fill('{"amount": 100}'::jsonb, ARRAY[100]), array_fill(NULL::bytea, ARRAY[100]), '{"{\"recorded_at\": 1}"}'::jsonb[]);
