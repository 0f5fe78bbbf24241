//! The command line, as clap reads it (and as `--help` shows it).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Operate a Crossfold event store on PostgreSQL: migrate it, read its streams and its log,
/// check its health.
///
/// The database comes from --database-url, else DATABASE_URL, else `database_url` in the
/// config file (--config, else CROSSFOLD_CONFIG, else ./crossfold.toml if there is one); the
/// store's schema from --schema, else CROSSFOLD_SCHEMA, else `schema` in the config file, else
/// the URL's `?schema=`, else `crossfold`.
///
/// Exit status: 0 success (health: healthy); 1 failure (health: degraded); 2 health:
/// unhealthy; 3 not found (stream, event, projection); 4 the schema is not migrated or cannot
/// be; 64 bad arguments or configuration; 69 PostgreSQL cannot be reached.
#[derive(Debug, Parser)]
#[command(name = "crossfold", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// PostgreSQL connection URL (postgres://user:password@host:port/database).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// The schema holding the event store.
    #[arg(long, global = true, env = "CROSSFOLD_SCHEMA")]
    pub(crate) schema: Option<String>,

    /// A TOML file with `database_url` and `schema`.
    #[arg(long, global = true, env = "CROSSFOLD_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Print JSON instead of tables: one document per command (one event per line for `tail`).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Apply the migrations the schema lacks (creating it if needed), or show where it stands.
    Migrate(MigrateArgs),
    /// List streams, with how many events each holds.
    Streams(StreamsArgs),
    /// Show the events of one stream.
    Stream(StreamArgs),
    /// Show one event, found by its id.
    Event(EventArgs),
    /// Show the end of the global log, and follow it with --follow.
    Tail(TailArgs),
    /// Check the store: exit status 0 healthy, 1 degraded, 2 unhealthy.
    Health,
    /// Control the projections running in the application's processes.
    Projections(ProjectionsArgs),
    /// Show pending and overdue deadlines, and the next ones due.
    Deadlines(DeadlinesArgs),
    /// List, create or drop the optional read indexes of the log (by stream, by category, by
    /// event type).
    Indexes(IndexesArgs),
    /// Show the snapshots of command state the store holds, per state, or drop a state's.
    Snapshots(SnapshotsArgs),
    /// List the partitions of a log partitioned by position, convert a log to one, create
    /// partitions ahead, detach old ones to archive them or attach them again.
    Partitions(PartitionsArgs),
    /// Archive a stream closed for good (its events leave the log, kept in the archive), or
    /// read an archived stream's events.
    Archive(ArchiveArgs),
    /// Read the whole log and check that every event's payload is well-formed in its format
    /// (JSON or MessagePack); report each one that is not, with its position, stream, version,
    /// type and schema version. Exit status 1 when any fails. Decoding into the application's
    /// own types needs those types: run `crossfold_core::check::EventCheck` from the
    /// application's tests for that.
    CheckEvents(CheckEventsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckEventsArgs {
    /// Start after this position (COMMIT/SEQUENCE, as `tail` prints them); default the start.
    #[arg(long, value_name = "POSITION")]
    pub(crate) from: Option<String>,

    /// List at most this many failed events (all are counted).
    #[arg(long, default_value_t = 100)]
    pub(crate) max_failures: usize,

    /// Events read per round trip.
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch: usize,

    /// Never draw the progress bar (drawn on stderr when it is a terminal, without --json).
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, Args)]
pub(crate) struct IndexesArgs {
    /// Without one: list.
    #[command(subcommand)]
    pub(crate) action: Option<IndexesAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum IndexesAction {
    /// Show each optional read index: ready, invalid (being built, or left by a failed build)
    /// or absent, its size, and how many index scans used it since the server's statistics
    /// were reset.
    List,
    /// Build an index, so that reads of the log filtered its way cost O(batch) from any
    /// position; every event appended afterwards pays one more index entry. Appends and
    /// reads go on while it is built (minutes on a large log). Run as the schema's owner.
    Create(IndexName),
    /// Drop an index: appends stop paying for it, and reads filtered its way scan the log
    /// from their position instead. Run as the schema's owner.
    Drop(IndexName),
}

#[derive(Debug, Args)]
pub(crate) struct IndexName {
    /// `stream`, `category` (the part of a stream id before its first `-`) or `type` (the
    /// event type).
    pub(crate) index: crossfold_postgres::ReadIndex,
}

#[derive(Debug, Args)]
pub(crate) struct PartitionsArgs {
    /// Without one: list.
    #[command(subcommand)]
    pub(crate) action: Option<PartitionsAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PartitionsAction {
    /// Show each partition: its range of positions (commit halves), attached or detached,
    /// estimated events and size. The default partition holds events no range covered; it
    /// should stay empty.
    List,
    /// Convert the log into one partitioned by position (migration 14's `partition_log`):
    /// appends go on through all but its last step, a few catalog changes under the events
    /// table's lock. Takes two passes over the log. Run as the schema's owner.
    Convert(ConvertArgs),
    /// Create the partitions the log should have ahead of it now (the store also does so
    /// when it connects and as its appends near the end).
    Create,
    /// Detach a partition the log has passed, leaving its table in the schema, immutable, to
    /// dump (`pg_dump -t SCHEMA.NAME`) and drop, or to attach again. Its events leave every
    /// read of the log. Refused while a projection with a checkpoint here has not read its
    /// events, unless --force. Run as the schema's owner.
    Detach(DetachArgs),
    /// Attach a detached partition again: its events are back at their positions.
    Attach(PartitionName),
}

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// Transaction ids per partition (each append takes one; a group commit one per group).
    #[arg(long)]
    pub(crate) size: u64,
    /// Partitions to keep ahead of the log.
    #[arg(long, default_value_t = 4)]
    pub(crate) ahead: u32,
    /// How far beyond the next transaction id the existing events' partition reaches; the
    /// conversion's last step must start before appends use that many.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) margin: u64,
}

#[derive(Debug, Args)]
pub(crate) struct DetachArgs {
    /// The partition, as the list shows it.
    pub(crate) name: String,
    /// Detach it even though a projection has not read its events (that projection never
    /// will, unless it is attached again before the projection gets there).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PartitionName {
    /// The partition, as the list shows it.
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct ArchiveArgs {
    #[command(subcommand)]
    pub(crate) action: ArchiveAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArchiveAction {
    /// Archive a stream: its events move out of the log into the archive, in one
    /// transaction, and it takes no new events. Refused while a projection with a checkpoint
    /// here has not read its last event, unless --force.
    Stream(ArchiveStreamArgs),
    /// Show the events of an archived stream.
    Read(ArchiveReadArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ArchiveStreamArgs {
    /// The stream's id.
    pub(crate) id: String,
    /// Archive it even though a projection has not read its last event (it never will).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ArchiveReadArgs {
    /// The stream's id.
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotsArgs {
    /// Without one: list.
    #[command(subcommand)]
    pub(crate) action: Option<SnapshotsAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotsAction {
    /// Show each state's snapshots: how many, their payloads' total size, the state versions
    /// they were taken under, and when the newest was taken.
    List,
    /// Drop every snapshot of a state: its commands fold from the events again and take new
    /// snapshots as their policy says (decisions do not change, loads are slower until then).
    /// Run as the schema's owner.
    Drop(SnapshotStateName),
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotStateName {
    /// The state's snapshot name (`SnapshotState::NAME`, as the list shows it).
    pub(crate) state: String,
}

#[derive(Debug, Args)]
pub(crate) struct DeadlinesArgs {
    /// How many of the next pending deadlines to show.
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct MigrateArgs {
    /// Show what would be applied, change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Apply migrations only up to this version (to deploy a schema change in steps).
    #[arg(long, value_name = "VERSION")]
    pub(crate) to: Option<u32>,

    #[command(subcommand)]
    pub(crate) action: Option<MigrateAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MigrateAction {
    /// Show the schema's version and each migration: applied (and when) or pending.
    Status,
}

#[derive(Debug, Args)]
pub(crate) struct StreamsArgs {
    /// Only streams whose id starts with this (`account-` lists account-1, account-2, ...).
    #[arg(default_value = "")]
    pub(crate) prefix: String,

    /// List at most this many streams.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,

    /// Start after this stream id (the last one of the previous page).
    #[arg(long, value_name = "STREAM")]
    pub(crate) after: Option<String>,

    /// Include system streams (ids starting with `$`, kept by Crossfold itself).
    #[arg(long)]
    pub(crate) system: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    /// The stream id.
    pub(crate) id: String,

    /// The first version to show (versions start at 1).
    #[arg(long, default_value_t = 1, value_name = "VERSION")]
    pub(crate) from: u64,

    /// Show at most this many events.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct EventArgs {
    /// The event id (a UUID).
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Where to start, exclusive: a position as `tail` prints them (COMMIT/SEQUENCE), `start`
    /// or `head`. Without it, the last --lines events are shown first.
    #[arg(long, value_name = "POSITION")]
    pub(crate) from: Option<String>,

    /// Without --from: how many of the last events to show first.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub(crate) lines: usize,

    /// Keep waiting for new events (until interrupted).
    #[arg(short, long)]
    pub(crate) follow: bool,

    /// Only streams of this category (the part of a stream id before its first `-`).
    /// Repeatable.
    #[arg(long, value_name = "CATEGORY")]
    pub(crate) category: Vec<String>,

    /// Only streams whose id starts with this. The store narrows the read by the prefix's
    /// category (`account-4` is in `account`); the rest is checked on each event, so with -n
    /// fewer than N events may show.
    #[arg(long)]
    pub(crate) prefix: Option<String>,

    /// Only events of this type. Repeatable.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Vec<String>,

    /// Include system streams (ids starting with `$`).
    #[arg(long)]
    pub(crate) system: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ProjectionsArgs {
    #[command(subcommand)]
    pub(crate) action: ProjectionsAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsAction {
    /// List the projections with their state and position.
    List,
    /// Show one projection: state, checkpoint, lag, owner.
    Status(ProjectionName),
    /// Stop a projection from applying events (its owner keeps its lease).
    Pause(ProjectionName),
    /// Let a paused, stopped or failed projection go on (a failed one retries its event).
    Resume(ProjectionName),
    /// Stop a projection until it is resumed.
    Stop(ProjectionName),
    /// Rebuild a projection's read model from the start of the log into a new generation,
    /// serving the old one until the new one has caught up (blue/green).
    Rebuild(ProjectionName),
    /// Clear a projection's read model in place and replay it from the start of the log.
    Reset(ProjectionName),
}

#[derive(Debug, Args)]
pub(crate) struct ProjectionName {
    /// The projection's name.
    pub(crate) name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
