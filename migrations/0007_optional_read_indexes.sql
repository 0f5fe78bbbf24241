-- Crossfold event store, seventh migration: the category and event-type indexes of 0003 become
-- optional.
--
-- Every append inserts one entry per event into each index of the events table, and the two
-- read indexes by category and by event type took a measured fifth to a third of the rate of
-- bulk appends (docs/benchmarks.md, "What the schema costs a write"). They serve only reads of
-- the log filtered by category or by type, which most stores never make. From now on a store
-- has them where such reads are made: PgEventStore::create_read_index (or `crossfold indexes
-- create category|type`) builds one without blocking appends, and the read statements follow
-- what exists. Without its index, a read filtered by category or type scans the log from its
-- position and checks the filter on each event: cheap for a category or type that makes up a
-- fair share of the log, up to the rest of the log for a rare one.
--
-- This migration drops each of the two indexes only where no read has used it: an index that
-- the server's statistics show scanned (pg_stat_all_indexes.idx_scan > 0 since the last reset
-- of the statistics) stays, so a store whose subscriptions filter by category or type keeps
-- its O(batch) reads. Reads served only by a standby do not count on the primary: create the
-- index again there (see CHANGELOG.md). An index left invalid by a failed build of 0003 is
-- dropped too. The stream index of 0003 stays: reads of the log by stream are common (a
-- projection of one aggregate type's streams, a process manager following its streams) and
-- without it each such read would sort its whole stream.
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
    FOREACH name IN ARRAY ARRAY['events_category_log_idx', 'events_type_log_idx'] LOOP
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
END
$migration$;
