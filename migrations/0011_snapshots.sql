-- Crossfold event store, eleventh migration: snapshots of command state.
--
-- A snapshot is a folded command state kept beside the events, so that the first command on a
-- long stream after a restart reads the snapshot and the events after it instead of the whole
-- history. It is only a shortcut: every append still checks the expected version of every
-- stream its command read, and the executor ignores a snapshot taken under another state
-- version or claiming versions its streams never reached. One row per state name and key (the
-- streams the command declared, in the order declared).
--
-- Like the events, the application role writes snapshots only through a SECURITY DEFINER
-- function, `save_snapshot`, which checks everything it is given (PgEventStore::grant_access
-- grants it, and SELECT on the table like on every other). Dropping snapshots is an operator's
-- action (`crossfold snapshots drop`), as quarantining an event or dropping a read index is:
-- it is left to the schema's owner, and the application role may delete nothing here.
--
-- A save is a writing transaction that is not an append: readers of the log pass it as they
-- pass any writer that never announced an append (migration 6). It reads the streams' versions
-- without locking their rows, which is sound because a stream's version never goes down (rows
-- are never removed, appends only add): a version found reached stays reached. (A FOR SHARE
-- lock would also take a ROW SHARE lock on `streams`, which readers of the log count as an
-- append's announcement, so the save would hold their horizon back.)
--
-- Refusals raise SQLSTATE CF011, which the store reports as StoreError::InvalidRequest; the
-- function writes nothing then.

CREATE TABLE snapshots (
    -- "C" collation, as the streams' ids: byte order, and the cheapest comparisons.
    state          text   COLLATE "C" NOT NULL,
    streams        text[] COLLATE "C" NOT NULL,
    state_version  integer     NOT NULL,
    discovered     text[] COLLATE "C" NOT NULL,
    -- The version of each stream of `streams` then `discovered`, and their sum.
    versions       bigint[]    NOT NULL,
    events         bigint      NOT NULL,
    -- The highest event id folded into the state.
    floor          uuid,
    payload        bytea       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (state, streams)
);

-- Why `p_id` is not a valid stream id, in the words of the Rust StreamId's check, or NULL when
-- it is one: 1 to 255 bytes of UTF-8, no control characters (Unicode's Cc: U+0001-U+001F,
-- U+007F-U+009F; text cannot hold U+0000), no whitespace (Unicode's White_Space) at either end.
-- System streams (`$...`) are valid, as they are read back from the store. The append
-- functions leave this check to the client, which validates every id it builds; functions
-- that take ids from the application role without such a client call this.
CREATE FUNCTION stream_id_problem(p_id text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_id IS NULL THEN
        RETURN 'must not be null';
    END IF;
    IF p_id = '' THEN
        RETURN 'must not be empty';
    END IF;
    IF octet_length(p_id) > 255 THEN
        RETURN format('is %s bytes long; at most 255 allowed', octet_length(p_id));
    END IF;
    -- E'' strings: the patterns mean the same whatever standard_conforming_strings says.
    IF p_id COLLATE "C" ~ E'[\\u0001-\\u001f\\u007f-\\u009f]' THEN
        RETURN 'must not contain control characters';
    END IF;
    IF p_id COLLATE "C" ~ E'^[\\u0009-\\u000d \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]'
       OR p_id COLLATE "C" ~ E'[\\u0009-\\u000d \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]$' THEN
        RETURN 'must not start or end with whitespace';
    END IF;
    RETURN NULL;
END
$$;

DO $migration$
BEGIN
-- Stores a snapshot, replacing the one under its key (p_state, p_streams) unless that one was
-- taken under the same state version and reflects more events: two processes saving the same
-- state at once keep the further one. A snapshot under another state version replaces it
-- whatever it reflects (the old one is of no use to today's code). Returns whether it stored.
--
-- Refuses (CF011), writing nothing: a state name not of 1 to 200 bytes, a negative state
-- version, no streams, arrays that are not one-dimensional from 1 or hold NULLs (a key only
-- equals a key with the same bounds), a stream id the store would not accept, a stream named
-- twice among the streams and the discovered ones, not one version per stream, a negative
-- version, a floor that is not a UUIDv7, no payload or one over 64 MiB, and a version beyond
-- its stream's current version (a stream that does not exist is at version 0).
EXECUTE format($function$
CREATE FUNCTION %1$I.save_snapshot(
    p_state          text,
    p_state_version  integer,
    p_streams        text[],
    p_discovered     text[],
    p_versions       bigint[],
    p_floor          uuid,
    p_payload        bytea
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    all_streams  text[];
    n            integer;
    bad          text;
    problem      text;
    claimed      bigint;
    actual       bigint;
BEGIN
    IF p_state IS NULL OR octet_length(p_state) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a snapshot''s state name must have 1 to 200 bytes'
            USING ERRCODE = 'CF011';
    END IF;
    IF p_state_version IS NULL OR p_state_version < 0 THEN
        RAISE EXCEPTION 'a snapshot''s state version must be 0 or more, not %%', p_state_version
            USING ERRCODE = 'CF011';
    END IF;
    IF p_payload IS NULL THEN
        RAISE EXCEPTION 'a snapshot needs a payload' USING ERRCODE = 'CF011';
    END IF;
    IF octet_length(p_payload) > 67108864 THEN
        RAISE EXCEPTION 'a snapshot of %% bytes is over the limit of 67108864',
            octet_length(p_payload)
            USING ERRCODE = 'CF011';
    END IF;
    IF coalesce(cardinality(p_streams), 0) = 0 THEN
        RAISE EXCEPTION 'a snapshot must name at least one stream' USING ERRCODE = 'CF011';
    END IF;
    IF p_discovered IS NULL OR p_versions IS NULL
       OR array_ndims(p_streams) <> 1 OR array_lower(p_streams, 1) <> 1
       OR (cardinality(p_discovered) > 0
           AND (array_ndims(p_discovered) <> 1 OR array_lower(p_discovered, 1) <> 1))
       OR (cardinality(p_versions) > 0
           AND (array_ndims(p_versions) <> 1 OR array_lower(p_versions, 1) <> 1)) THEN
        RAISE EXCEPTION 'a snapshot''s streams, discovered streams and versions must be one-dimensional arrays counted from 1'
            USING ERRCODE = 'CF011';
    END IF;
    all_streams := p_streams || p_discovered;
    n := cardinality(all_streams);
    IF cardinality(p_versions) <> n THEN
        RAISE EXCEPTION 'a snapshot of %% streams has %% versions', n, cardinality(p_versions)
            USING ERRCODE = 'CF011';
    END IF;
    IF array_position(p_versions, NULL) IS NOT NULL OR NOT (0 <= ALL (p_versions)) THEN
        RAISE EXCEPTION 'a snapshot''s versions must be 0 or more' USING ERRCODE = 'CF011';
    END IF;
    IF p_floor IS NOT NULL AND substr(p_floor::text, 15, 1) <> '7' THEN
        RAISE EXCEPTION 'a snapshot''s floor %% is not a UUIDv7', p_floor
            USING ERRCODE = 'CF011';
    END IF;

    SELECT u.s, %1$I.stream_id_problem(u.s) INTO bad, problem
        FROM unnest(all_streams) AS u(s)
        WHERE %1$I.stream_id_problem(u.s) IS NOT NULL
        LIMIT 1;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'a snapshot''s stream id %% %%', quote_nullable(bad), problem
            USING ERRCODE = 'CF011';
    END IF;
    SELECT u.s INTO bad
        FROM unnest(all_streams) AS u(s)
        GROUP BY u.s HAVING count(*) > 1
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a snapshot names stream %% twice', quote_literal(bad)
            USING ERRCODE = 'CF011';
    END IF;

    -- Without a lock: see the top of this migration.
    SELECT u.s, u.v, coalesce(st.version, 0) INTO bad, claimed, actual
        FROM unnest(all_streams, p_versions) AS u(s, v)
        LEFT JOIN %1$I.streams st ON st.stream_id = u.s
        WHERE u.v > coalesce(st.version, 0)
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a snapshot claims stream %% at version %%, but it is at %%',
            quote_literal(bad), claimed, actual
            USING ERRCODE = 'CF011';
    END IF;

    INSERT INTO %1$I.snapshots AS sn (state, streams, state_version, discovered, versions,
                                      events, floor, payload, taken_at)
    VALUES (p_state, p_streams, p_state_version, p_discovered, p_versions,
            (SELECT coalesce(sum(v.v), 0) FROM unnest(p_versions) AS v(v))::bigint,
            p_floor, p_payload, now())
    ON CONFLICT (state, streams) DO UPDATE
        SET state_version = EXCLUDED.state_version, discovered = EXCLUDED.discovered,
            versions = EXCLUDED.versions, events = EXCLUDED.events, floor = EXCLUDED.floor,
            payload = EXCLUDED.payload, taken_at = EXCLUDED.taken_at
        WHERE NOT (sn.state_version = EXCLUDED.state_version AND sn.events > EXCLUDED.events);
    RETURN FOUND;
END
$$
$function$, current_schema());
END
$migration$;

REVOKE ALL ON FUNCTION save_snapshot, stream_id_problem FROM PUBLIC;
