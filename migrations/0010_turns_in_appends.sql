-- Crossfold event store, tenth migration: appends give way to writers that take turns.
--
-- A writer that lost races on a stream takes its turn on it (a session-level advisory lock of
-- class 1128682578, 'CFTR', keyed by hashtext(schema || '.' || stream); see turns.rs) and
-- reads and appends under it. Until this migration an append made without a turn went
-- straight through, so a writer whose appends never lost a race (one that appends again at
-- once from a state it keeps, as an application node does with its cache) never took a turn
-- and beat the turn's holder every time: two nodes incrementing one counter, the other node's
-- increments used up their attempts.
--
-- Now `append` and `append_one`, called from a session that says it gives way (the setting
-- crossfold.give_way = 'on', which the store sets on each of its connections), try for each
-- stream they lock a shared transaction-level advisory lock on the stream's turn key. It is
-- granted at once unless another session holds the turn or waits for it; then the append is
-- refused as a conflict on that stream with "turn": true in its DETAIL, writes nothing, and
-- the client's executor takes its turn in the same queue. The turn's holder appends on the
-- session that holds the turn, where the exclusive transaction lock on the same key is
-- granted at once. Shared locks do not conflict with each other: appends without turns never
-- wait for, or refuse, each other, and nothing in the append ever waits on an advisory lock.
--
-- Sessions without the setting (processes built before this migration, other clients of the
-- app role) are not checked: during a rolling upgrade the old nodes append as they did and
-- give way to nobody. Their turns use keys of their own (computed in the client), so old and
-- new nodes do not queue behind each other's turns until every node runs the new build.
--
-- Costs: one try-lock per stream, released at commit (counted with
-- crates/crossfold-bench/index-cost/instructions.sh; see docs/benchmarks.md). Each lock takes
-- a slot of the server's lock table until commit: an append of thousands of streams needs
-- max_locks_per_transaction sized for it (SQLSTATE 53200 otherwise, and nothing written).

DO $migration$
BEGIN
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
    k           integer;
    give_way    boolean := coalesce(current_setting('crossfold.give_way', true) = 'on', false);
BEGIN
    -- What the events table's CHECK constraints checked until migration 9: each event has
    -- exactly one payload, and a schema version in 0..65535. One event (the commonest append)
    -- has a check of its own: looking into the arrays' elements costs more than this.
    IF cardinality(p_event_ids) = 1 THEN
        IF cardinality(p_payload_json) <> 1 OR cardinality(p_payload_bytes) <> 1
           OR array_position(p_payload_json, NULL)
              IS NOT DISTINCT FROM array_position(p_payload_bytes, NULL)
           OR NOT (0 <= ALL(p_schema_versions) AND 65535 >= ALL(p_schema_versions)) THEN
            RAISE EXCEPTION 'each event needs exactly one payload (JSON or bytes) and a schema version in 0..65535'
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF cardinality(p_event_ids) > 1 THEN
        IF NOT coalesce(
               cardinality(p_payload_json) = cardinality(p_event_ids)
               AND cardinality(p_payload_bytes) = cardinality(p_event_ids)
               AND cardinality(array_positions(p_payload_json, NULL))
                   + cardinality(array_positions(p_payload_bytes, NULL)) = cardinality(p_event_ids)
               AND NOT (array_positions(p_payload_json, NULL)
                        && array_positions(p_payload_bytes, NULL))
               AND 0 <= ALL(p_schema_versions) AND 65535 >= ALL(p_schema_versions),
               false) THEN
            RAISE EXCEPTION 'each event needs exactly one payload (JSON or bytes) and a schema version in 0..65535'
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    -- And what the streams' and events' version checks caught: counts of events per stream,
    -- and each event's offset within its stream's events, are what the versions come from.
    IF NOT coalesce(0 <= ALL(p_counts) AND 1 <= ALL(p_event_offset), false) THEN
        RAISE EXCEPTION 'a stream''s event count is negative or an event''s offset is below 1'
            USING ERRCODE = 'check_violation';
    END IF;
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

        -- Another writer's turn on the stream (held or waited for): give way, unless this
        -- session holds it. A shared lock never waits and never stops other appends; the
        -- exclusive one succeeds at once only in the session that holds the turn.
        IF give_way THEN
            k := hashtext(%3$L || s);
        END IF;
        IF give_way AND NOT (pg_try_advisory_xact_lock_shared(1128682578, k)
                             OR pg_try_advisory_xact_lock(1128682578, k)) THEN
            SELECT st.version INTO v FROM %1$I.streams st WHERE st.stream_id = s;
            v := coalesce(v, 0);
            conflicts := conflicts || jsonb_build_object('stream', s, 'actual', v, 'turn', true);
            failed := true;
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
$function$, current_schema(), current_schema(), current_schema() || '.');

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
    k     integer;
BEGIN
    -- What the events table's CHECK constraints checked until migration 9: each event has
    -- exactly one payload, and a schema version in 0..65535. One event (the commonest append)
    -- has a check of its own: looking into the arrays' elements costs more than this.
    IF n = 1 THEN
        IF cardinality(p_payload_json) <> 1 OR cardinality(p_payload_bytes) <> 1
           OR array_position(p_payload_json, NULL)
              IS NOT DISTINCT FROM array_position(p_payload_bytes, NULL)
           OR NOT (0 <= ALL(p_schema_versions) AND 65535 >= ALL(p_schema_versions)) THEN
            RAISE EXCEPTION 'each event needs exactly one payload (JSON or bytes) and a schema version in 0..65535'
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF n > 1 THEN
        IF NOT coalesce(
               cardinality(p_payload_json) = n
               AND cardinality(p_payload_bytes) = n
               AND cardinality(array_positions(p_payload_json, NULL))
                   + cardinality(array_positions(p_payload_bytes, NULL)) = n
               AND NOT (array_positions(p_payload_json, NULL)
                        && array_positions(p_payload_bytes, NULL))
               AND 0 <= ALL(p_schema_versions) AND 65535 >= ALL(p_schema_versions),
               false) THEN
            RAISE EXCEPTION 'each event needs exactly one payload (JSON or bytes) and a schema version in 0..65535'
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
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

    -- Another writer's turn on the stream, as in append().
    IF current_setting('crossfold.give_way', true) = 'on' THEN
        k := hashtext(%3$L || p_stream);
    END IF;
    IF k IS NOT NULL AND NOT (pg_try_advisory_xact_lock_shared(1128682578, k)
                              OR pg_try_advisory_xact_lock(1128682578, k)) THEN
        SELECT st.version INTO base FROM %1$I.streams st WHERE st.stream_id = p_stream;
        RAISE EXCEPTION 'version conflict'
            USING ERRCODE = 'CF001',
                  DETAIL = jsonb_build_array(jsonb_build_object(
                      'stream', p_stream, 'actual', coalesce(base, 0), 'turn', true))::text;
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
$function$, current_schema(), current_schema(), current_schema() || '.');
END
$migration$;

