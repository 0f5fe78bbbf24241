-- Crossfold event store, seventh migration: the log read indexes of 0003 — by stream, by
-- category, by event type — become optional, and what every append pays per event shrinks.
--
-- Every append inserts one entry per event into each index of the events table. Counted per
-- call by docs/benchmarks.md ("What the schema costs a write"), the three read indexes took
-- 79 % more server instructions per 100-event append and 18 % more per one-event append than
-- the first schema; each serves only reads of the log filtered its way, which most stores make
-- rarely or never. From now on a store has them where such reads are made:
-- PgEventStore::create_read_index (or `crossfold indexes create stream|category|type`) builds
-- one without blocking appends, and the read statements follow what exists. Without its index
-- a read filtered by category or type scans the log from its position and checks the filter
-- on each event (cheap for a category or type that makes up a fair share of the log, up to the
-- rest of the log for a rare one), and a read filtered by stream reads the stream through the
-- primary key and sorts it (O(events of the stream) per read).
--
-- This migration drops each of the three only where no read has used it: an index that the
-- server's statistics show scanned (pg_stat_all_indexes.idx_scan > 0 since the statistics were
-- last reset) stays, so a store whose subscriptions filter that way keeps its O(batch) reads.
-- Reads served only by a standby do not count on the primary: create the index again there
-- (see CHANGELOG.md). An index left invalid by a failed build of 0003 is dropped too.
--
-- Two changes make each remaining insertion cheaper:
-- * B-tree deduplication merges entries with equal keys when a leaf page fills. Every key of
--   the log and read indexes ends in the log position, so no two are ever equal: the search
--   for them only costs appends time. It is turned off for every non-unique index of events.
-- * The events sequence hands each session 64 values at a time instead of locking and updating
--   the sequence once per event. Positions order by (transaction_id, sequence): a transaction's
--   events take ascending values from its own session, which is all the order needs; values
--   are no longer dense across sessions (they never were gap-free).
--
-- Dropping an index takes the events table's lock for a moment; `migrate` gives up after its
-- lock timeout instead of queueing appends behind it, and can be run again.
DO $migration$
DECLARE
    name   text;
    index  regclass;
    scans  bigint;
    valid  boolean;
BEGIN
    FOREACH name IN ARRAY ARRAY['events_stream_log_idx', 'events_category_log_idx',
                                'events_type_log_idx'] LOOP
        index := to_regclass(format('%I.%I', current_schema(), name));
        CONTINUE WHEN index IS NULL;
        SELECT i.indisvalid AND i.indisready INTO valid FROM pg_index i WHERE i.indexrelid = index;
        SELECT s.idx_scan INTO scans FROM pg_stat_all_indexes s WHERE s.indexrelid = index;
        IF valid AND coalesce(scans, 0) > 0 THEN
            RAISE NOTICE 'crossfold: % kept: reads have used it (% index scans)', name, scans;
        ELSE
            EXECUTE format('DROP INDEX %s', index);
            RAISE NOTICE 'crossfold: % dropped: no read used it (create it again where reads filter that way)', name;
        END IF;
    END LOOP;

    FOR index IN SELECT i.indexrelid::regclass FROM pg_index i
                 WHERE i.indrelid = format('%I.events', current_schema())::regclass
                   AND NOT i.indisunique LOOP
        EXECUTE format('ALTER INDEX %s SET (deduplicate_items = off)', index);
    END LOOP;

    EXECUTE format('ALTER SEQUENCE %s CACHE 64',
                   pg_get_serial_sequence(format('%I.events', current_schema()), 'sequence'));
END
$migration$;
