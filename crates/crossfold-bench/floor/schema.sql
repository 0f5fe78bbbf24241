-- The smallest event-store shape: what PostgreSQL itself allows for the same work, with no
-- library in the way. Tables are prefixed so they never collide with Crossfold's own.
DROP TABLE IF EXISTS floor_events;
DROP TABLE IF EXISTS floor_streams;
CREATE TABLE floor_streams (stream_id text PRIMARY KEY, version bigint NOT NULL);
CREATE TABLE floor_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id uuid NOT NULL UNIQUE,
    stream_id text NOT NULL,
    stream_version bigint NOT NULL,
    event_type text NOT NULL,
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, stream_version)
);
CREATE INDEX ON floor_events (global_position);
INSERT INTO floor_streams SELECT 'account-' || n, 0 FROM generate_series(1, 100000) AS n;
-- About ten events per account, for the read script.
INSERT INTO floor_events (event_id, stream_id, stream_version, event_type, data, metadata)
    SELECT gen_random_uuid(), 'account-' || n, v, 'MoneyDeposited', '{"amount": 100}', '{"correlation_id": "x"}'
    FROM generate_series(1, 100000) AS n, generate_series(1, 10) AS v;
UPDATE floor_streams SET version = 10;
ANALYZE floor_streams;
ANALYZE floor_events;
