//! Metric names and per-command handles. Recording is a no-op until the host application
//! installs a `metrics` recorder (for example the Prometheus exporter).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use metrics::{Counter, Histogram, Unit, counter, describe_counter, describe_histogram, histogram};

/// Commands executed, by `command` and `outcome` (`success`, `rejected`, `conflict`,
/// `unauthorized`, `timeout`, `error`).
pub const COMMANDS_TOTAL: &str = "crossfold_commands_total";
/// Wall time of whole executions (all attempts), by `command`.
pub const COMMAND_DURATION_SECONDS: &str = "crossfold_command_duration_seconds";
/// Attempts per execution, by `command`.
pub const COMMAND_ATTEMPTS: &str = "crossfold_command_attempts";
/// Version conflicts met while executing, by `command`.
pub const COMMAND_CONFLICTS_TOTAL: &str = "crossfold_command_conflicts_total";
/// Attempts repeated after a conflict or a transient store error, by `command`.
pub const COMMAND_RETRIES_TOTAL: &str = "crossfold_command_retries_total";
/// Executor cache lookups that found what they needed, by `cache` (`state`, `events`).
pub const CACHE_HITS_TOTAL: &str = "crossfold_executor_cache_hits_total";
/// Executor cache lookups that had to go to the store, by `cache`.
pub const CACHE_MISSES_TOTAL: &str = "crossfold_executor_cache_misses_total";

/// Registers help texts and units of the executor's metrics with the installed recorder. Call
/// it once after installing a recorder.
pub fn describe_metrics() {
    describe_counter!(COMMANDS_TOTAL, "Commands executed, by command and outcome.");
    describe_histogram!(
        COMMAND_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of command executions, including retries."
    );
    describe_histogram!(COMMAND_ATTEMPTS, "Attempts needed per command execution.");
    describe_counter!(
        COMMAND_CONFLICTS_TOTAL,
        "Version conflicts met while executing commands."
    );
    describe_counter!(
        COMMAND_RETRIES_TOTAL,
        "Command attempts repeated after a conflict or a transient store error."
    );
    describe_counter!(
        CACHE_HITS_TOTAL,
        "Executor cache lookups served from memory."
    );
    describe_counter!(
        CACHE_MISSES_TOTAL,
        "Executor cache lookups that went to the store."
    );
}

/// How an execution ended, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Rejected,
    Conflict,
    Unauthorized,
    Timeout,
    Error,
}

/// Handles for one command name, resolved once: looking a metric up by name and labels on
/// every execution would cost more than the rest of an in-memory command.
pub(crate) struct CommandMetrics {
    success: Counter,
    rejected: Counter,
    conflict: Counter,
    unauthorized: Counter,
    timeout: Counter,
    error: Counter,
    pub(crate) duration: Histogram,
    pub(crate) attempts: Histogram,
    pub(crate) conflicts: Counter,
    pub(crate) retries: Counter,
}

impl CommandMetrics {
    fn new(command: &'static str) -> Self {
        let outcome =
            |o: &'static str| counter!(COMMANDS_TOTAL, "command" => command, "outcome" => o);
        Self {
            success: outcome("success"),
            rejected: outcome("rejected"),
            conflict: outcome("conflict"),
            unauthorized: outcome("unauthorized"),
            timeout: outcome("timeout"),
            error: outcome("error"),
            duration: histogram!(COMMAND_DURATION_SECONDS, "command" => command),
            attempts: histogram!(COMMAND_ATTEMPTS, "command" => command),
            conflicts: counter!(COMMAND_CONFLICTS_TOTAL, "command" => command),
            retries: counter!(COMMAND_RETRIES_TOTAL, "command" => command),
        }
    }

    pub(crate) fn outcome(&self, outcome: Outcome) -> &Counter {
        match outcome {
            Outcome::Success => &self.success,
            Outcome::Rejected => &self.rejected,
            Outcome::Conflict => &self.conflict,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::Timeout => &self.timeout,
            Outcome::Error => &self.error,
        }
    }
}

pub(crate) struct CacheMetrics {
    pub(crate) state_hit: Counter,
    pub(crate) state_miss: Counter,
    pub(crate) events_hit: Counter,
    pub(crate) events_miss: Counter,
}

impl CacheMetrics {
    fn new() -> Self {
        Self {
            state_hit: counter!(CACHE_HITS_TOTAL, "cache" => "state"),
            state_miss: counter!(CACHE_MISSES_TOTAL, "cache" => "state"),
            events_hit: counter!(CACHE_HITS_TOTAL, "cache" => "events"),
            events_miss: counter!(CACHE_MISSES_TOTAL, "cache" => "events"),
        }
    }
}

/// Handles are resolved against the recorder installed when they are first used, so install
/// the recorder before executing commands.
pub(crate) struct MetricsRegistry {
    commands: RwLock<HashMap<&'static str, Arc<CommandMetrics>, foldhash::fast::RandomState>>,
    cache: OnceLock<CacheMetrics>,
}

impl MetricsRegistry {
    pub(crate) fn new() -> Self {
        Self {
            commands: RwLock::new(HashMap::default()),
            cache: OnceLock::new(),
        }
    }

    pub(crate) fn cache(&self) -> &CacheMetrics {
        self.cache.get_or_init(CacheMetrics::new)
    }

    pub(crate) fn command(&self, name: &'static str) -> Arc<CommandMetrics> {
        if let Some(m) = self
            .commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return m.clone();
        }
        self.commands
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_insert_with(|| Arc::new(CommandMetrics::new(name)))
            .clone()
    }
}
