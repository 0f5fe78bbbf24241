//! The store's statements, built once per schema. Each is prepared once per pooled connection
//! (`prepare_cached`), so a call costs one Bind/Execute round trip.

/// Columns of an event row, in the order `read::decode_event` expects them.
pub(crate) const EVENT_COLUMNS: &str = "transaction_id, sequence, event_id, stream_id, \
     stream_version, event_type, schema_version, payload_json, payload_bytes, metadata";

/// Visibility horizon of the global log: every transaction below it has finished.
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())";

#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) append: String,
    pub(crate) append_one: String,
    pub(crate) read_stream: String,
    pub(crate) read_one: String,
    pub(crate) read_many: String,
    pub(crate) read_all: String,
    pub(crate) read_all_streams: String,
    pub(crate) read_all_types: String,
    pub(crate) read_all_streams_types: String,
    pub(crate) head: String,
    pub(crate) probe: String,
    pub(crate) existing_event: String,
    pub(crate) notify: String,
    pub(crate) channel: String,
}

impl Sql {
    /// Statements for the store in `schema` (already validated as a plain identifier).
    pub(crate) fn new(schema: &str) -> Self {
        // The first column says whether events after the position are committed but not yet
        // visible (an older transaction is still open): the caller then waits briefly and
        // reads again, so a read sees everything committed before it started.
        let read_all = |filter: &str| {
            format!(
                "SELECT p.pending, e.* \
                 FROM (SELECT EXISTS (SELECT 1 FROM {schema}.events \
                                      WHERE (transaction_id, sequence) > ($1, $2) \
                                        AND transaction_id >= {HORIZON}{filter}) AS pending) p \
                 LEFT JOIN LATERAL ( \
                     SELECT {EVENT_COLUMNS} FROM {schema}.events \
                     WHERE (transaction_id, sequence) > ($1, $2) \
                       AND transaction_id < {HORIZON}{filter} \
                     ORDER BY transaction_id, sequence LIMIT $3) e ON true"
            )
        };
        Self {
            append: format!(
                "SELECT transaction_id, versions, sequences \
                 FROM {schema}.append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            append_one: format!(
                "SELECT transaction_id, version, sequences \
                 FROM {schema}.append_one($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            // A whole stream: as lean as a read can be. Versions are gap-free, so the stream's
            // version is the last event's (0 when there is none).
            read_stream: format!(
                "SELECT {EVENT_COLUMNS} FROM {schema}.events \
                 WHERE stream_id = $1 ORDER BY stream_version"
            ),
            // One stream: its version and its events in one statement. The version comes from
            // the streams row because the events alone cannot tell it when a limit cuts them
            // short or when nothing follows `after`.
            read_one: format!(
                "SELECT s.version, e.transaction_id, e.sequence, e.event_id, e.stream_id, \
                        e.stream_version, e.event_type, e.schema_version, e.payload_json, \
                        e.payload_bytes, e.metadata \
                 FROM (SELECT coalesce(max(st.version), 0) AS version \
                       FROM {schema}.streams st WHERE st.stream_id = $1) s \
                 LEFT JOIN LATERAL ( \
                     SELECT {EVENT_COLUMNS} FROM {schema}.events ev \
                     WHERE ev.stream_id = $1 AND ev.stream_version > $2 \
                     ORDER BY ev.stream_version LIMIT $3) e ON true"
            ),
            read_many: format!(
                "SELECT r.ord, coalesce(st.version, 0), e.transaction_id, e.sequence, e.event_id, \
                        e.stream_id, e.stream_version, e.event_type, e.schema_version, \
                        e.payload_json, e.payload_bytes, e.metadata \
                 FROM unnest($1::text[], $2::int8[], $3::int8[]) \
                      WITH ORDINALITY AS r(stream_id, after, lim, ord) \
                 LEFT JOIN {schema}.streams st ON st.stream_id = r.stream_id \
                 LEFT JOIN LATERAL ( \
                     SELECT {EVENT_COLUMNS} FROM {schema}.events ev \
                     WHERE ev.stream_id = r.stream_id AND ev.stream_version > r.after \
                     ORDER BY ev.stream_version LIMIT r.lim) e ON true \
                 ORDER BY r.ord, e.stream_version"
            ),
            read_all: read_all(""),
            read_all_streams: read_all(" AND stream_id = ANY($4)"),
            read_all_types: read_all(" AND event_type = ANY($4)"),
            read_all_streams_types: read_all(" AND stream_id = ANY($4) AND event_type = ANY($5)"),
            head: format!(
                "SELECT p.pending, h.transaction_id, h.sequence \
                 FROM (SELECT EXISTS (SELECT 1 FROM {schema}.events \
                                      WHERE transaction_id >= {HORIZON}) AS pending) p \
                 LEFT JOIN LATERAL ( \
                     SELECT transaction_id, sequence FROM {schema}.events \
                     WHERE transaction_id < {HORIZON} \
                     ORDER BY transaction_id DESC, sequence DESC LIMIT 1) h ON true"
            ),
            // Whether events after a position are visible, and whether any have committed at
            // all (committed but behind the horizon: worth re-checking within milliseconds).
            probe: format!(
                "SELECT EXISTS (SELECT 1 FROM {schema}.events \
                                WHERE (transaction_id, sequence) > ($1, $2) \
                                  AND transaction_id < {HORIZON}), \
                        EXISTS (SELECT 1 FROM {schema}.events \
                                WHERE (transaction_id, sequence) > ($1, $2))"
            ),
            existing_event: format!(
                "SELECT event_id FROM {schema}.events WHERE event_id = ANY($1) LIMIT 1"
            ),
            notify: "SELECT pg_notify($1, '')".to_owned(),
            channel: format!("crossfold_{schema}"),
        }
    }
}
