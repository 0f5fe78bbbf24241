-- Crossfold event store, eighth migration: group commit. Needs migration 6 (register_append).
--
-- `append_group` applies several independent appends in one transaction: one round trip and
-- one commit (one WAL flush) for all of them. Each append keeps its own all-or-nothing
-- outcome: it runs through `append` (or `append_one`, for events of one stream) inside a
-- subtransaction of its own (a BEGIN ... EXCEPTION block), so an append whose expected
-- versions do not hold (CF001) or whose event id is already stored (unique_violation) is
-- rolled back alone and reported, and the others commit. Any other error fails the whole
-- call, and nothing of it commits.
--
-- The arguments are `append`'s arrays, the requests' one after the other (each request
-- encoded exactly as for `append`: its streams sorted, its events' stream indexes counting
-- from 1 within the request), and three arrays saying how many streams, events and metadata
-- elements each request has. One row per request comes back, in request order: the
-- transaction id, versions and sequences `append` returns, or the refusal's SQLSTATE, message,
-- DETAIL and constraint, so that the client explains it as it explains a refused `append`.
--
-- Limits and costs:
-- * At most 64 requests: every subtransaction that writes takes a subtransaction id, and a
--   backend holding more than 64 of them at once overflows its cache in shared memory, after
--   which every snapshot on the server has to look into pg_subtrans.
-- * Every stream row the requests lock is locked first, in ascending order like the rows of
--   any `append`, so requests may come in any order and may share streams (they then apply
--   one after the other). Only new streams are created as each request runs: two transactions
--   creating the same new streams in different orders at the same moment can deadlock, and
--   PostgreSQL then fails one of them as a whole (nothing of it written).
-- * A subtransaction costs about 20-30 us of server CPU per request (docs/operations.md); a
--   lone append is cheaper through `append` and `append_one`.

DO $migration$
BEGIN
EXECUTE format($function$
CREATE FUNCTION %1$I.append_group(
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
    lock_streams text[];
    lock_written boolean[];
    all_written  boolean;
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
    s0 := 0;
    e0 := 0;
    m0 := 0;

    -- At the top level, before the first subtransaction: a setting changed inside a
    -- subtransaction that rolls back would be undone with it, and a lock taken there released
    -- while the transaction keeps its id. The group registers as an append (migration 6)
    -- before anything gives it a transaction id; the appends it runs then find it registered.
    PERFORM %1$I.register_append();
    IF current_setting('crossfold.log_checked_%2$s', true) IS DISTINCT FROM 'on' THEN
        PERFORM %1$I.check_log_order();
        PERFORM set_config('crossfold.log_checked_%2$s', 'on', false);
    END IF;
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;

    -- Every stream row any request will lock, locked here first, at the top level and in
    -- ascending order as every append locks its own: the requests then run in any order
    -- without waiting for one another's rows, and two groups, or a group and an append,
    -- cannot deadlock over them. (Request after request, the group would lock rows out of
    -- order.) A stream that a request writes is locked as the UPDATE of `append` locks it; one
    -- that requests only check, `FOR SHARE` as `append` does; one only checked for `Any`, not
    -- at all. Locks taken here outlive the subtransaction of a refused request.
    SELECT array_agg(t.s ORDER BY t.s), array_agg(t.w ORDER BY t.s), bool_and(t.w)
        INTO lock_streams, lock_written, all_written
        FROM (SELECT u.s COLLATE "C" AS s, bool_or(u.c > 0) AS w
              FROM unnest(p_streams, p_counts, p_expected) u(s, c, e)
              WHERE u.c > 0 OR u.e <> -1
              GROUP BY 1) t;
    IF all_written THEN
        PERFORM FROM %1$I.streams st WHERE st.stream_id = ANY(lock_streams)
            ORDER BY st.stream_id FOR NO KEY UPDATE;
    ELSIF lock_streams IS NOT NULL THEN
        FOR r IN 1 .. cardinality(lock_streams) LOOP
            IF lock_written[r] THEN
                PERFORM FROM %1$I.streams st WHERE st.stream_id = lock_streams[r]
                    FOR NO KEY UPDATE;
            ELSE
                PERFORM FROM %1$I.streams st WHERE st.stream_id = lock_streams[r] FOR SHARE;
            END IF;
        END LOOP;
    END IF;

    FOR r IN 1 .. n LOOP
        ns := p_stream_counts[r];
        ne := p_event_counts[r];
        nm := p_metadata_counts[r];
        request := r;
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
$function$, current_schema(), current_schema());
END
$migration$;

REVOKE ALL ON FUNCTION append_group FROM PUBLIC;
