\set a random(1, 10000)
SELECT transaction_id FROM cf_index_cost.append_one('account-' || :a, -1, ARRAY[gen_random_uuid()], '{Deposited}', '{1}', '{"{\"amount\": 100}"}'::jsonb[], '{NULL}'::bytea[], '{"{\"recorded_at\": 1}"}'::jsonb[]);
