//! The store's statements, built once per schema. Each is prepared once per pooled connection
//! (`prepare_cached`), so a call costs one Bind/Execute round trip.
//!
//! # The visibility horizon
//!
//! A position's commit half is the appending transaction's id, handed out when the append
//! starts writing, not when it commits: an append that is still open may commit below events
//! that others committed after it started. A reader of the log therefore returns only events of
//! transactions below a *horizon* under which nothing can appear any more, and checkpoints
//! nothing above it. Every read statement computes the horizon from its own snapshot
//! ([`horizon`]): the snapshot's oldest open transaction that is not known to be *foreign* to
//! the store, or its `xmax` when there is none.
//!
//! A transaction is foreign when it was seen holding a transaction id without having announced
//! that it appends to this store. Every append announces itself before it has an id
//! (`register_append`, migration 0006: a `ROW EXCLUSIVE` lock on the store's `streams` table, held
//! until the transaction ends), and a transaction that already has an id cannot announce itself
//! any more (the append refuses). So a transaction once seen foreign writes no event of this
//! store, ever, and any reader may pass it from then on. The rest — appends, and transactions
//! whose kind is not known yet — holds the horizon: a reader never passes an append, so it
//! never checkpoints past events that commit later (the never-skip guarantee is the one the
//! server-wide horizon gave).
//!
//! Finding foreign transactions means reading `pg_locks`, which looks at every backend's locks
//! and costs more than a read of the log. So the reads take the foreign transactions as a
//! parameter: the ones the store already knows ([`read::horizon`](crate::read)), which it asks
//! the server about (`foreign_writers`) only when the horizon has held a reader back for some
//! 20 ms. A transaction open elsewhere on the server — in another database, on another table,
//! idle in transaction — then costs readers such a wait now and then, not a stall for as long
//! as it stays open. Only an open append of this store holds them back, and a short one usually
//! ends before the store asks.
//!
//! On a hot standby snapshots do not list open transactions, and the horizon stays the
//! snapshot's `xmin`: the oldest transaction open on the primary, as before.

use crate::read_index::{ReadIndex, ReadIndexSet};

/// Columns of an event row, in the order `read::Decoder::decode` expects them.
pub(crate) const EVENT_COLUMNS: &str = "transaction_id, sequence, event_id, stream_id, \
     stream_version, event_type, schema_version, payload_json, payload_bytes, metadata";

/// A log filter's shape: which of its conditions are set. Each shape has a statement of its
/// own, so a generic plan never has to allow for conditions that are absent.
pub(crate) mod shape {
    /// `LogFilter::streams` is set.
    pub(crate) const STREAMS: usize = 1;
    /// `LogFilter::categories` is set.
    pub(crate) const CATEGORIES: usize = 2;
    /// `LogFilter::event_types` is set.
    pub(crate) const TYPES: usize = 4;
    /// System streams (`$...`) are left out: no stream is named and `system_streams` is off.
    pub(crate) const NO_SYSTEM: usize = 8;
    /// How many shapes there are.
    pub(crate) const COUNT: usize = 16;
}

/// The category of a stream id in SQL: the part before its first `-`, as the optional
/// `events_category_log_idx` index computes it (the expression must match it exactly).
const CATEGORY: &str = "split_part(ev.stream_id, '-', 1)";

#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) append: String,
    pub(crate) append_one: String,
    /// The group function (group commit), one row per request (see `append::group`).
    pub(crate) append_group: String,
    /// The reads of streams in a schema without archived streams (before migration 14) and
    /// with them (see [`Sql::stream_reads`]).
    stream_reads: [StreamReads; 2],
    pub(crate) read_archived: String,
    /// One statement per set of optional read indexes and filter shape (see [`shape`] and
    /// [`Sql::read_all`]), all taking the same seven parameters: position (xid8, int8), limit,
    /// streams, categories, event types, and the open transactions known to be foreign.
    read_all: [[String; shape::COUNT]; ReadIndexSet::STATEMENT_SETS],
    pub(crate) head: String,
    pub(crate) probe: String,
    /// The open transactions of the statement's snapshot known never to append to the store.
    pub(crate) foreign_writers: String,
    /// What holds back committed events after a position (see `read::horizon::held_back`).
    pub(crate) held_back: String,
    /// An event id already stored, among `$1`: in a schema without (before migration 14) and
    /// with `event_ids` (see [`Sql::existing_event`]).
    existing_event: [String; 2],
    pub(crate) stream_behind: String,
    pub(crate) quarantined: String,
    pub(crate) notify: String,
    pub(crate) channel: String,
}

impl Sql {
    /// Statements for the store in `schema` (already validated: lowercase letters, digits and
    /// `_`; quoted everywhere, so reserved words such as `order` work too).
    pub(crate) fn new(schema: &str) -> Self {
        let q = quoted(schema);
        let read_horizon = horizon(&q, "$7");
        let read_all = std::array::from_fn(|set| {
            std::array::from_fn(|s| {
                read_all(&q, &read_horizon, s, ReadIndexSet::from_statement_bits(set))
            })
        });
        Self {
            append: format!(
                "SELECT transaction_id, versions, sequences \
                 FROM {q}.append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            append_one: format!(
                "SELECT transaction_id, version, sequences \
                 FROM {q}.append_one($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            append_group: format!(
                "SELECT request, transaction_id, versions, sequences, refused, message, detail, \
                        constraint_name \
                 FROM {q}.append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            stream_reads: [stream_reads(&q, "false"), stream_reads(&q, ARCHIVED)],
            // An archived stream's events, as `read_one` reads a stream in the log.
            read_archived: format!(
                "SELECT s.version, e.* \
                 FROM (SELECT coalesce(max(st.version), 0) AS version \
                       FROM {q}.streams st WHERE st.stream_id = $1) s \
                 LEFT JOIN LATERAL ( \
                     SELECT {EVENT_COLUMNS} FROM {q}.archived_events ev \
                     WHERE ev.stream_id = $1 AND ev.stream_version > $2 \
                     ORDER BY ev.stream_version LIMIT $3) e ON true"
            ),
            read_all,
            head: format!(
                "SELECT p.horizon, p.pending, l.transaction_id, l.sequence \
                 FROM {pending} \
                 LEFT JOIN LATERAL ( \
                     SELECT ev.transaction_id, ev.sequence FROM {q}.events ev \
                     WHERE ev.transaction_id < p.horizon \
                     ORDER BY ev.transaction_id DESC, ev.sequence DESC LIMIT 1) l ON true",
                pending = pending_of_log(&q, &horizon(&q, "$1"), "")
            ),
            // The first committed event after a position, and whether it is visible: the
            // lowest transaction id decides, so "none", "visible" and "committed but behind the
            // horizon" take one index probe. (An EXISTS would lose its ORDER BY ... LIMIT 1 and
            // let a generic plan pick a sequential scan, measured at 30 ms on 145,000 rows.)
            probe: format!(
                "SELECT ev.transaction_id < {horizon} FROM {q}.events ev \
                 WHERE (ev.transaction_id, ev.sequence) > ($1, $2) \
                 ORDER BY ev.transaction_id, ev.sequence LIMIT 1",
                horizon = horizon(&q, "$3")
            ),
            foreign_writers: format!("SELECT {q}.foreign_writers(pg_current_snapshot())"),
            // Not on a hot path (status and health): the horizon computed afresh, the oldest
            // open append, and the committed events behind the horizon after a position that
            // pass a filter, counted among at most $8 of them, up to $3. The filter as in
            // `inspect::position_before_last`.
            held_back: format!(
                "SELECT h.horizon, b.pid, b.transaction_id::text::int8, \
                        (extract(epoch FROM b.xact_start) * 1000000)::int8, \
                        c.matched, c.scanned \
                 FROM (SELECT {fresh} AS horizon) h \
                 LEFT JOIN LATERAL {q}.oldest_append() b ON true \
                 CROSS JOIN LATERAL ( \
                     SELECT least(count(*) FILTER (WHERE \
                                ($4::text[] IS NULL OR t.stream_id = ANY($4)) \
                            AND ($5::text[] IS NULL OR split_part(t.stream_id, '-', 1) = ANY($5)) \
                            AND ($6::text[] IS NULL OR t.event_type = ANY($6)) \
                            AND ($7 OR NOT starts_with(t.stream_id, '$'))), $3) AS matched, \
                            count(*) AS scanned \
                     FROM (SELECT ev.stream_id, ev.event_type FROM {q}.events ev \
                           WHERE (ev.transaction_id, ev.sequence) > ($1, $2) \
                             AND ev.transaction_id >= h.horizon \
                           ORDER BY ev.transaction_id, ev.sequence LIMIT $8) t) c",
                fresh = shifted(&q, &format!("{q}.log_horizon(pg_current_snapshot())"))
            ),
            // An unpartitioned log keeps event ids unique in `events` (whose ONLY is itself), a
            // partitioned one in `event_ids` (and the ONLY of a partitioned table holds no row).
            existing_event: [
                format!("SELECT event_id FROM {q}.events WHERE event_id = ANY($1) LIMIT 1"),
                format!(
                    "SELECT i.event_id FROM {q}.event_ids i WHERE i.event_id = ANY($1) \
                     UNION ALL \
                     SELECT ev.event_id FROM ONLY {q}.events ev WHERE ev.event_id = ANY($1) \
                     LIMIT 1"
                ),
            ],
            // A stream's real head, when its streams row disagrees with its events: the first
            // of the given streams (in their order) whose events go beyond its row. The row's
            // version is a per-stream subquery, as in `read_many`.
            stream_behind: format!(
                "SELECT r.ord, h.head \
                 FROM unnest($1::text[]) WITH ORDINALITY AS r(stream_id, ord) \
                 CROSS JOIN LATERAL ( \
                     SELECT ev.stream_version AS head FROM {q}.events ev \
                     WHERE ev.stream_id = r.stream_id \
                     ORDER BY ev.stream_version DESC LIMIT 1) h \
                 WHERE h.head > coalesce((SELECT st.version FROM {q}.streams st \
                                          WHERE st.stream_id = r.stream_id), 0) \
                 ORDER BY r.ord LIMIT 1"
            ),
            quarantined: format!(
                "SELECT reason FROM {q}.quarantined_events \
                 WHERE transaction_id = $1 AND sequence = $2"
            ),
            // A wake-up lost in a crash costs nothing (waiters poll), so its commit need not
            // wait for the WAL flush that a notifying transaction's id would otherwise cost.
            // Every channel given, in one statement (a store and its tenants' stores share it).
            notify: "SELECT set_config('synchronous_commit', 'off', true), pg_notify(c.c, '') \
                     FROM unnest($1::text[]) AS c(c)"
                .to_owned(),
            channel: format!("crossfold_{schema}"),
        }
    }
}

/// The visibility horizon of the log for the statement that contains it (see the module
/// docs), in stored terms: `passed` names the statement's parameter (`xid8[]`) holding the open
/// transactions known to be foreign.
///
/// A snapshot that lists no open transaction is either a primary's with none open (its `xmin`
/// is its `xmax` then) or a hot standby's, which lists none (its `xmin` is the oldest open on
/// the primary): `xmin` is right for both, and telling them apart needs no
/// `pg_is_in_recovery()` — which is volatile, and would keep the planner from evaluating the
/// horizon and the pending transaction once per statement. Every `pg_current_snapshot()` of a
/// statement is the statement's one snapshot. Knowing no foreign transaction — the usual case —
/// the horizon is the snapshot's `xmin` (the oldest transaction it lists, or its `xmax`), and
/// the statement costs what it did before foreign transactions were passed. (The reading transaction's own id,
/// which a snapshot leaves out, is not considered: the store reads in transactions that write
/// nothing.)
fn horizon(q: &str, passed: &str) -> String {
    shifted(
        q,
        &format!(
            "CASE WHEN cardinality({passed}::xid8[]) = 0 \
                  THEN pg_snapshot_xmin(pg_current_snapshot()) \
                  ELSE (SELECT coalesce(min(x.x) FILTER (WHERE x.x <> ALL ({passed}::xid8[])), \
                                        CASE WHEN count(*) > 0 \
                                             THEN pg_snapshot_xmax(pg_current_snapshot()) \
                                             ELSE pg_snapshot_xmin(pg_current_snapshot()) END) \
                        FROM pg_snapshot_xip(pg_current_snapshot()) AS x(x)) END"
        ),
    )
}

/// A transaction id (`xid`, an `xid8` expression) in stored terms: plus the current log epoch's
/// shift (see migration 0002), which is 0 for a store that never moved to another cluster.
fn shifted(q: &str, xid: &str) -> String {
    format!(
        "(SELECT CASE WHEN ls.shift = 0 THEN h.x \
                 ELSE (h.x::text::numeric + ls.shift)::text::xid8 END \
          FROM {q}.log_state ls, (SELECT {xid} AS x) h)"
    )
}

impl Sql {
    /// The search for a stored event id, for a schema that has `event_ids` (migration 14) or
    /// not.
    pub(crate) fn existing_event(&self, archives: bool) -> &str {
        &self.existing_event[usize::from(archives)]
    }

    /// The reads of streams, for a schema that has archived streams (migration 14) or not.
    pub(crate) fn stream_reads(&self, archives: bool) -> &StreamReads {
        &self.stream_reads[usize::from(archives)]
    }

    /// The read of the log for filter shape `shape` (see [`shape`]) in a store that has the
    /// optional read indexes `indexes`.
    pub(crate) fn read_all(&self, shape: usize, indexes: ReadIndexSet) -> &str {
        &self.read_all[indexes.statement_bits()][shape % shape::COUNT]
    }
}

/// A schema name as an SQL identifier.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// `p(horizon, pending)`: the horizon, and the newest transaction at or above it — committed
/// but not yet visible, because an older transaction is still open — among the rows passing
/// `conditions`. Rows at or above the horizon all lie after any position a reader holds, so
/// this needs no position: a backward probe from the end of the log, never a scan of the rest
/// of it (the old form, bounded below by the position, cost a read from the start of a 1M
/// event log 67-100 ms per batch). (The horizon's subquery is copied into each place that
/// uses it — a one-row table read each; keeping it in one place with `OFFSET 0` made the
/// planner evaluate `pending` once per row returned, or trade the stream index for a sort.)
fn pending_of_log(q: &str, horizon: &str, conditions: &str) -> String {
    format!(
        "(SELECT h.horizon, \
                 (SELECT ev.transaction_id FROM {q}.events ev \
                  WHERE ev.transaction_id >= h.horizon{conditions} \
                  ORDER BY ev.transaction_id DESC LIMIT 1) AS pending \
          FROM (SELECT {horizon} AS horizon) h) p"
    )
}

/// The read of the global log for one filter shape, in a store with the optional read
/// indexes `indexes`. The first two columns are the horizon and the newest pending
/// transaction; the caller waits briefly for the horizon to pass it and reads again, so a read
/// sees everything committed before it started.
///
/// Unfiltered, the read is one range of the log index from the position. Filtered, one key of
/// the filter drives the read — streams, else categories, else event types, the last two only
/// where their optional index exists — through the index that orders that key's events by log
/// position: per key, at most a batch is read from the position, and the keys' batches are
/// merged. Such a read costs O(batch × keys), never O(rest of the log). The filter's other
/// conditions are checked on the rows read. Each category's or type's read is bounded by row
/// comparisons that lead with the key, and ordered by the key first, instead of `key = k.key`:
/// the same rows, but an order only the key's own index delivers (an equality would make the
/// key's order redundant, and a generic plan could then pick the log index filtered by the key
/// — for a rare key, a scan of the rest of the log).
///
/// A stream's read is `stream_id = k.key`: with the optional stream index it is a range of
/// that index; without it, the primary key `(stream_id, stream_version)` finds the stream's
/// events, sorted by position: O(events of the stream) per read. A filter by category or type
/// without its index is read like the unfiltered log, its conditions checked on each event:
/// O(events between the position and the batch's last event), which is O(batch) for a category
/// or type that makes up a fair share of the log, and up to the rest of the log for a rare one.
fn read_all(q: &str, horizon: &str, s: usize, indexes: ReadIndexSet) -> String {
    let driver = if s & shape::STREAMS != 0 {
        Some(("ev.stream_id", "$4"))
    } else if s & shape::CATEGORIES != 0 && indexes.contains(ReadIndex::Category) {
        Some((CATEGORY, "$5"))
    } else if s & shape::TYPES != 0 && indexes.contains(ReadIndex::EventType) {
        Some(("ev.event_type", "$6"))
    } else {
        None
    };
    let driven_by = |key: &str| driver.is_some_and(|(k, _)| k == key);
    let mut conditions = String::new();
    if s & shape::NO_SYSTEM != 0 {
        // The events of system streams, which log reads skip unless asked, are read and
        // passed over: they are few (one idempotency marker per keyed command).
        conditions.push_str(" AND NOT starts_with(ev.stream_id, '$')");
    }
    if s & shape::CATEGORIES != 0 && !driven_by(CATEGORY) {
        conditions.push_str(&format!(" AND {CATEGORY} = ANY($5)"));
    }
    if s & shape::TYPES != 0 && !driven_by("ev.event_type") {
        conditions.push_str(" AND ev.event_type = ANY($6)");
    }
    match driver {
        None => format!(
            "SELECT p.horizon, p.pending, e.* \
             FROM {pending} \
             LEFT JOIN LATERAL ( \
                 SELECT {EVENT_COLUMNS} FROM {q}.events ev \
                 WHERE (ev.transaction_id, ev.sequence) > ($1, $2) \
                   AND ev.transaction_id < p.horizon{conditions} \
                 ORDER BY ev.transaction_id, ev.sequence LIMIT $3) e ON true",
            pending = pending_of_log(q, horizon, &conditions)
        ),
        Some((key, keys)) => {
            // Streams are many and each is rare, so `key = k.key` is planned on the stream
            // index, or without it on the primary key. Categories and types are few: see the
            // doc above.
            let (pending_bound, read_bound) = if key == "ev.stream_id" {
                (
                    format!("{key} = k.key AND ev.transaction_id >= h.horizon"),
                    format!(
                        "{key} = k.key AND (ev.transaction_id, ev.sequence) > ($1, $2) \
                         AND ev.transaction_id < p.horizon"
                    ),
                )
            } else {
                (
                    // Any index serves this one: only the tail at or above the horizon qualifies.
                    format!("{key} = k.key AND ev.transaction_id >= h.horizon"),
                    // `{key} <= k.key` ends the scan at the key's last entry: a row comparison
                    // failing on its second column does not.
                    format!(
                        "({key}, ev.transaction_id, ev.sequence) > (k.key, $1, $2) \
                         AND {key} <= k.key AND ({key}, ev.transaction_id) < (k.key, p.horizon)"
                    ),
                )
            };
            format!(
                "SELECT p.horizon, p.pending, e.* \
                 FROM (SELECT h.horizon, \
                              (SELECT max(t.transaction_id) \
                               FROM unnest({keys}::text[]) AS k(key) \
                               CROSS JOIN LATERAL ( \
                                   SELECT ev.transaction_id FROM {q}.events ev \
                                   WHERE {pending_bound}{conditions} \
                                   ORDER BY {key} DESC, ev.transaction_id DESC LIMIT 1) t) \
                              AS pending \
                       FROM (SELECT {horizon} AS horizon) h) p \
                 LEFT JOIN LATERAL ( \
                     SELECT m.* FROM unnest({keys}::text[]) AS k(key) \
                     CROSS JOIN LATERAL ( \
                         SELECT {EVENT_COLUMNS} FROM {q}.events ev \
                         WHERE {read_bound}{conditions} \
                         ORDER BY {key}, ev.transaction_id, ev.sequence LIMIT $3) m \
                     ORDER BY m.transaction_id, m.sequence LIMIT $3) e ON true"
            )
        }
    }
}

/// Whether a stream is archived, from its row `st` in an aggregate over it (migration 14).
const ARCHIVED: &str = "coalesce(bool_or(st.archived), false)";

/// The statements that read streams (see `read::stream`).
#[derive(Debug)]
pub(crate) struct StreamReads {
    pub(crate) read_stream: String,
    pub(crate) read_one: String,
    pub(crate) read_many: String,
}

/// The reads of streams in schema `q`, where `archived` says whether a stream is archived.
fn stream_reads(q: &str, archived: &str) -> StreamReads {
    StreamReads {
        // A whole stream: as lean as a read can be. The stream's row tells its version and
        // whether it is archived (see `read::stream`): one probe of its primary key.
        read_stream: format!(
            "SELECT s.version, s.archived, e.* \
             FROM (SELECT coalesce(max(st.version), 0) AS version, \
                          {archived} AS archived \
                   FROM {q}.streams st WHERE st.stream_id = $1) s \
             LEFT JOIN LATERAL ( \
                 SELECT {EVENT_COLUMNS} FROM {q}.events ev \
                 WHERE ev.stream_id = $1 ORDER BY ev.stream_version) e ON true"
        ),
        // One stream: its version and its events in one statement. The version comes from
        // the streams row because the events alone cannot tell it when a limit cuts them
        // short or when nothing follows `after`.
        read_one: format!(
            "SELECT s.version, s.archived, e.* \
             FROM (SELECT coalesce(max(st.version), 0) AS version, \
                          {archived} AS archived \
                   FROM {q}.streams st WHERE st.stream_id = $1) s \
             LEFT JOIN LATERAL ( \
                 SELECT {EVENT_COLUMNS} FROM {q}.events ev \
                 WHERE ev.stream_id = $1 AND ev.stream_version > $2 \
                 ORDER BY ev.stream_version LIMIT $3) e ON true"
        ),
        // The version is a per-stream subquery rather than a join: a join's generic plan
        // may hash the whole streams table for a handful of streams.
        read_many: format!(
            "SELECT r.ord, s.version, s.archived, e.* \
             FROM unnest($1::text[], $2::int8[], $3::int8[]) \
                  WITH ORDINALITY AS r(stream_id, after, lim, ord) \
             CROSS JOIN LATERAL ( \
                 SELECT coalesce(max(st.version), 0) AS version, \
                        {archived} AS archived \
                 FROM {q}.streams st WHERE st.stream_id = r.stream_id) s \
             LEFT JOIN LATERAL ( \
                 SELECT {EVENT_COLUMNS} FROM {q}.events ev \
                 WHERE ev.stream_id = r.stream_id AND ev.stream_version > r.after \
                 ORDER BY ev.stream_version LIMIT r.lim) e ON true \
             ORDER BY r.ord, e.stream_version"
        ),
    }
}
