-- W9 by hand: a rebuild's step as one statement — read the next 1,000 events of the log by
-- position, sum them per account, and upsert one row per account. Run with one client: a
-- rebuild is one sequential reader.
\set chunk random(0, 999)
INSERT INTO floor_balances (account, balance)
    SELECT stream_id, sum((data->>'amount')::bigint) FROM floor_events
    WHERE global_position > :chunk * 1000 AND global_position <= (:chunk + 1) * 1000
    GROUP BY stream_id
ON CONFLICT (account) DO UPDATE SET balance = floor_balances.balance + EXCLUDED.balance;
