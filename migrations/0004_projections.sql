-- Crossfold event store, fourth migration: what projections keep in the store — a checkpoint,
-- a lease and the control state per projection, and the events set aside in dead-letter mode.
--
-- A projection's runner commits its checkpoint in the transaction that writes its read model,
-- with an UPDATE of its row guarded by the lease's fencing token: a runner that lost its lease
-- updates no row and rolls the whole transaction back. Lease times are the server's clock, so
-- runners on machines whose clocks disagree still agree on who holds a lease.
--
-- Names are unqualified (`migrate()` sets search_path to the store's schema). The application
-- role may read, insert and update these two tables (PgEventStore::grant_access), and delete
-- nothing: it runs projections and answers operators' requests.

CREATE TABLE projections (
    name                text        PRIMARY KEY CHECK (name <> ''),
    -- The checkpoint: a position, as `commit/sequence` (the commit half may exceed bigint).
    position_commit     numeric(20) NOT NULL DEFAULT 0 CHECK (position_commit >= 0),
    position_sequence   bigint      NOT NULL DEFAULT 0 CHECK (position_sequence >= 0),
    generation          bigint      NOT NULL DEFAULT 1 CHECK (generation >= 1),
    serving_generation  bigint      NOT NULL DEFAULT 1 CHECK (serving_generation >= 1),
    -- Control state, written by operators' requests.
    desired             text        NOT NULL DEFAULT 'running'
                                    CHECK (desired IN ('running', 'paused', 'stopped')),
    replay              text        CHECK (replay IN ('reset', 'rebuild')),
    control_seq         bigint      NOT NULL DEFAULT 0,
    -- The lease: who runs it, until when, and the fencing token commits must carry.
    lease_owner         text,
    lease_expires_at    timestamptz,
    lease_token         bigint      NOT NULL DEFAULT 0,
    -- The runner's last status report (a JSON object; see ProjectionStatus).
    status              jsonb       NOT NULL DEFAULT '{}',
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projection_dead_letters (
    projection          text        NOT NULL REFERENCES projections (name),
    position_commit     numeric(20) NOT NULL,
    position_sequence   bigint      NOT NULL,
    event_id            uuid        NOT NULL,
    stream_id           text        NOT NULL,
    stream_version      bigint      NOT NULL,
    event_type          text        NOT NULL,
    error               text        NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position_commit, position_sequence)
);
