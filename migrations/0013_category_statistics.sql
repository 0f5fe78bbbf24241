-- Crossfold event store, thirteenth migration: statistics on the category of an event's stream.
--
-- A read of the log filtered by category, in a store without the optional category index
-- (migration 7), reads the log index in order and checks each event's category,
-- split_part(stream_id, '-', 1), on the rows it reads: O(batch) for a category that makes up a
-- fair share of the log. PostgreSQL keeps no statistics on an expression unless asked, and
-- guesses that 0.5 % of the rows match any one category. The first executions of a prepared
-- statement on each connection are planned for their values (custom plans), and with that guess
-- a batch of 1,000 from the start of a log of a few hundred thousand events looked cheaper as a
-- scan of the whole table and a sort than as a walk of the log index: every such batch read the
-- whole table. Measured by `crossfold-bench big-log` on a log of 200,000 account events: a
-- projection filtered on the `account` category rebuilt it at 24,525 events/s without these
-- statistics and at 183,918 events/s with them.
--
-- Statistics on the expressions a log read filters on (PostgreSQL 14 and later; on 13 the
-- guess stays, and the optional category index is the remedy) give the planner the real share
-- of each category and of system streams. They cost nothing on the write path; ANALYZE (and
-- autovacuum's) samples them with the table. Creating them and the ANALYZE below take the
-- events table's SHARE UPDATE EXCLUSIVE lock, as a VACUUM does: appends and reads go on, and the
-- migration waits (up to its lock timeout) for a vacuum or index build under way.

DO $migration$
BEGIN
    IF current_setting('server_version_num')::integer >= 140000 THEN
        EXECUTE 'CREATE STATISTICS IF NOT EXISTS events_category_stats '
                'ON (split_part(stream_id, ''-'', 1)) FROM events';
        EXECUTE 'CREATE STATISTICS IF NOT EXISTS events_system_stream_stats '
                'ON (starts_with(stream_id, ''$'')) FROM events';
    END IF;
END
$migration$;

ANALYZE events;
