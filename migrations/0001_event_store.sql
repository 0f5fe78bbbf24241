-- Crossfold event store: streams, events, and the append function.
--
-- Names are unqualified: `migrate()` runs this file with `search_path` set to the store's schema,
-- so one database can hold several stores (by hand: `SET search_path TO myschema;` first).
-- The append functions are called from sessions whose search_path is the caller's, so their
-- bodies name the schema explicitly: they are created through format() with current_schema().
-- (A `SET search_path` clause on the function would do the same at a measured ~13 us per call,
-- a fifth of the whole function's cost.)
--
-- Ordering rule (why `transaction_id` exists): a sequence number is not commit order — a
-- transaction can take sequence 10 and commit after 11 has been read. Readers of the global log
-- therefore order by (transaction_id, sequence) and only see rows with
-- transaction_id < pg_snapshot_xmin(pg_current_snapshot()): every transaction below that
-- horizon has finished, so nothing can appear behind a position already read.

-- One row per stream that was ever written (or checked while absent, see `append`).
CREATE TABLE streams (
    -- "C" collation: byte order, which is also the lock order the client sorts by, and cheaper
    -- comparisons than a linguistic collation.
    stream_id   text COLLATE "C" PRIMARY KEY,
    version     bigint      NOT NULL CHECK (version >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
)
-- Every append updates its streams' rows; free room in each page lets PostgreSQL keep the new
-- row version on the same page (a HOT update: no index entry, pruned cheaply).
WITH (fillfactor = 70);

CREATE TABLE events (
    sequence        bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_id       text COLLATE "C" NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text COLLATE "C" NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version BETWEEN 0 AND 65535),
    -- Exactly one payload column is set: JSON payloads stay queryable as JSONB, MessagePack
    -- payloads are stored as the bytes they are.
    payload_json    jsonb,
    payload_bytes   bytea,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_one_payload CHECK ((payload_json IS NULL) <> (payload_bytes IS NULL)),
    -- The backstop under the stream-row locking of `append`: a stream's versions cannot repeat.
    -- Also the index of every stream read:
    --   EXPLAIN ... WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3
    --   -> Index Scan using events_pkey (Index Cond: stream_id = $1 AND stream_version > $2)
    CONSTRAINT events_pkey PRIMARY KEY (stream_id, stream_version),
    -- De-duplication: appending an event id twice is refused (StoreError::DuplicateEvent).
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
-- No foreign key to streams: `append` creates the stream row in the same transaction, and a
-- per-row RI check would cost every insert a lookup and a KEY SHARE lock.

-- The global log, its head, and subscriptions:
--   EXPLAIN ... WHERE (transaction_id, sequence) > ($1, $2)
--       AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
--       ORDER BY transaction_id, sequence LIMIT $3
--   -> Index Scan using events_log_idx
--        (Index Cond: ROW(transaction_id, sequence) > ROW($1, $2) AND transaction_id < ...)
-- and the head (ORDER BY ... DESC LIMIT 1) is an Index Only Scan Backward on the same index.
-- A stream filter is served by events_pkey (stream_id = ANY) or by this index with a filter,
-- whichever the planner estimates cheaper; an event-type filter scans this index from the
-- position (subscriptions move their cursor to the head after each read, so each row is
-- scanned about once). A per-type index would tax every append for a rarely used path.
CREATE INDEX events_log_idx ON events (transaction_id, sequence);

-- Events are facts: the database itself refuses to change or remove them.
CREATE FUNCTION refuse_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'CF002';
END
$$;

CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_change();

-- Appends to any number of streams atomically, in one call (one round trip).
--
-- p_streams are sorted by stream id in byte order by the caller: rows are locked in that order
-- by every append, so two appends never wait on each other in a cycle.
-- p_expected per stream: -1 any, -2 the stream must exist, n >= 0 exactly version n
-- (0 = no stream). p_counts: how many events each stream receives (0 = only checked).
-- Per event, in request order: p_event_stream (1-based index into p_streams), p_event_offset
-- (1-based place among that stream's new events), id, type, schema version, one of the two
-- payloads, and metadata — one element per event, or a single element shared by all events.
--
-- Locking:
-- * a written stream is locked exclusively by the conditional UPDATE that also checks it;
-- * a checked-only stream is locked FOR SHARE, so commands that merely read the same stream do
--   not serialize each other, yet a writer of it waits (FOR SHARE conflicts with the UPDATE's
--   FOR NO KEY UPDATE) until the check has committed;
-- * a checked-only stream that does not exist has no row to lock, so one is inserted at version
--   0 (ON CONFLICT DO NOTHING) and locked. A concurrent creator of that stream then waits on
--   that insert and re-checks afterwards. This was chosen over transaction-level advisory locks,
--   which every stream creation would have to take too (one lock-table slot per new stream,
--   hash collisions serializing unrelated streams); a version-0 row reads as an absent stream.
-- * a new written stream is inserted ON CONFLICT DO NOTHING; losing that race re-runs the
--   UPDATE against the winner's row.
--
-- On any failed condition nothing is written: the function checks every stream (so the error
-- names all of them) and raises SQLSTATE CF001 with the conflicts as a JSON array in DETAIL
-- ([{"stream": ..., "actual": ...}]), which rolls back the whole statement.
-- Returns the transaction id (NULL if nothing was written), each stream's version after the
-- append (in p_streams order) and each event's sequence (in request order).
--
-- (Inside the format() string, %1$I is the schema and %% a literal percent sign.)
DO $migration$
BEGIN
EXECUTE format($function$
CREATE FUNCTION %1$I.append(
    p_streams         text[],
    p_expected        bigint[],
    p_counts          integer[],
    p_event_stream    integer[],
    p_event_offset    integer[],
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_payload_json    jsonb[],
    p_payload_bytes   bytea[],
    p_metadata        jsonb[],
    OUT transaction_id xid8,
    OUT versions       bigint[],
    OUT sequences      bigint[]
)
LANGUAGE plpgsql
AS $$
DECLARE
    n           integer := coalesce(array_length(p_streams, 1), 0);
    i           integer;
    s           text;
    e           bigint;
    c           integer;
    v           bigint;
    attempts    integer;
    failed      boolean := false;
    base        bigint[] := array_fill(0::bigint, ARRAY[n]);
    conflicts   jsonb := '[]';
BEGIN
    IF n = 0 THEN
        versions := '{}';
        sequences := '{}';
        RETURN;
    END IF;

    FOR i IN 1 .. n LOOP
        s := p_streams[i];
        e := p_expected[i];
        c := p_counts[i];
        attempts := 0;

        IF failed OR (c = 0 AND e = -1) THEN
            -- Nothing to lock: the append is failing anyway, or the stream is unconditioned.
            SELECT st.version INTO v FROM %1$I.streams st WHERE st.stream_id = s;
            v := coalesce(v, 0);
            IF NOT (e = -1 OR (e = -2 AND v > 0) OR v = e) THEN
                conflicts := conflicts || jsonb_build_object('stream', s, 'actual', v);
                failed := true;
            END IF;
            base[i] := v;
            CONTINUE;
        END IF;

        LOOP
            attempts := attempts + 1;
            IF attempts > 5 THEN
                -- Rows are never deleted, so this cannot loop for long; refuse to spin anyway.
                RAISE EXCEPTION 'stream %% kept changing while being locked', s
                    USING ERRCODE = 'serialization_failure';
            END IF;

            IF c > 0 THEN
                UPDATE %1$I.streams st SET version = st.version + c, updated_at = now()
                    WHERE st.stream_id = s
                      AND (e = -1 OR (e = -2 AND st.version > 0) OR st.version = e)
                    RETURNING st.version - c INTO v;
                IF FOUND THEN
                    base[i] := v;
                    EXIT;
                END IF;
                SELECT st.version INTO v FROM %1$I.streams st WHERE st.stream_id = s;
            ELSE
                SELECT st.version INTO v FROM %1$I.streams st WHERE st.stream_id = s FOR SHARE;
            END IF;

            IF FOUND THEN
                IF e = -1 OR (e = -2 AND v > 0) OR v = e THEN
                    IF c = 0 THEN
                        base[i] := v;
                        EXIT;
                    END IF;
                    -- The row appeared (committed) between the UPDATE and this read: retry.
                    CONTINUE;
                END IF;
                conflicts := conflicts || jsonb_build_object('stream', s, 'actual', v);
                failed := true;
                base[i] := v;
                EXIT;
            END IF;

            -- No row: the stream is absent.
            IF NOT (e = -1 OR e = 0) THEN
                conflicts := conflicts || jsonb_build_object('stream', s, 'actual', 0);
                failed := true;
                EXIT;
            END IF;
            INSERT INTO %1$I.streams (stream_id, version) VALUES (s, c) ON CONFLICT DO NOTHING;
            IF FOUND THEN
                base[i] := 0;
                EXIT;
            END IF;
            -- Another transaction created it and committed meanwhile: check against its row.
        END LOOP;
    END LOOP;

    IF failed THEN
        RAISE EXCEPTION 'version conflict'
            USING ERRCODE = 'CF001', DETAIL = conflicts::text;
    END IF;

    versions := array_fill(0::bigint, ARRAY[n]);
    FOR i IN 1 .. n LOOP
        versions[i] := base[i] + p_counts[i];
    END LOOP;

    IF coalesce(array_length(p_event_ids, 1), 0) = 0 THEN
        transaction_id := pg_current_xact_id_if_assigned();
        sequences := '{}';
        RETURN;
    END IF;

    -- Rows go in in request order, so the identity hands out ascending sequences in that order.
    WITH inserted AS (
        INSERT INTO %1$I.events (event_id, stream_id, stream_version, event_type, schema_version,
                                 payload_json, payload_bytes, metadata)
        SELECT u.event_id, p_streams[u.idx], base[u.idx] + u.off, u.event_type, u.schema_version,
               u.payload_json, u.payload_bytes, coalesce(u.metadata, p_metadata[1])
        FROM unnest(p_event_stream, p_event_offset, p_event_ids, p_event_types, p_schema_versions,
                    p_payload_json, p_payload_bytes, p_metadata)
             WITH ORDINALITY AS u(idx, off, event_id, event_type, schema_version,
                                  payload_json, payload_bytes, metadata, ord)
        ORDER BY u.ord
        RETURNING %1$I.events.sequence
    )
    SELECT array_agg(inserted.sequence ORDER BY inserted.sequence) INTO sequences FROM inserted;
    transaction_id := pg_current_xact_id();
END
$$
$function$, current_schema());

-- The common case — events for one stream, nothing else checked — without the general
-- function's loop and bookkeeping: one conditional UPDATE (or, for a stream expected not to
-- exist, one INSERT) and one INSERT of the events. Anything else (a stream to create that the
-- caller did not expect to be new, a version-0 row, a failed condition) is handed to `append`,
-- which decides and reports it, in the same transaction; nothing has been written by then.
EXECUTE format($function$
CREATE FUNCTION %1$I.append_one(
    p_stream          text,
    p_expected        bigint,
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_payload_json    jsonb[],
    p_payload_bytes   bytea[],
    p_metadata        jsonb[],
    OUT transaction_id xid8,
    OUT version        bigint,
    OUT sequences      bigint[]
)
LANGUAGE plpgsql
AS $$
DECLARE
    n     integer := cardinality(p_event_ids);
    base  bigint;
BEGIN
    IF p_expected = 0 THEN
        INSERT INTO %1$I.streams (stream_id, version) VALUES (p_stream, n)
            ON CONFLICT DO NOTHING;
        IF FOUND THEN
            base := 0;
        END IF;
    ELSE
        UPDATE %1$I.streams st SET version = st.version + n, updated_at = now()
            WHERE st.stream_id = p_stream
              AND (p_expected = -1 OR (p_expected = -2 AND st.version > 0)
                   OR st.version = p_expected)
            RETURNING st.version - n INTO base;
    END IF;

    IF base IS NULL THEN
        SELECT a.transaction_id, a.versions[1], a.sequences
            INTO transaction_id, version, sequences
            FROM %1$I.append(ARRAY[p_stream], ARRAY[p_expected], ARRAY[n],
                             array_fill(1, ARRAY[n]),
                             ARRAY(SELECT generate_series(1, n)),
                             p_event_ids, p_event_types, p_schema_versions,
                             p_payload_json, p_payload_bytes, p_metadata) a;
        RETURN;
    END IF;

    IF n = 1 THEN
        -- One event (the commonest command): a plain INSERT is cheaper than unnest and a CTE.
        INSERT INTO %1$I.events (event_id, stream_id, stream_version, event_type, schema_version,
                                 payload_json, payload_bytes, metadata)
        VALUES (p_event_ids[1], p_stream, base + 1, p_event_types[1], p_schema_versions[1],
                p_payload_json[1], p_payload_bytes[1], p_metadata[1])
        RETURNING ARRAY[%1$I.events.sequence] INTO sequences;
        version := base + 1;
        transaction_id := pg_current_xact_id();
        RETURN;
    END IF;

    WITH inserted AS (
        INSERT INTO %1$I.events (event_id, stream_id, stream_version, event_type, schema_version,
                                 payload_json, payload_bytes, metadata)
        SELECT u.event_id, p_stream, base + u.ord, u.event_type, u.schema_version,
               u.payload_json, u.payload_bytes, coalesce(u.metadata, p_metadata[1])
        FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_payload_json,
                    p_payload_bytes, p_metadata)
             WITH ORDINALITY AS u(event_id, event_type, schema_version, payload_json,
                                  payload_bytes, metadata, ord)
        ORDER BY u.ord
        RETURNING %1$I.events.sequence
    )
    SELECT array_agg(inserted.sequence ORDER BY inserted.sequence) INTO sequences FROM inserted;
    version := base + n;
    transaction_id := pg_current_xact_id();
END
$$
$function$, current_schema());
END
$migration$;
