-- Crossfold event store, fourteenth migration: archived streams, and a log that can be
-- partitioned by position.
--
-- # Archived streams
--
-- A stream that is closed for good (an account closed years ago, an order long delivered) can be
-- archived: `archive_stream` moves its events from `events` into `archived_events` in one
-- transaction, and marks its `streams` row. From then on the stream is read-only: an append to
-- it is refused (SQLSTATE CF012, which the store reports as PgStreamArchived) and its events are
-- on no hot path — no stream read, log read, subscription or projection meets them. They are
-- never lost: a DELETE from `events` is refused unless the very same row (every column) is in
-- `archived_events`, and `archived_events` is as immutable as `events`. The store reads an
-- archived stream back on request (PgEventStore::read_archived_stream, `crossfold archive
-- read`), and a command that reads one gets the store's configured answer: a typed error, or
-- the archived events.
--
-- Archiving refuses, writing nothing, when a projection whose checkpoint the store keeps has not
-- yet read the stream's last event (it would never see the events), unless forced, and when
-- not every version of the stream is in the log (some are in a detached partition).
--
-- # A partitioned log
--
-- `partition_log` converts the events table, on the owner's request, into a table partitioned by
-- RANGE of transaction id (the commit half of a position, in stored terms): old partitions hold
-- old positions and go cold, and operators can detach them to archive them. It is a procedure of
-- four steps, each committed before the next, so that appends go on through all but the last:
--   1. every event id is recorded in `event_ids` (see below): a trigger records new events'
--      ids, then the stored ones are copied (one pass over the table, appends go on);
--   2. a CHECK that every stored event lies below a bound (the next transaction id plus a
--      margin) is added NOT VALID and validated (a second pass; appends go on);
--   3. under the events table's ACCESS EXCLUSIVE lock — no scan, catalog changes only — the
--      table becomes the first partition, FROM (MINVALUE) TO (bound), of a new partitioned
--      `events` with the same columns, indexes, triggers and grants, plus a DEFAULT partition;
--   4. partitions ahead of the log are created (`ensure_log_partitions`).
-- An append whose transaction id reaches the bound before step 3 is done is refused by the
-- CHECK (nothing is written; a retry succeeds after the switch): the margin (1,000,000
-- transaction ids unless given) must outlast step 2.
--
-- What partitioning changes about uniqueness: PostgreSQL enforces a unique index only within a
-- partition unless it contains the partition key, and neither (stream_id, stream_version) nor
-- event_id does.
-- * Event ids are kept unique across partitions by `event_ids`, one row per event ever stored
--   (with its position), whose primary key refuses a repeated id: every insert into `events`
--   records its ids there in the same statement (a statement-level trigger). Rows stay when a
--   partition is detached or a stream archived, so an id is never handed out twice. The store
--   finds an event by id through it.
-- * A stream's versions: every partition has a unique index on (stream_id, stream_version), and
--   across partitions the append functions keep them apart as before: they write a stream's
--   events under its row's lock at versions above the row's version, which only grows.
--
-- Partitions are named events_000000, events_000001, ... in the order created, and recorded in
-- `log_partitions`; `ensure_log_partitions` keeps `ahead` partitions of `size` transaction ids
-- beyond the next transaction id (the store calls it when it connects and when one of its
-- appends comes within `ahead - 1` partitions of the end; `crossfold partitions create` calls
-- it too). Partitions must stay ahead: an event of a transaction id beyond them goes to the
-- default partition, and an append routed there while the partition for it is being attached
-- fails, writing nothing (PostgreSQL checks the default partition's new bounds when it locks
-- it); the store reports that as contention, which a retry gets past. Events of transaction ids no
-- partition covers (after a new log epoch, see migration 2, before partitions caught up) land
-- in events_default; new partitions then start above them.
-- `detach_log_partition` detaches a partition whose range the log has passed (no open or future
-- transaction can write there) and that every projection has read, leaving it as a plain
-- immutable table to dump and drop; `attach_log_partition` puts a detached one back.

ALTER TABLE streams ADD COLUMN archived boolean NOT NULL DEFAULT false;

CREATE TABLE archived_events (LIKE events INCLUDING CONSTRAINTS);
ALTER TABLE archived_events
    ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT archived_events_pkey PRIMARY KEY (stream_id, stream_version);
-- Finding an event by id (operators' reads) finds archived ones too.
CREATE INDEX archived_events_event_id_idx ON archived_events (event_id);

CREATE TRIGGER archived_events_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON archived_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_change();
ALTER TABLE archived_events ENABLE ALWAYS TRIGGER archived_events_immutable;

-- Every event id ever stored in a partitioned log, and where (empty until `partition_log`).
CREATE TABLE event_ids (
    event_id        uuid   PRIMARY KEY,
    transaction_id  xid8   NOT NULL,
    sequence        bigint NOT NULL
);

CREATE TABLE log_partitioning (
    only_row      boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    -- Transaction ids per partition, and how many partitions to keep ahead of the log.
    size          bigint      NOT NULL CHECK (size > 0),
    ahead         integer     NOT NULL CHECK (ahead BETWEEN 1 AND 1000),
    converted_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE log_partitions (
    name         text        PRIMARY KEY,
    -- The range of transaction ids, lower inclusive, upper exclusive; no lower bound is the
    -- start of the log, no bounds at all the default partition.
    lower_bound  xid8,
    upper_bound  xid8,
    created_at   timestamptz NOT NULL DEFAULT now(),
    detached_at  timestamptz
);

-- Events stay immutable row by row now, so that a DELETE can be checked event by event.
DROP TRIGGER events_immutable ON events;
CREATE TRIGGER events_immutable
    BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_event_change();
ALTER TABLE events ENABLE ALWAYS TRIGGER events_immutable;

DO $migration$
BEGIN
-- A DELETE of an event passes only for an event whose every column is in archived_events.
EXECUTE format($function$
CREATE FUNCTION %1$I.refuse_unarchived_delete() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM %1$I.archived_events a
               WHERE a.stream_id = OLD.stream_id AND a.stream_version = OLD.stream_version
                 AND (a.sequence, a.transaction_id, a.event_id, a.event_type, a.schema_version,
                      a.payload_json, a.payload_bytes, a.metadata, a.recorded_at)
                     IS NOT DISTINCT FROM
                     (OLD.sequence, OLD.transaction_id, OLD.event_id, OLD.event_type,
                      OLD.schema_version, OLD.payload_json, OLD.payload_bytes, OLD.metadata,
                      OLD.recorded_at)) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events are immutable: DELETE on %%.%% refused (only the events of an archived stream leave the log)',
        TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'CF002';
END
$$
$function$, current_schema());

-- Records the ids of the events a statement inserted (a partitioned log only).
EXECUTE format($function$
CREATE FUNCTION %1$I.record_event_ids() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO %1$I.event_ids (event_id, transaction_id, sequence)
        SELECT n.event_id, n.transaction_id, n.sequence FROM new_events n;
    RETURN NULL;
END
$$
$function$, current_schema());

EXECUTE format($function$
CREATE FUNCTION %1$I.refuse_archived_append() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'stream %% is archived: it takes no new events', OLD.stream_id
        USING ERRCODE = 'CF012', DETAIL = OLD.stream_id;
END
$$
$function$, current_schema());
END
$migration$;

CREATE TRIGGER events_kept
    BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_unarchived_delete();
ALTER TABLE events ENABLE ALWAYS TRIGGER events_kept;

-- Only archived rows reach the function: the condition is checked without calling it.
CREATE TRIGGER streams_archived
    BEFORE UPDATE ON streams
    FOR EACH ROW
    WHEN (OLD.archived AND (NEW.version IS DISTINCT FROM OLD.version OR NOT NEW.archived))
    EXECUTE FUNCTION refuse_archived_append();
ALTER TABLE streams ENABLE ALWAYS TRIGGER streams_archived;

DO $migration$
BEGIN
-- Archives stream p_stream: moves its events to archived_events and marks it archived. Refuses
-- (CF013), writing nothing: an id the store would not accept, a system stream, a stream without
-- events or already archived, a stream not all of whose versions are in the log, and (unless
-- p_force) a stream whose newest event (by position) a projection with a checkpoint here has
-- not read. Locks the stream's row, so appends to it wait and are then refused. Returns how
-- many events moved. The application role may call `archive_stream` (never forced);
-- `force_archive_stream` is the owner's.
EXECUTE format($function$
CREATE FUNCTION %1$I.archive_stream_as(p_stream text, p_force boolean, OUT events bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem   text := %1$I.stream_id_problem(p_stream);
    v         bigint;
    archived  boolean;
    last_tx   xid8;
    last_seq  bigint;
    behind    text;
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'stream id %%', problem USING ERRCODE = 'CF013';
    END IF;
    IF starts_with(p_stream, '$') THEN
        RAISE EXCEPTION 'stream %% is a system stream: they are not archived', p_stream
            USING ERRCODE = 'CF013';
    END IF;
    SELECT st.version, st.archived INTO v, archived
        FROM %1$I.streams st WHERE st.stream_id = p_stream FOR UPDATE;
    IF NOT FOUND OR v = 0 THEN
        RAISE EXCEPTION 'stream %% has no events', p_stream USING ERRCODE = 'CF013';
    END IF;
    IF archived THEN
        RAISE EXCEPTION 'stream %% is archived already', p_stream USING ERRCODE = 'CF013';
    END IF;
    -- The newest by position: a later version may hold an earlier position (transaction ids
    -- are handed out when a transaction first writes, not when it commits).
    SELECT ev.transaction_id, ev.sequence INTO last_tx, last_seq
        FROM %1$I.events ev WHERE ev.stream_id = p_stream
        ORDER BY ev.transaction_id DESC, ev.sequence DESC LIMIT 1;
    IF NOT coalesce(p_force, false) THEN
        SELECT string_agg(p.name, ', ' ORDER BY p.name) INTO behind
            FROM %1$I.projections p
            WHERE (p.position_commit, p.position_sequence)
                  < (last_tx::text::numeric, last_seq);
        IF behind IS NOT NULL THEN
            RAISE EXCEPTION 'stream %% is not archived: projection(s) %% have not read its last event yet (archive it once they have, or force it)',
                p_stream, behind USING ERRCODE = 'CF013';
        END IF;
    END IF;
    INSERT INTO %1$I.archived_events (sequence, transaction_id, event_id, stream_id,
                                      stream_version, event_type, schema_version,
                                      payload_json, payload_bytes, metadata, recorded_at)
        SELECT ev.sequence, ev.transaction_id, ev.event_id, ev.stream_id, ev.stream_version,
               ev.event_type, ev.schema_version, ev.payload_json, ev.payload_bytes,
               ev.metadata, ev.recorded_at
        FROM %1$I.events ev WHERE ev.stream_id = p_stream;
    GET DIAGNOSTICS events = ROW_COUNT;
    IF events <> v THEN
        RAISE EXCEPTION 'stream %% is not archived: %% of its %% events are in the log (the rest are in a detached partition)',
            p_stream, events, v USING ERRCODE = 'CF013';
    END IF;
    DELETE FROM %1$I.events ev WHERE ev.stream_id = p_stream;
    UPDATE %1$I.streams st SET archived = true, updated_at = now()
        WHERE st.stream_id = p_stream;
END
$$
$function$, current_schema());

EXECUTE format($function$
CREATE FUNCTION %1$I.archive_stream(p_stream text, OUT events bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT %1$I.archive_stream_as(p_stream, false) $$
$function$, current_schema());

EXECUTE format($function$
CREATE FUNCTION %1$I.force_archive_stream(p_stream text, OUT events bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT %1$I.archive_stream_as(p_stream, true) $$
$function$, current_schema());

-- Creates the partition of events for transaction ids [p_lower, p_upper) (owner only).
EXECUTE format($function$
CREATE FUNCTION %1$I.add_log_partition(p_lower numeric, p_upper numeric) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name  text := 'events_' || lpad((SELECT count(*) FROM %1$I.log_partitions lp
                                     WHERE lp.upper_bound IS NOT NULL)::text, 6, '0');
BEGIN
    EXECUTE format('CREATE TABLE %%I.%%I (LIKE %%I.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   %2$L, name, %2$L);
    PERFORM %1$I.prepare_log_partition(name);
    EXECUTE format('ALTER TABLE %%I.events ATTACH PARTITION %%I.%%I FOR VALUES FROM (%%L) TO (%%L)',
                   %2$L, %2$L, name, p_lower::text, p_upper::text);
    INSERT INTO %1$I.log_partitions (name, lower_bound, upper_bound)
        VALUES (name, p_lower::text::xid8, p_upper::text::xid8);
    RETURN name;
END
$$
$function$, current_schema(), current_schema());

-- What a new partition has of its own before it is attached (its indexes, row triggers and
-- CHECKs come from the partitioned table): the unique index of its streams' versions, the
-- refusal of TRUNCATE, statistics on the expressions log reads filter on (migration 13), and
-- the partitioned table's grants (reads through the table need none, but operators' and
-- health's looks at one partition do).
EXECUTE format($function$
CREATE FUNCTION %1$I.prepare_log_partition(p_name text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g  record;
BEGIN
    FOR g IN SELECT a.privilege_type, a.grantee
             FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = format('%%I.events', %2$L)::regclass
               AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %%s ON %%I.%%I TO %%s', g.privilege_type, %2$L, p_name,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
    END LOOP;
    EXECUTE format('ALTER TABLE %%I.%%I ADD CONSTRAINT %%I UNIQUE (stream_id, stream_version)',
                   %2$L, p_name, p_name || '_stream_version_key');
    EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %%I.%%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %%I.refuse_event_change()',
                   %2$L, p_name, %2$L);
    EXECUTE format('ALTER TABLE %%I.%%I ENABLE ALWAYS TRIGGER events_no_truncate', %2$L, p_name);
    IF current_setting('server_version_num')::integer >= 140000 THEN
        EXECUTE format('CREATE STATISTICS %%I.%%I ON (split_part(stream_id, ''-'', 1)) FROM %%I.%%I',
                       %2$L, p_name || '_category_stats', %2$L, p_name);
        EXECUTE format('CREATE STATISTICS %%I.%%I ON (starts_with(stream_id, ''$'')) FROM %%I.%%I',
                       %2$L, p_name || '_system_stream_stats', %2$L, p_name);
    END IF;
END
$$
$function$, current_schema(), current_schema());

-- Keeps `ahead` partitions of `size` transaction ids beyond the next transaction id; returns
-- how many it created (0 for a log that is not partitioned, and on a standby). Concurrent
-- callers take turns. New partitions start above every recorded range (detached ones too) and
-- above every event in the default partition.
EXECUTE format($function$
CREATE FUNCTION %1$I.ensure_log_partitions() RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg         %1$I.log_partitioning;
    next        numeric;
    hi          numeric;
    lo          numeric;
    in_default  numeric;
    made        integer := 0;
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN 0;
    END IF;
    SELECT * INTO cfg FROM %1$I.log_partitioning;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    next := pg_snapshot_xmax(pg_current_snapshot())::text::numeric
            + (SELECT ls.shift FROM %1$I.log_state ls);
    -- Nothing to do (the usual answer) takes no lock and writes nothing.
    SELECT max(p.upper_bound::text::numeric) INTO hi FROM %1$I.log_partitions p;
    IF hi >= next + cfg.ahead * cfg.size THEN
        RETURN 0;
    END IF;
    -- Attaching locks the default partition (ACCESS EXCLUSIVE, with a scan of it, usually
    -- empty), and every read of the log opens it: behind a long read, give up and let a later
    -- call try again rather than queue every read and append behind the attach.
    IF current_setting('lock_timeout') IN ('0', '0ms') THEN
        PERFORM set_config('lock_timeout', '1s', true);
    END IF;
    PERFORM FROM %1$I.log_partitioning FOR UPDATE;
    SELECT max(p.upper_bound::text::numeric) INTO hi FROM %1$I.log_partitions p;
    SELECT max(d.transaction_id)::text::numeric INTO in_default FROM %1$I.events_default d;
    hi := greatest(coalesce(hi, 0), coalesce(in_default + 1, 0));
    WHILE hi < next + cfg.ahead * cfg.size LOOP
        -- After a jump of the log (a new epoch, see migration 2) the range skipped stays the
        -- default partition's.
        lo := CASE WHEN hi < next - cfg.size THEN next ELSE hi END;
        hi := lo + cfg.size;
        PERFORM %1$I.add_log_partition(lo, hi);
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$
$function$, current_schema());

-- Detaches partition p_name, leaving it as a plain table in the schema that no one can change
-- (to dump and drop, or to attach again). Refuses (CF013): a name not recorded, the default
-- partition, one detached already, one whose range the log has not passed yet (an open or
-- future transaction could still write there), and (unless p_force) one holding events a
-- projection with a checkpoint here has not read. Detaching takes the events table's ACCESS
-- EXCLUSIVE lock for a moment (appends and reads wait for it; it waits at most lock_timeout,
-- 10 s unless the session set one). Returns how many events left the log.
EXECUTE format($function$
CREATE FUNCTION %1$I.detach_log_partition(p_name text, p_force boolean, OUT events bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p        %1$I.log_partitions;
    passed   numeric;
    last_tx  xid8;
    last_seq bigint;
    behind   text;
BEGIN
    SELECT * INTO p FROM %1$I.log_partitions lp WHERE lp.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no partition of the log is named %%', p_name USING ERRCODE = 'CF013';
    END IF;
    IF p.upper_bound IS NULL THEN
        RAISE EXCEPTION '%% is the default partition: it is not detached', p_name
            USING ERRCODE = 'CF013';
    END IF;
    IF p.detached_at IS NOT NULL THEN
        RAISE EXCEPTION 'partition %% is detached already', p_name USING ERRCODE = 'CF013';
    END IF;
    passed := pg_snapshot_xmin(pg_current_snapshot())::text::numeric
              + (SELECT ls.shift FROM %1$I.log_state ls);
    IF p.upper_bound::text::numeric > passed THEN
        RAISE EXCEPTION 'partition %% is not detached: the log has not passed its range yet', p_name
            USING ERRCODE = 'CF013';
    END IF;
    EXECUTE format('SELECT ev.transaction_id, ev.sequence FROM %%I.%%I ev '
                   'ORDER BY ev.transaction_id DESC, ev.sequence DESC LIMIT 1', %2$L, p_name)
        INTO last_tx, last_seq;
    IF last_tx IS NOT NULL AND NOT coalesce(p_force, false) THEN
        SELECT string_agg(pr.name, ', ' ORDER BY pr.name) INTO behind
            FROM %1$I.projections pr
            WHERE (pr.position_commit, pr.position_sequence)
                  < (last_tx::text::numeric, last_seq);
        IF behind IS NOT NULL THEN
            RAISE EXCEPTION 'partition %% is not detached: projection(s) %% have not read its events yet (detach it once they have, or force it)',
                p_name, behind USING ERRCODE = 'CF013';
        END IF;
    END IF;
    -- Counted before the lock below: the log has passed the range, so nothing changes there.
    EXECUTE format('SELECT count(*) FROM %%I.%%I', %2$L, p_name) INTO events;
    IF current_setting('lock_timeout') IN ('0', '0ms') THEN
        PERFORM set_config('lock_timeout', '10s', true);
    END IF;
    -- Under the events table's ACCESS EXCLUSIVE lock from here to the commit: nothing below
    -- reads the partition's rows.
    EXECUTE format('ALTER TABLE %%I.events DETACH PARTITION %%I.%%I', %2$L, %2$L, p_name);
    -- Detaching dropped the row triggers it had from events: it stays immutable by its own.
    EXECUTE format('CREATE TRIGGER archive_immutable BEFORE UPDATE OR DELETE ON %%I.%%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %%I.refuse_event_change()',
                   %2$L, p_name, %2$L);
    EXECUTE format('ALTER TABLE %%I.%%I ENABLE ALWAYS TRIGGER archive_immutable', %2$L, p_name);
    -- A CHECK of its range (validated when it is attached again, before the attach takes any
    -- lock of the events table, so that the attach itself needs no scan).
    EXECUTE format('ALTER TABLE %%I.%%I ADD CONSTRAINT %%I CHECK (%%s transaction_id < %%L::xid8) NOT VALID',
                   %2$L, p_name, p_name || '_range',
                   CASE WHEN p.lower_bound IS NULL THEN ''
                        ELSE format('transaction_id >= %%L::xid8 AND', p.lower_bound::text) END,
                   p.upper_bound::text);
    UPDATE %1$I.log_partitions lp SET detached_at = now() WHERE lp.name = p_name;
END
$$
$function$, current_schema(), current_schema());

-- Attaches detached partition p_name again, at its range. Refuses (CF013) a name not recorded,
-- one attached, and one whose table was dropped. Its events are back at their positions —
-- behind a subscriber that read past them while it was detached. Returns how many events.
EXECUTE format($function$
CREATE FUNCTION %1$I.attach_log_partition(p_name text, OUT events bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p  %1$I.log_partitions;
BEGIN
    SELECT * INTO p FROM %1$I.log_partitions lp WHERE lp.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no partition of the log is named %%', p_name USING ERRCODE = 'CF013';
    END IF;
    IF p.detached_at IS NULL THEN
        RAISE EXCEPTION 'partition %% is attached', p_name USING ERRCODE = 'CF013';
    END IF;
    IF to_regclass(format('%%I.%%I', %2$L, p_name)) IS NULL THEN
        RAISE EXCEPTION 'partition %% was dropped after it was detached', p_name
            USING ERRCODE = 'CF013';
    END IF;
    -- The scans first, locking only the detached table: its range CHECK, and the count.
    EXECUTE format('ALTER TABLE %%I.%%I VALIDATE CONSTRAINT %%I', %2$L, p_name, p_name || '_range');
    EXECUTE format('SELECT count(*) FROM %%I.%%I', %2$L, p_name) INTO events;
    IF current_setting('lock_timeout') IN ('0', '0ms') THEN
        PERFORM set_config('lock_timeout', '10s', true);
    END IF;
    EXECUTE format('DROP TRIGGER archive_immutable ON %%I.%%I', %2$L, p_name);
    EXECUTE format('ALTER TABLE %%I.events ATTACH PARTITION %%I.%%I FOR VALUES FROM (%%s) TO (%%L)',
                   %2$L, %2$L, p_name,
                   coalesce(quote_literal(p.lower_bound::text), 'MINVALUE'),
                   p.upper_bound::text);
    EXECUTE format('ALTER TABLE %%I.%%I DROP CONSTRAINT %%I', %2$L, p_name, p_name || '_range');
    UPDATE %1$I.log_partitions lp SET detached_at = NULL WHERE lp.name = p_name;
END
$$
$function$, current_schema(), current_schema());

-- The conversion (see the top of this file). CALL it as the schema's owner, outside a
-- transaction block: it commits after each step. Run again after an interruption, it resumes.
-- Reports how long each step took, in seconds, and how many event ids it recorded.
EXECUTE format($function$
CREATE PROCEDURE %1$I.partition_log(p_size bigint, p_ahead integer DEFAULT 4,
                                    p_margin bigint DEFAULT 1000000,
                                    INOUT report jsonb DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    t         timestamptz := clock_timestamp();
    ids       bigint;
    s         text := %2$L;
    bound     numeric;
    last      bigint;
    called    boolean;
    seq       text;
    indexes   text[];
    defs      text[];
    i         integer;
    g         record;
BEGIN
    -- No SET clause (a procedure that commits cannot have one): the search path is pinned by
    -- hand, in each transaction.
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF p_size IS NULL OR p_size < 1 OR p_ahead IS NULL OR p_ahead NOT BETWEEN 1 AND 1000
       OR p_margin IS NULL OR p_margin < 0 THEN
        RAISE EXCEPTION 'partition_log needs a size of at least 1 transaction id, 1 to 1000 partitions ahead and a margin of at least 0'
            USING ERRCODE = 'CF013';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class c
        WHERE c.oid = format('%%I.events', s)::regclass) = 'p' THEN
        RAISE EXCEPTION 'the log of schema %% is partitioned already', s USING ERRCODE = 'CF013';
    END IF;

    -- 1. Every event id, from now on and stored.
    DROP TRIGGER IF EXISTS events_ids ON %1$I.events;
    CREATE TRIGGER events_ids AFTER INSERT ON %1$I.events
        REFERENCING NEW TABLE AS new_events
        FOR EACH STATEMENT EXECUTE FUNCTION %1$I.record_event_ids();
    ALTER TABLE %1$I.events ENABLE ALWAYS TRIGGER events_ids;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    INSERT INTO %1$I.event_ids (event_id, transaction_id, sequence)
        SELECT ev.event_id, ev.transaction_id, ev.sequence FROM %1$I.events ev
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS ids = ROW_COUNT;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    report := jsonb_build_object('event_ids', ids,
                                 'ids_seconds', extract(epoch FROM clock_timestamp() - t));
    t := clock_timestamp();

    -- 2. The stored events' range.
    bound := pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::numeric
             + (SELECT ls.shift FROM %1$I.log_state ls) + p_margin;
    ALTER TABLE %1$I.events DROP CONSTRAINT IF EXISTS events_before_partitions;
    EXECUTE format('ALTER TABLE %%I.events ADD CONSTRAINT events_before_partitions '
                   'CHECK (transaction_id < %%L::pg_catalog.xid8) NOT VALID', s, bound::text);
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    ALTER TABLE %1$I.events VALIDATE CONSTRAINT events_before_partitions;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    report := report || jsonb_build_object('check_seconds',
                                           extract(epoch FROM clock_timestamp() - t));

    -- 3. The switch.
    t := clock_timestamp();
    LOCK TABLE %1$I.events IN ACCESS EXCLUSIVE MODE;
    report := report || jsonb_build_object('lock_wait_seconds',
                                           extract(epoch FROM clock_timestamp() - t));
    t := clock_timestamp();
    seq := pg_catalog.pg_get_serial_sequence(format('%%I.events', s), 'sequence');
    EXECUTE format('SELECT last_value, is_called FROM %%s', seq) INTO last, called;
    SELECT array_agg(c.relname::text ORDER BY c.relname),
           array_agg(pg_catalog.pg_get_indexdef(c.oid) ORDER BY c.relname)
        INTO indexes, defs
        FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
        WHERE x.indrelid = format('%%I.events', s)::regclass AND NOT x.indisunique
          AND x.indisvalid;
    ALTER TABLE %1$I.events ALTER COLUMN sequence DROP IDENTITY;
    ALTER TABLE %1$I.events RENAME TO events_000000;
    DROP TRIGGER events_immutable ON %1$I.events_000000;
    DROP TRIGGER events_kept ON %1$I.events_000000;
    DROP TRIGGER events_ids ON %1$I.events_000000;
    ALTER TABLE %1$I.events_000000 DROP CONSTRAINT events_event_id_key;
    FOR g IN SELECT st.stxname::text AS name FROM pg_catalog.pg_statistic_ext st
             WHERE st.stxrelid = format('%%I.events_000000', s)::regclass LOOP
        EXECUTE format('ALTER STATISTICS %%I.%%I RENAME TO %%I', s, g.name,
                       'events_000000' || substr(g.name, 7));
    END LOOP;

    CREATE TABLE %1$I.events (LIKE %1$I.events_000000 INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
        PARTITION BY RANGE (transaction_id);
    ALTER TABLE %1$I.events DROP CONSTRAINT events_before_partitions;
    -- Whoever could read or write the table can do so on the partitioned one.
    FOR g IN SELECT a.privilege_type, a.grantee
             FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = format('%%I.events_000000', s)::regclass
               AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %%s ON %%I.events TO %%s', g.privilege_type, s,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                            ELSE g.grantee::regrole::text END);
    END LOOP;
    CREATE SEQUENCE %1$I.events_sequence_seq CACHE 64 OWNED BY %1$I.events.sequence;
    IF called THEN
        PERFORM pg_catalog.setval(format('%%I.events_sequence_seq', s)::regclass, last, true);
    END IF;
    EXECUTE format('ALTER TABLE %%I.events ALTER COLUMN sequence SET DEFAULT '
                   'pg_catalog.nextval(%%L::pg_catalog.regclass)',
                   s, format('%%I.events_sequence_seq', s));
    EXECUTE format('ALTER TABLE %%I.events_000000 ALTER COLUMN sequence SET DEFAULT '
                   'pg_catalog.nextval(%%L::pg_catalog.regclass)',
                   s, format('%%I.events_sequence_seq', s));
    FOR i IN 1 .. coalesce(array_length(indexes, 1), 0) LOOP
        EXECUTE format('ALTER INDEX %%I.%%I RENAME TO %%I', s, indexes[i],
                       'events_000000' || substr(indexes[i], 7));
        -- Built on a table with no partitions yet: the attach below adopts the old index.
        EXECUTE regexp_replace(defs[i], '^CREATE INDEX \S+ ON \S+ ',
                               format('CREATE INDEX %%I ON %%I.events ', indexes[i], s));
    END LOOP;
    IF current_setting('server_version_num')::integer >= 140000 THEN
        CREATE STATISTICS %1$I.events_category_stats
            ON (split_part(stream_id, '-', 1)) FROM %1$I.events;
        CREATE STATISTICS %1$I.events_system_stream_stats
            ON (starts_with(stream_id, '$')) FROM %1$I.events;
    END IF;
    EXECUTE format('ALTER TABLE %%I.events ATTACH PARTITION %%I.events_000000 '
                   'FOR VALUES FROM (MINVALUE) TO (%%L)', s, s, bound::text);
    CREATE TABLE %1$I.events_default (LIKE %1$I.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
    PERFORM %1$I.prepare_log_partition('events_default');
    ALTER TABLE %1$I.events ATTACH PARTITION %1$I.events_default DEFAULT;

    CREATE TRIGGER events_immutable BEFORE UPDATE ON %1$I.events
        FOR EACH ROW EXECUTE FUNCTION %1$I.refuse_event_change();
    CREATE TRIGGER events_kept BEFORE DELETE ON %1$I.events
        FOR EACH ROW EXECUTE FUNCTION %1$I.refuse_unarchived_delete();
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %1$I.events
        FOR EACH STATEMENT EXECUTE FUNCTION %1$I.refuse_event_change();
    CREATE TRIGGER events_ids AFTER INSERT ON %1$I.events
        REFERENCING NEW TABLE AS new_events
        FOR EACH STATEMENT EXECUTE FUNCTION %1$I.record_event_ids();
    ALTER TABLE %1$I.events ENABLE ALWAYS TRIGGER events_immutable;
    ALTER TABLE %1$I.events ENABLE ALWAYS TRIGGER events_kept;
    ALTER TABLE %1$I.events ENABLE ALWAYS TRIGGER events_no_truncate;
    ALTER TABLE %1$I.events ENABLE ALWAYS TRIGGER events_ids;


    INSERT INTO %1$I.log_partitioning (size, ahead) VALUES (p_size, p_ahead);
    INSERT INTO %1$I.log_partitions (name, lower_bound, upper_bound)
        VALUES ('events_000000', NULL, bound::text::xid8), ('events_default', NULL, NULL);
    -- How long the lock was held, from when it was granted (waiting for it is not counted).
    report := report || jsonb_build_object('switch_seconds',
                                           extract(epoch FROM clock_timestamp() - t));
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    -- 4. Partitions ahead.
    PERFORM %1$I.ensure_log_partitions();
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
END
$$
$function$, current_schema(), current_schema());
END
$migration$;

REVOKE ALL ON FUNCTION refuse_unarchived_delete, record_event_ids, refuse_archived_append,
    archive_stream_as, archive_stream, force_archive_stream, add_log_partition, prepare_log_partition, ensure_log_partitions,
    detach_log_partition, attach_log_partition FROM PUBLIC;
REVOKE ALL ON PROCEDURE partition_log FROM PUBLIC;
