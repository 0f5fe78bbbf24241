-- crossfold:no-transaction
--
-- Indexes that keep filtered reads of the global log O(batch): each serves one kind of
-- subscription — by stream, by category (the part of a stream id before its first '-': the
-- streams `account-1`, `account-2`, ... are category `account`) and by event type — in log order
-- from any position, so a read never scans the rest of a stream, category or log to find its
-- batch. Without them a stream filter sorted the whole stream per batch and a type filter fell
-- into a sequential scan and a sort.
--
-- Built CONCURRENTLY, so appends go on while a large log is indexed; that cannot run inside a
-- transaction, so this file runs statement by statement. A build that failed half-way leaves an
-- invalid index behind: each is dropped first, so running the migration again starts clean.
DROP INDEX CONCURRENTLY IF EXISTS events_stream_log_idx;
CREATE INDEX CONCURRENTLY events_stream_log_idx
    ON events (stream_id, transaction_id, sequence);
DROP INDEX CONCURRENTLY IF EXISTS events_category_log_idx;
CREATE INDEX CONCURRENTLY events_category_log_idx
    ON events (split_part(stream_id, '-', 1), transaction_id, sequence);
DROP INDEX CONCURRENTLY IF EXISTS events_type_log_idx;
CREATE INDEX CONCURRENTLY events_type_log_idx
    ON events (event_type, transaction_id, sequence);
