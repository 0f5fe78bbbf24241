-- Crossfold, sixth migration: a visibility horizon that only this store's appends hold back.
--
-- A reader of the global log must not pass a transaction that may still add events below the
-- position it reports: it reads only events of transactions below a *horizon*. Until now that
-- horizon was the snapshot's xmin, the oldest transaction open anywhere on the server, so any
-- writing transaction — in another database, a batch job, a session left idle in transaction —
-- held back every subscription of every store on the server.
--
-- From here on readers pass open transactions that are known not to append to this store. It
-- is sound because of one rule, which register_append enforces:
--
--   A transaction announces that it appends before it has a transaction id, and the
--   announcement stays visible until the transaction ends.
--
-- The announcement is a ROW EXCLUSIVE lock on the store's `streams` table: the lock every append
-- takes anyway to update its streams. It is a weak relation lock, which PostgreSQL keeps in the
-- backend's own fast-path slots, so appends share no lock object and contend on nothing; taken
-- at top level it is held until the transaction ends, also across subtransactions that roll
-- back; and pg_locks shows it with the holder's virtual transaction, next to the lock every
-- transaction holds on its own id. A transaction whose first write updates or inserts into
-- `streams` or inserts into `events` takes such a lock before it has an id as well, so appends
-- of migration 0002's functions still running while this migration commits, and rows the owner
-- inserts by hand as a transaction's first write, are seen as appends too.
--
-- foreign_writers(snapshot) reads the lock table (pg_locks) and returns the snapshot's open
-- transactions that held their id there without an append's lock, and were still running
-- once the lock table had been read: pg_xact_status, asked afterwards, says 'in progress'
-- (PostgreSQL marks a transaction committed or aborted before it releases any lock, so none of
-- its locks was missing from what was read). Having an id already, such a transaction can never
-- register later (register_append refuses), so it writes no events, ever: the finding holds for
-- every later snapshot, and readers may keep it. A reader's horizon is its snapshot's oldest
-- open transaction not known to be foreign (its xmax when there is none): everything below it
-- has either finished — and the reading statement's snapshot sees its events — or never
-- appends, and a transaction that gets its id after the snapshot is at or above xmax. So a
-- reader that returns the events below the horizon and checkpoints after them skips nothing
-- that commits later.
--
-- Reading pg_locks looks at every backend's locks, which costs far more than a read of the
-- log: readers compute the horizon inline from their own snapshot and the foreign transactions
-- they already know, and ask foreign_writers only when the horizon holds them back for a while
-- (see the store's `read::horizon`). log_horizon(snapshot) is the horizon computed afresh, for
-- health checks, status and operators.
--
-- A hot standby's snapshots do not list open transactions (pg_current_snapshot() leaves them
-- out there) and its pg_locks does not show the primary's locks: on a standby the horizon stays
-- the snapshot's xmin, the oldest transaction open on the primary, as before.

DO $migration$
BEGIN
-- Announces that the calling transaction appends to this store (see above). Every append does
-- this first; a function that runs several appends, each in its own subtransaction, calls it
-- once at top level before the first. A second call in the same transaction costs one look at a
-- setting. Refuses a transaction that already has an id: it may have written before calling,
-- and a reader may already have passed that id.
--
-- The setting that records the call is the caller's to change: a role that sets it by hand and
-- writes elsewhere before appending in the same transaction gets no refusal, and makes readers
-- skip its own events. Crossfold does neither.
EXECUTE format($function$
CREATE FUNCTION %1$I.register_append() RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('crossfold.appending_%2$s', true) IS NOT DISTINCT FROM 'on' THEN
        RETURN;
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'an append must be the first write of its transaction'
            USING ERRCODE = 'CF006',
                  DETAIL = format('Transaction %%s wrote before appending to schema %%s; readers '
                                  'of the log may already have passed it.',
                                  pg_current_xact_id_if_assigned(), %2$L),
                  HINT = 'Append in a transaction of its own, or before any other write.';
    END IF;
    LOCK TABLE %1$I.streams IN ROW EXCLUSIVE MODE;
    PERFORM set_config('crossfold.appending_%2$s', 'on', true);
END
$$
$function$, current_schema(), current_schema());

-- The transactions of the server holding the lock on their own id (subtransactions included;
-- only those in p_xids unless it is NULL), with their process and whether they hold an
-- append's lock on this store's streams or events: ROW SHARE or ROW EXCLUSIVE (see above), or
-- ACCESS EXCLUSIVE (a new log epoch starts under that lock on events, see migration 0002; DDL
-- on either table counts as an append as well). pg_lock_status() reads every backend's
-- fast-path locks before the main lock table, so a transaction whose lock on its id is listed
-- was running when its fast-path locks were read; and one that had its id before the caller's
-- snapshot had announced itself by then, if it appends. PL/pgSQL, so that its plan is made
-- once per session. Internal: only the functions below call it.
EXECUTE format($function$
CREATE FUNCTION %1$I.log_writers(p_xids xid[])
RETURNS TABLE (transaction_id xid, pid integer, appends boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH l AS MATERIALIZED (
        SELECT l.locktype, l.virtualtransaction, l.transactionid, l.pid
        FROM pg_lock_status() l
        WHERE l.granted
          AND ((l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock'
                AND (p_xids IS NULL OR l.transactionid = ANY (p_xids)))
               OR (l.locktype = 'relation'
                   AND l.database = (SELECT d.oid FROM pg_database d
                                     WHERE d.datname = current_database())
                   AND l.relation IN ('%1$I.streams'::regclass, '%1$I.events'::regclass)
                   AND l.mode IN ('RowShareLock', 'RowExclusiveLock', 'AccessExclusiveLock')))
    )
    SELECT t.transactionid, t.pid,
           EXISTS (SELECT 1 FROM l r
                   WHERE r.locktype = 'relation' AND r.virtualtransaction = t.virtualtransaction)
    FROM l t
    WHERE t.locktype = 'transactionid';
END
$$
$function$, current_schema());

-- The open transactions of p_snapshot known never to append to this store (see above), in
-- ascending order: readers pass them. Only transactions of the snapshot qualify: they had their
-- id before pg_locks was read. Empty on a standby. Called as
-- foreign_writers(pg_current_snapshot()) (the snapshot must be taken before the call); the
-- application role may call it, and a snapshot it makes up only changes what it is told.
EXECUTE format($function$
CREATE FUNCTION %1$I.foreign_writers(p_snapshot pg_snapshot) RETURNS xid8[]
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    running xid[];
    others  xid[];
BEGIN
    IF p_snapshot IS NULL OR pg_is_in_recovery() THEN
        RETURN '{}';
    END IF;
    SELECT array_agg(xid(s.x)) INTO running FROM pg_snapshot_xip(p_snapshot) AS s(x);
    IF running IS NULL THEN
        RETURN '{}';
    END IF;
    -- First the locks, then each transaction's status: in this order only.
    SELECT coalesce(array_agg(w.transaction_id), '{}') INTO others
        FROM %1$I.log_writers(running) w WHERE NOT w.appends;
    RETURN coalesce(
        (SELECT array_agg(s.x ORDER BY s.x) FROM pg_snapshot_xip(p_snapshot) AS s(x)
         WHERE xid(s.x) = ANY (others) AND pg_xact_status(s.x) = 'in progress'),
        '{}');
END
$$
$function$, current_schema());

-- The visibility horizon of the log for a reader whose snapshot is p_snapshot, computed afresh:
-- its oldest open transaction not known to be foreign, else its xmax (the snapshot's xmin on a
-- standby). A transaction id, without the log epoch's shift (see migration 0002). Called as
-- log_horizon(pg_current_snapshot()) the snapshot is the calling statement's own: a STABLE
-- function's statements see that same snapshot and read no table data here.
EXECUTE format($function$
CREATE FUNCTION %1$I.log_horizon(p_snapshot pg_snapshot) RETURNS xid8
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    passed  xid8[];
BEGIN
    IF p_snapshot IS NULL THEN
        RAISE EXCEPTION 'log_horizon needs a snapshot' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_is_in_recovery() THEN
        RETURN pg_snapshot_xmin(p_snapshot);
    END IF;
    passed := %1$I.foreign_writers(p_snapshot);
    RETURN coalesce((SELECT s.x FROM pg_snapshot_xip(p_snapshot) AS s(x)
                     WHERE s.x <> ALL (passed) ORDER BY s.x LIMIT 1),
                    pg_snapshot_xmax(p_snapshot));
END
$$
$function$, current_schema());

-- The oldest open append of this store that holds a transaction id: the first one its readers
-- wait for, as soon as anything commits after it. Its server process (NULL for a prepared
-- transaction), its transaction id (as pg_locks and pg_stat_activity show it), and when it
-- started: the start only where the owner may see the session in pg_stat_activity (its own
-- role's sessions; every session with pg_read_all_stats). No row when there is none, and on a
-- standby.
EXECUTE format($function$
CREATE FUNCTION %1$I.oldest_append(OUT pid integer, OUT transaction_id xid,
                                   OUT xact_start timestamptz)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT w.pid, w.transaction_id, a.xact_start
    FROM %1$I.log_writers(NULL) w
    LEFT JOIN pg_stat_activity a ON a.pid = w.pid
    WHERE w.appends AND NOT pg_is_in_recovery()
    ORDER BY age(w.transaction_id) DESC
    LIMIT 1
$$
$function$, current_schema());

-- The append functions of 0002, unchanged but for registering first (register_append's steps).
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
    -- register_append(), inline: a nested call of a SECURITY DEFINER function costs more than
    -- these steps. It raises the refusal when the transaction already has an id.
    IF current_setting('crossfold.appending_%2$s', true) IS DISTINCT FROM 'on' THEN
        IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
            PERFORM %1$I.register_append();
        END IF;
        LOCK TABLE %1$I.streams IN ROW EXCLUSIVE MODE;
        PERFORM set_config('crossfold.appending_%2$s', 'on', true);
    END IF;
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
    -- register_append(), inline: a nested call of a SECURITY DEFINER function costs more than
    -- these steps. It raises the refusal when the transaction already has an id.
    IF current_setting('crossfold.appending_%2$s', true) IS DISTINCT FROM 'on' THEN
        IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
            PERFORM %1$I.register_append();
        END IF;
        LOCK TABLE %1$I.streams IN ROW EXCLUSIVE MODE;
        PERFORM set_config('crossfold.appending_%2$s', 'on', true);
    END IF;
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

REVOKE ALL ON FUNCTION register_append, log_writers, foreign_writers, log_horizon, oldest_append
    FROM PUBLIC;
