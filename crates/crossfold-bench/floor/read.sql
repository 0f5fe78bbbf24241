-- W6 by hand: read one stream of about ten events.
\set n random(1, 100000)
SELECT event_id, stream_version, event_type, data, metadata FROM floor_events WHERE stream_id = 'account-' || :n ORDER BY stream_version;
