-- Crossfold event store, second migration: positions that survive restores and failovers,
-- least privilege for the application role, and tables the database itself protects.
--
-- Like 0001, names are unqualified (`migrate()` sets search_path to the store's schema) and the
-- functions' bodies name the schema explicitly through format() with current_schema().

-- ---------------------------------------------------------------------------------------------
-- Log epochs.
--
-- A position's commit half is the writing transaction's id (xid8). Transaction ids are not
-- forever: a dump restored into another cluster, logical replication, a point-in-time restore
-- or a failover hand out ids at or below ones already stored or already read by subscribers,
-- and new events would sort behind their checkpoints. So the stored commit value is the
-- transaction id plus a *shift* that starts at 0 and only grows: whenever the store finds
-- itself in another cluster (system identifier), on another timeline (failover, point-in-time
-- recovery) or with a transaction counter below the newest stored id (pg_resetwal), it starts
-- a new epoch whose shift puts every new event at least one whole block of 2^32 transaction
-- ids above everything stored or handed out before. Readers add the same shift to the
-- visibility horizon. With shift 0 — every store that never moved — stored values are plain
-- transaction ids, exactly as 0001 wrote them.
-- ---------------------------------------------------------------------------------------------

-- The current epoch: one row.
CREATE TABLE log_state (
    only_row           boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch              integer     NOT NULL,
    shift              numeric     NOT NULL CHECK (shift >= 0),
    system_identifier  bigint      NOT NULL,
    timeline           integer     NOT NULL,
    changed_at         timestamptz NOT NULL DEFAULT now()
);

-- Every epoch ever started, for operators.
CREATE TABLE log_epochs (
    epoch              integer     PRIMARY KEY,
    shift              numeric     NOT NULL,
    system_identifier  bigint      NOT NULL,
    timeline           integer     NOT NULL,
    newest_before      xid8,
    reason             text        NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now()
);

-- The server's timeline, from the name of the WAL file being written (its first 8 hex digits).
-- The control file's checkpoint timeline would lag a fast promotion until its first checkpoint.
CREATE FUNCTION current_timeline() RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
$$;

INSERT INTO log_state (epoch, shift, system_identifier, timeline)
VALUES (0, 0, (pg_control_system()).system_identifier, current_timeline());
INSERT INTO log_epochs (epoch, shift, system_identifier, timeline, newest_before, reason)
SELECT 0, 0, system_identifier, timeline,
       (SELECT transaction_id FROM events ORDER BY transaction_id DESC LIMIT 1),
       'the store was created (or migrated to epochs) here'
FROM log_state;

-- Undecodable events an operator set aside: readers skip these positions instead of failing.
-- Events stay immutable; this only records the decision.
CREATE TABLE quarantined_events (
    transaction_id  xid8        NOT NULL,
    sequence        bigint      NOT NULL,
    reason          text        NOT NULL,
    quarantined_by  name        NOT NULL DEFAULT current_user,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, sequence)
);

DO $migration$
BEGIN
-- Why the log needs a new epoch, or NULL when it does not. Called by check_log_order twice: before
-- and after taking the lock.
EXECUTE format($function$
CREATE FUNCTION %1$I.log_discontinuity(p_state %1$I.log_state) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    newest  xid8;
BEGIN
    IF p_state.system_identifier <> (pg_control_system()).system_identifier THEN
        RETURN 'the store is in another cluster than the one that wrote it (dump and restore, '
            || 'logical replication or a copied data directory)';
    END IF;
    IF p_state.timeline <> %1$I.current_timeline() THEN
        RETURN 'the server is on another timeline (failover or point-in-time recovery)';
    END IF;
    SELECT ev.transaction_id INTO newest FROM %1$I.events ev
        ORDER BY ev.transaction_id DESC LIMIT 1;
    -- Every stored row was written by a transaction below the snapshot's xmax, unless the
    -- transaction counter moved back.
    IF newest IS NOT NULL AND newest::text::numeric
            >= pg_snapshot_xmax(pg_current_snapshot())::text::numeric + p_state.shift THEN
        RETURN 'the transaction counter is below the newest stored transaction id';
    END IF;
    RETURN NULL;
END
$$
$function$, current_schema());

-- Starts a new epoch when the log needs one (see above); otherwise only reads. Safe to call at
-- any time by the application role: every connection of the store calls it once, and the
-- append functions call it once per session before their first write. Returns the current
-- epoch and whether this call started it.
EXECUTE format($function$
CREATE FUNCTION %1$I.check_log_order(OUT epoch integer, OUT advanced boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st          %1$I.log_state;
    reason      text;
    newest      xid8;
    base        numeric;
    new_shift   numeric;
BEGIN
    advanced := false;
    SELECT * INTO st FROM %1$I.log_state;
    epoch := st.epoch;
    -- A standby cannot write, and its WAL position has no file name: nothing to check.
    IF pg_is_in_recovery() THEN
        RETURN;
    END IF;
    IF %1$I.log_discontinuity(st) IS NULL THEN
        RETURN;
    END IF;

    -- Appends in flight finish first, and appends after this commits plan their INSERT anew
    -- and pick up the new default below.
    LOCK TABLE %1$I.events IN ACCESS EXCLUSIVE MODE;
    SELECT * INTO st FROM %1$I.log_state FOR UPDATE;
    reason := %1$I.log_discontinuity(st);
    IF reason IS NULL THEN
        epoch := st.epoch;
        RETURN;
    END IF;

    SELECT ev.transaction_id INTO newest FROM %1$I.events ev
        ORDER BY ev.transaction_id DESC LIMIT 1;
    -- Everything stored, and everything this cluster could have handed out, sorts below base.
    base := greatest(coalesce(newest::text::numeric, 0),
                     pg_snapshot_xmax(pg_current_snapshot())::text::numeric + st.shift);
    -- A lost history (asynchronous failover, point-in-time restore) may have handed out ids
    -- beyond anything stored, but not a whole 2^32 more: start above the next such block.
    -- Every transaction that writes from now on has an id at or above this snapshot's xmin.
    new_shift := greatest(st.shift,
                          (floor(base / 4294967296) + 2) * 4294967296
                          - pg_snapshot_xmin(pg_current_snapshot())::text::numeric);
    EXECUTE format(
        'ALTER TABLE %%I.events ALTER COLUMN transaction_id SET DEFAULT '
        '(pg_catalog.pg_current_xact_id()::pg_catalog.text::pg_catalog.numeric + %%s)'
        '::pg_catalog.text::pg_catalog.xid8',
        %2$L, new_shift);
    UPDATE %1$I.log_state SET epoch = st.epoch + 1, shift = new_shift,
        system_identifier = (pg_control_system()).system_identifier,
        timeline = %1$I.current_timeline(), changed_at = now();
    INSERT INTO %1$I.log_epochs (epoch, shift, system_identifier, timeline, newest_before, reason)
        SELECT s.epoch, s.shift, s.system_identifier, s.timeline, newest, reason
        FROM %1$I.log_state s;
    RAISE WARNING 'crossfold: the log of schema %% starts epoch %%: %%', %2$L, st.epoch + 1, reason
        USING DETAIL = 'Positions of new events jump ahead so that no subscriber skips them.';
    epoch := st.epoch + 1;
    advanced := true;
END
$$
$function$, current_schema(), current_schema());

-- The append functions of 0001, now SECURITY DEFINER (the application role may call them but
-- may not write the tables), with a fixed search_path, checking the log's order once per
-- session, keeping synchronous_commit on, and returning the stored commit value.
--
-- synchronous_commit = off lets a commit be seen before its WAL is flushed: a crash then loses
-- events that subscribers may already have read, and hands their transaction ids out again —
-- to new events that sort behind those subscribers' checkpoints. The session's setting is
-- therefore raised to `on` for the append's own transaction.
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.append(
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
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
    IF current_setting('crossfold.log_checked_%2$s', true) IS DISTINCT FROM 'on' THEN
        PERFORM %1$I.check_log_order();
        PERFORM set_config('crossfold.log_checked_%2$s', 'on', false);
    END IF;
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;

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
        RETURNING %1$I.events.transaction_id, %1$I.events.sequence
    )
    SELECT min(inserted.transaction_id), array_agg(inserted.sequence ORDER BY inserted.sequence)
        INTO transaction_id, sequences FROM inserted;
END
$$
$function$, current_schema(), current_schema());

EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.append_one(
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
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n     integer := cardinality(p_event_ids);
    base  bigint;
BEGIN
    IF current_setting('crossfold.log_checked_%2$s', true) IS DISTINCT FROM 'on' THEN
        PERFORM %1$I.check_log_order();
        PERFORM set_config('crossfold.log_checked_%2$s', 'on', false);
    END IF;
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;

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
        RETURNING %1$I.events.transaction_id, ARRAY[%1$I.events.sequence]
            INTO transaction_id, sequences;
        version := base + 1;
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
        RETURNING %1$I.events.transaction_id, %1$I.events.sequence
    )
    SELECT min(inserted.transaction_id), array_agg(inserted.sequence ORDER BY inserted.sequence)
        INTO transaction_id, sequences FROM inserted;
    version := base + n;
END
$$
$function$, current_schema(), current_schema());
END
$migration$;

-- Only the roles the owner grants (PgEventStore::grant_access) may call the functions; a new
-- function is executable by everyone unless revoked.
REVOKE ALL ON FUNCTION append, append_one, check_log_order, log_discontinuity, current_timeline
    FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Protected tables.
--
-- The application role holds no INSERT, UPDATE, DELETE or TRUNCATE privilege on any table (it
-- writes through the SECURITY DEFINER functions above), so it can neither forge a row with a
-- chosen transaction id nor rewrite a stream's version. For everyone, the owner included,
-- events stay immutable and stream rows cannot be removed; the triggers fire ALWAYS, so
-- session_replication_role = replica does not turn them off.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE events ENABLE ALWAYS TRIGGER events_immutable;
ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate;

CREATE FUNCTION refuse_stream_removal() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stream rows are never removed: % on %.% refused', TG_OP, TG_TABLE_SCHEMA,
        TG_TABLE_NAME
        USING ERRCODE = 'CF002';
END
$$;

CREATE TRIGGER streams_never_removed
    BEFORE DELETE OR TRUNCATE ON streams
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_stream_removal();
ALTER TABLE streams ENABLE ALWAYS TRIGGER streams_never_removed;
