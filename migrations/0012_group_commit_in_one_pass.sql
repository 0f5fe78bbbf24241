-- Crossfold event store, twelfth migration: group commit decides a whole group in one pass.
--
-- Until now `append_group` (migration 8) ran each request through `append_one` or `append`,
-- each in a subtransaction of its own: one round trip and one commit for the group, but every
-- request still paid a whole append's server work (a nested SECURITY DEFINER call with its
-- setting saved and restored, its checks, an UPDATE and an INSERT planned and run alone) and a
-- subtransaction on top. Counted per one-event append, a group cost the server about as much
-- as separate appends, and on a machine where the server's CPU, not the WAL flush, limits the
-- writes, groups won little (docs/benchmarks.md, "Group commit").
--
-- Now the group is decided as a whole, with the outcome of each request unchanged:
--
-- 1. Checks, the announcement (migration 6) and the once-per-session checks, once.
-- 2. The group's distinct streams are found (one statement sorts the requests' streams), and
--    each one's turn key tried (migration 10: a stream whose turn another session holds or
--    waits for refuses every request that writes or checks it, marked "turn").
-- 3. The stream rows are locked at the top level in ascending order, as before, each read by
--    the statement that locks it (a row created after that is met by the INSERT of step 5).
-- 4. Request after request, in order, each one's expected versions are checked against the
--    versions as the requests before it left them (two requests of a group may share a
--    stream: the second sees the first's events). A request whose versions do not hold is
--    refused with the same CF001 report `append` raises, and writes nothing.
-- 5. What the requests that hold write goes in with one UPDATE of the stream rows, one INSERT
--    of new streams and one INSERT of all their events, in request order (so sequences ascend
--    in request order), inside one subtransaction.
--
-- The function's statements are planned once per session (plan_cache_mode =
-- force_generic_plan): their arrays' lengths change from call to call, and PostgreSQL kept
-- planning some of them afresh for each call, which cost more than any difference between
-- the plans.
--
-- A unique violation in step 5 (an event id already stored, a stream row set back below its
-- events, a new stream created by another transaction meanwhile) rolls back step 5 alone, and
-- the group then goes request after request as migration 8 did, each request in its own
-- subtransaction, so that the one that violates is refused alone with the server's own error.
-- Any other error fails the call as a whole, as before (nothing committed; the client sends
-- the requests again, each alone).
--
-- What one request can see or get is what it got from migration 8's function: the same
-- checks of its arguments (those of `append`, made once for the group's arrays), the same
-- versions, the same refusals, one transaction for the group. A stream checked while absent
-- gets a row at version 0 when its request commits, as `append` creates it.

DO $migration$
BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.append_group(
    p_stream_counts   integer[],
    p_event_counts    integer[],
    p_metadata_counts integer[],
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
    p_metadata        jsonb[]
)
RETURNS TABLE (
    request         integer,
    transaction_id  xid8,
    versions        bigint[],
    sequences       bigint[],
    refused         text,
    message         text,
    detail          text,
    constraint_name text
)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n   integer := coalesce(cardinality(p_stream_counts), 0);
    ns  integer;
    ne  integer;
    nm  integer;
    s0  integer := 0;
    e0  integer := 0;
    m0  integer := 0;
    bad bigint;
    i   integer;
    j   integer;
    q   integer;
    g   integer;
    v   bigint;
    e   bigint;
    c   integer;
    give_way     boolean := coalesce(current_setting('crossfold.give_way', true) = 'on', false);
    -- The group's distinct streams, in ascending order, and what is known of each.
    g_streams   text[];
    g_checked   boolean[];     -- written or checked by some request (locked, turn tried)
    g_written   boolean[];     -- written by some request
    g_blocked   boolean[];     -- another session's turn: refuse requests that need it
    g_exists    boolean[];
    g_version   bigint[];      -- as the requests decided so far leave it
    g_before    bigint[];      -- as found
    g_touched   boolean[];     -- a request that holds writes or checks it
    slot_g      integer[];     -- each request stream's place in g_streams
    sorted      integer[];     -- the request streams' places, in the order of their streams
    found_s     text[];
    found_v     bigint[];
    -- Each request stream's version before its request, and what each event becomes.
    slot_base   bigint[];
    slot_seen   integer[];
    ev_stream   text[];
    ev_version  bigint[];
    ev_meta     jsonb[];
    -- Each request's outcome.
    r_held      boolean[];
    r_detail    text[];
    conflicts   jsonb;
    upd_s       text[] := '{}';
    upd_v       bigint[] := '{}';
    new_s       text[] := '{}';
    new_v       bigint[] := '{}';
    kept        integer := 0;
    xid         xid8;
    seqs        bigint[];
    one_by_one  boolean := false;
BEGIN
    IF n > 64 THEN
        RAISE EXCEPTION 'a group holds at most 64 appends, not %%', n
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- Every array one-dimensional and counted from 1 (or empty), as many counts as requests,
    -- none negative, and adding up to the arrays' lengths: otherwise the slices below would
    -- not line up.
    SELECT count(*) FILTER (WHERE u.s IS NULL OR u.e IS NULL OR u.m IS NULL
                                  OR u.s < 0 OR u.e < 0 OR u.m < 0),
           coalesce(sum(u.s), 0), coalesce(sum(u.e), 0), coalesce(sum(u.m), 0)
        INTO bad, s0, e0, m0
        FROM unnest(p_stream_counts, p_event_counts, p_metadata_counts) u(s, e, m);
    IF bad > 0
       OR coalesce(cardinality(p_event_counts), 0) <> n
       OR coalesce(cardinality(p_metadata_counts), 0) <> n
       OR s0 <> coalesce(cardinality(p_streams), 0) OR s0 <> coalesce(cardinality(p_expected), 0)
       OR s0 <> coalesce(cardinality(p_counts), 0)
       OR e0 <> coalesce(cardinality(p_event_stream), 0)
       OR e0 <> coalesce(cardinality(p_event_offset), 0)
       OR e0 <> coalesce(cardinality(p_event_ids), 0)
       OR e0 <> coalesce(cardinality(p_event_types), 0)
       OR e0 <> coalesce(cardinality(p_schema_versions), 0)
       OR e0 <> coalesce(cardinality(p_payload_json), 0)
       OR e0 <> coalesce(cardinality(p_payload_bytes), 0)
       OR m0 <> coalesce(cardinality(p_metadata), 0)
       OR array_ndims(p_stream_counts) <> 1 OR array_lower(p_stream_counts, 1) <> 1
       OR array_ndims(p_event_counts) <> 1 OR array_lower(p_event_counts, 1) <> 1
       OR array_ndims(p_metadata_counts) <> 1 OR array_lower(p_metadata_counts, 1) <> 1
       OR array_ndims(p_streams) <> 1 OR array_lower(p_streams, 1) <> 1
       OR array_ndims(p_expected) <> 1 OR array_lower(p_expected, 1) <> 1
       OR array_ndims(p_counts) <> 1 OR array_lower(p_counts, 1) <> 1
       OR array_ndims(p_event_stream) <> 1 OR array_lower(p_event_stream, 1) <> 1
       OR array_ndims(p_event_offset) <> 1 OR array_lower(p_event_offset, 1) <> 1
       OR array_ndims(p_event_ids) <> 1 OR array_lower(p_event_ids, 1) <> 1
       OR array_ndims(p_event_types) <> 1 OR array_lower(p_event_types, 1) <> 1
       OR array_ndims(p_schema_versions) <> 1 OR array_lower(p_schema_versions, 1) <> 1
       OR array_ndims(p_payload_json) <> 1 OR array_lower(p_payload_json, 1) <> 1
       OR array_ndims(p_payload_bytes) <> 1 OR array_lower(p_payload_bytes, 1) <> 1
       OR array_ndims(p_metadata) <> 1 OR array_lower(p_metadata, 1) <> 1 THEN
        RAISE EXCEPTION 'the arrays of a group do not match its counts'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- What `append` checks of its arrays, once for the group's: each event has exactly one
    -- payload and a schema version in 0..65535, no count is negative, no offset below 1.
    IF e0 > 0 AND NOT coalesce(
           cardinality(array_positions(p_payload_json, NULL))
               + cardinality(array_positions(p_payload_bytes, NULL)) = e0
           AND NOT (array_positions(p_payload_json, NULL)
                    && array_positions(p_payload_bytes, NULL))
           AND 0 <= ALL(p_schema_versions) AND 65535 >= ALL(p_schema_versions),
           false) THEN
        RAISE EXCEPTION 'each event needs exactly one payload (JSON or bytes) and a schema version in 0..65535'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT coalesce(0 <= ALL(p_counts) AND 1 <= ALL(p_event_offset), false) THEN
        RAISE EXCEPTION 'a stream''s event count is negative or an event''s offset is below 1'
            USING ERRCODE = 'check_violation';
    END IF;
    -- A stream or an expected version that is NULL would not be refused by the checks below
    -- (a comparison with NULL is neither true nor false): refuse the call, as `append` refuses
    -- such a request when its statements meet the NULL.
    IF array_position(p_streams, NULL) IS NOT NULL OR array_position(p_expected, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'a stream id or an expected version of a group is NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- At the top level, before anything gives the transaction an id: the announcement
    -- (register_append, inline as in append_one) and the once-per-session checks. A setting
    -- changed inside a subtransaction that rolls back would be undone with it.
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
        RETURN;
    END IF;

    -- The distinct streams in ascending order ("C", the order of the streams' key), for each
    -- whether a request writes or checks it, and each request stream's place among them.
    SELECT array_agg(x.q::integer ORDER BY x.s COLLATE "C", x.q) INTO sorted
        FROM unnest(p_streams) WITH ORDINALITY x(s, q);
    g_streams := '{}';
    g_checked := '{}';
    g_written := '{}';
    g_blocked := '{}';
    slot_g := array_fill(0, ARRAY[s0]);
    g := 0;
    FOREACH q IN ARRAY coalesce(sorted, '{}') LOOP
        IF g = 0 OR p_streams[q] <> g_streams[g] THEN
            g := g + 1;
            g_streams[g] := p_streams[q];
            g_checked[g] := false;
            g_written[g] := false;
            g_blocked[g] := false;
        END IF;
        slot_g[q] := g;
        IF p_counts[q] > 0 THEN
            g_written[g] := true;
            g_checked[g] := true;
        ELSIF p_expected[q] <> -1 THEN
            g_checked[g] := true;
        END IF;
    END LOOP;
    -- Another session's turn on a stream (held or waited for) refuses every request that
    -- writes or checks it, as `append` gives way: a shared lock tried once per stream, which
    -- never waits and never stops other appends.
    IF give_way THEN
        FOR g IN 1 .. cardinality(g_streams) LOOP
            IF g_checked[g]
               AND NOT (pg_try_advisory_xact_lock_shared(1128682578, hashtext(%3$L || g_streams[g]))
                        OR pg_try_advisory_xact_lock(1128682578, hashtext(%3$L || g_streams[g]))) THEN
                g_blocked[g] := true;
            END IF;
        END LOOP;
    END IF;

    -- Every stream row a request writes or checks, locked at the top level and in ascending
    -- order as every append locks its own, and its version read: the requests are then
    -- decided against rows nobody else can change, and two groups, or a group and an append,
    -- cannot deadlock over them. A stream that a request writes is locked as the UPDATE of
    -- `append` locks it; one that requests only check, FOR SHARE as `append` does; one only
    -- checked for `Any`, not at all.
    g_exists := array_fill(false, ARRAY[cardinality(g_streams)]);
    g_before := array_fill(0::bigint, ARRAY[cardinality(g_streams)]);
    IF 0 < ALL(p_counts) THEN
        -- Every stream written (the commonest group): one statement locks and reads them.
        SELECT array_agg(x.stream_id), array_agg(x.version) INTO found_s, found_v
            FROM (SELECT st.stream_id, st.version FROM %1$I.streams st
                  WHERE st.stream_id = ANY(g_streams)
                  ORDER BY st.stream_id FOR NO KEY UPDATE) x;
        -- Both in ascending order, and the rows found a subset of the streams.
        j := 1;
        FOR g IN 1 .. cardinality(g_streams) LOOP
            IF j <= coalesce(cardinality(found_s), 0) AND found_s[j] = g_streams[g] THEN
                g_exists[g] := true;
                g_before[g] := found_v[j];
                j := j + 1;
            END IF;
        END LOOP;
        IF j <= coalesce(cardinality(found_s), 0) THEN
            RAISE EXCEPTION 'the streams of a group were read back out of order'
                USING ERRCODE = 'internal_error';
        END IF;
    ELSE
        -- One stream after the other, in the ascending ("C") order of g_streams, each locked
        -- and read by the same statement: a row that does not exist yet when it is locked
        -- counts as absent, and should another transaction create it meanwhile, the INSERT
        -- below meets it (a unique violation) and the group goes request after request.
        FOR g IN 1 .. cardinality(g_streams) LOOP
            IF g_written[g] THEN
                SELECT st.version INTO v FROM %1$I.streams st
                    WHERE st.stream_id = g_streams[g] FOR NO KEY UPDATE;
            ELSIF g_checked[g] THEN
                SELECT st.version INTO v FROM %1$I.streams st
                    WHERE st.stream_id = g_streams[g] FOR SHARE;
            ELSE
                SELECT st.version INTO v FROM %1$I.streams st WHERE st.stream_id = g_streams[g];
            END IF;
            IF FOUND THEN
                g_exists[g] := true;
                g_before[g] := v;
            END IF;
        END LOOP;
    END IF;
    g_version := g_before;
    g_touched := array_fill(false, ARRAY[cardinality(g_streams)]);

    -- Request after request, in order: its conditions against the versions the requests
    -- before it left; what it writes if they hold.
    slot_base := array_fill(0::bigint, ARRAY[s0]);
    slot_seen := array_fill(0, ARRAY[s0]);
    ev_stream := array_fill(NULL::text, ARRAY[e0]);
    ev_version := array_fill(NULL::bigint, ARRAY[e0]);
    ev_meta := array_fill(NULL::jsonb, ARRAY[e0]);
    r_held := array_fill(false, ARRAY[n]);
    r_detail := array_fill(NULL::text, ARRAY[n]);
    s0 := 0;
    e0 := 0;
    m0 := 0;
    FOR i IN 1 .. n LOOP
        ns := p_stream_counts[i];
        ne := p_event_counts[i];
        nm := p_metadata_counts[i];
        conflicts := NULL;
        FOR q IN s0 + 1 .. s0 + ns LOOP
            g := slot_g[q];
            IF q > s0 + 1 AND g = ANY(slot_g[s0 + 1 : q - 1]) THEN
                RAISE EXCEPTION 'append %% of a group names stream %% twice', i, p_streams[q]
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            e := p_expected[q];
            c := p_counts[q];
            v := g_version[g];
            IF c = 0 AND e = -1 THEN
                CONTINUE;
            END IF;
            -- As `append`: a turn refuses a stream only until the request has a conflict;
            -- after one, the streams are only checked.
            IF g_blocked[g] AND conflicts IS NULL THEN
                conflicts := coalesce(conflicts, '[]')
                    || jsonb_build_object('stream', p_streams[q], 'actual', v, 'turn', true);
            ELSIF NOT (e = -1 OR (e = -2 AND v > 0) OR v = e) THEN
                conflicts := coalesce(conflicts, '[]')
                    || jsonb_build_object('stream', p_streams[q], 'actual', v);
            END IF;
        END LOOP;
        IF conflicts IS NOT NULL THEN
            r_detail[i] := conflicts::text;
        ELSE
            r_held[i] := true;
            FOR q IN s0 + 1 .. s0 + ns LOOP
                g := slot_g[q];
                slot_base[q] := g_version[g];
                IF p_counts[q] > 0 OR p_expected[q] <> -1 THEN
                    g_version[g] := g_version[g] + p_counts[q];
                    g_touched[g] := true;
                END IF;
            END LOOP;
            -- Each stream's events are its next versions, one after the other: offsets 1, 2, ...
            -- up to its count, as the store sends them (slot_seen counts them). Anything else
            -- would write versions its stream row does not say.
            FOR j IN 1 .. ne LOOP
                q := p_event_stream[e0 + j];
                IF q IS NULL OR q < 1 OR q > ns THEN
                    RAISE EXCEPTION 'an event of append %% names stream %% of %%', i, q, ns
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                slot_seen[s0 + q] := slot_seen[s0 + q] + 1;
                IF p_event_offset[e0 + j] <> slot_seen[s0 + q] THEN
                    RAISE EXCEPTION 'event %% of append %% is not the next of its stream', j, i
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                ev_stream[e0 + j] := p_streams[s0 + q];
                ev_version[e0 + j] := slot_base[s0 + q] + p_event_offset[e0 + j];
                IF nm > 0 THEN
                    ev_meta[e0 + j] := coalesce(CASE WHEN j <= nm THEN p_metadata[m0 + j] END,
                                                p_metadata[m0 + 1]);
                END IF;
            END LOOP;
            FOR q IN s0 + 1 .. s0 + ns LOOP
                IF slot_seen[q] <> p_counts[q] THEN
                    RAISE EXCEPTION 'append %% counts %% events for stream %% and sends %%',
                        i, p_counts[q], p_streams[q], slot_seen[q]
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END LOOP;
            kept := kept + ne;
        END IF;
        s0 := s0 + ns;
        e0 := e0 + ne;
        m0 := m0 + nm;
    END LOOP;

    FOR g IN 1 .. cardinality(g_streams) LOOP
        IF g_touched[g] THEN
            IF NOT g_exists[g] THEN
                new_s := new_s || g_streams[g];
                new_v := new_v || g_version[g];
            ELSIF g_version[g] <> g_before[g] THEN
                upd_s := upd_s || g_streams[g];
                upd_v := upd_v || g_version[g];
            END IF;
        END IF;
    END LOOP;

    -- What the requests that hold write, in one subtransaction.
    BEGIN
        IF cardinality(upd_s) > 0 THEN
            UPDATE %1$I.streams st SET version = u.v, updated_at = now()
                FROM unnest(upd_s, upd_v) u(s, v)
                WHERE st.stream_id = u.s;
        END IF;
        IF cardinality(new_s) > 0 THEN
            INSERT INTO %1$I.streams (stream_id, version)
                SELECT u.s, u.v FROM unnest(new_s, new_v) u(s, v);
        END IF;
        IF kept > 0 THEN
            -- Rows go in in request order, so the identity hands out ascending sequences in
            -- that order.
            WITH inserted AS (
                INSERT INTO %1$I.events (event_id, stream_id, stream_version, event_type,
                                         schema_version, payload_json, payload_bytes, metadata)
                SELECT u.event_id, u.stream_id, u.stream_version, u.event_type, u.schema_version,
                       u.payload_json, u.payload_bytes, u.metadata
                FROM unnest(p_event_ids, ev_stream, ev_version, p_event_types, p_schema_versions,
                            p_payload_json, p_payload_bytes, ev_meta)
                     WITH ORDINALITY AS u(event_id, stream_id, stream_version, event_type,
                                          schema_version, payload_json, payload_bytes, metadata,
                                          ord)
                -- The events of the requests that hold: the only ones given a stream.
                WHERE u.stream_id IS NOT NULL
                ORDER BY u.ord
                RETURNING %1$I.events.sequence
            )
            SELECT array_agg(inserted.sequence ORDER BY inserted.sequence) INTO seqs
                FROM inserted;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        one_by_one := true;
    END;

    IF NOT one_by_one THEN
        xid := pg_current_xact_id_if_assigned();
        s0 := 0;
        kept := 0;
        FOR i IN 1 .. n LOOP
            ns := p_stream_counts[i];
            ne := p_event_counts[i];
            request := i;
            IF r_held[i] THEN
                transaction_id := xid;
                versions := array_fill(0::bigint, ARRAY[ns]);
                FOR q IN 1 .. ns LOOP
                    versions[q] := slot_base[s0 + q] + p_counts[s0 + q];
                END LOOP;
                sequences := coalesce(seqs[kept + 1 : kept + ne], '{}');
                kept := kept + ne;
                refused := NULL;
                message := NULL;
                detail := NULL;
            ELSE
                transaction_id := NULL;
                versions := NULL;
                sequences := NULL;
                refused := 'CF001';
                message := 'version conflict';
                detail := r_detail[i];
            END IF;
            -- What GET STACKED DIAGNOSTICS gave for a refusal in migration 8: '' when none.
            constraint_name := CASE WHEN r_held[i] THEN NULL ELSE '' END;
            RETURN NEXT;
            s0 := s0 + ns;
        END LOOP;
        RETURN;
    END IF;

    -- A unique violation: request after request, each in a subtransaction of its own, so that
    -- the one that violates is refused alone (migration 8's way).
    s0 := 0;
    e0 := 0;
    m0 := 0;
    FOR i IN 1 .. n LOOP
        ns := p_stream_counts[i];
        ne := p_event_counts[i];
        nm := p_metadata_counts[i];
        request := i;
        transaction_id := NULL;
        versions := NULL;
        sequences := NULL;
        refused := NULL;
        message := NULL;
        detail := NULL;
        constraint_name := NULL;
        BEGIN
            IF ns = 1 AND ne > 0 THEN
                SELECT a.transaction_id, ARRAY[a.version], a.sequences
                    INTO transaction_id, versions, sequences
                    FROM %1$I.append_one(p_streams[s0 + 1], p_expected[s0 + 1],
                                         p_event_ids[e0 + 1 : e0 + ne],
                                         p_event_types[e0 + 1 : e0 + ne],
                                         p_schema_versions[e0 + 1 : e0 + ne],
                                         p_payload_json[e0 + 1 : e0 + ne],
                                         p_payload_bytes[e0 + 1 : e0 + ne],
                                         p_metadata[m0 + 1 : m0 + nm]) a;
            ELSE
                SELECT a.transaction_id, a.versions, a.sequences
                    INTO transaction_id, versions, sequences
                    FROM %1$I.append(p_streams[s0 + 1 : s0 + ns],
                                     p_expected[s0 + 1 : s0 + ns],
                                     p_counts[s0 + 1 : s0 + ns],
                                     p_event_stream[e0 + 1 : e0 + ne],
                                     p_event_offset[e0 + 1 : e0 + ne],
                                     p_event_ids[e0 + 1 : e0 + ne],
                                     p_event_types[e0 + 1 : e0 + ne],
                                     p_schema_versions[e0 + 1 : e0 + ne],
                                     p_payload_json[e0 + 1 : e0 + ne],
                                     p_payload_bytes[e0 + 1 : e0 + ne],
                                     p_metadata[m0 + 1 : m0 + nm]) a;
            END IF;
        EXCEPTION WHEN SQLSTATE 'CF001' OR unique_violation THEN
            GET STACKED DIAGNOSTICS refused = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                detail = PG_EXCEPTION_DETAIL, constraint_name = CONSTRAINT_NAME;
            transaction_id := NULL;
            versions := NULL;
            sequences := NULL;
        END;
        RETURN NEXT;
        s0 := s0 + ns;
        e0 := e0 + ne;
        m0 := m0 + nm;
    END LOOP;
END
$$
$function$, current_schema(), current_schema(), current_schema() || '.');
END
$migration$;
