//! Per-command metric handles. Recording is a no-op until the host application installs a
//! `metrics` recorder (for example the Prometheus exporter). The names and their descriptions
//! live in `crossfold_core::metrics::COMMAND_METRICS`, so an exporter describes them without depending
//! on the executor.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crossfold_core::metrics::{
    ADMISSION_REFUSALS_TOTAL, CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL, COMMAND_ATTEMPTS,
    COMMAND_CONFLICTS_TOTAL, COMMAND_DURATION_SECONDS, COMMAND_RETRIES_TOTAL, COMMANDS_TOTAL,
    TURN_WAIT_SECONDS, TURNS_TOTAL,
};
use metrics::{Counter, Histogram, counter, histogram};

use crate::admission::Refusal;

/// How an execution ended, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Rejected,
    Conflict,
    Unauthorized,
    Timeout,
    Overloaded,
    Error,
}

impl Outcome {
    /// The `outcome` label value, also recorded on the execute span.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Rejected => "rejected",
            Outcome::Conflict => "conflict",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Timeout => "timeout",
            Outcome::Overloaded => "overloaded",
            Outcome::Error => "error",
        }
    }
}

/// Handles for one command name, resolved once: looking a metric up by name and labels on
/// every execution would cost more than the rest of an in-memory command.
pub(crate) struct CommandMetrics {
    success: Counter,
    rejected: Counter,
    conflict: Counter,
    unauthorized: Counter,
    timeout: Counter,
    overloaded: Counter,
    error: Counter,
    queue_full: Counter,
    admission_timeout: Counter,
    pub(crate) duration: Histogram,
    pub(crate) attempts: Histogram,
    pub(crate) conflicts: Counter,
    pub(crate) retries: Counter,
    turns_free: Counter,
    turns_waited: Counter,
    pub(crate) turn_wait: Histogram,
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
            overloaded: outcome("overloaded"),
            error: outcome("error"),
            queue_full: counter!(
                ADMISSION_REFUSALS_TOTAL, "command" => command, "reason" => "queue_full"
            ),
            admission_timeout: counter!(
                ADMISSION_REFUSALS_TOTAL, "command" => command, "reason" => "timeout"
            ),
            duration: histogram!(COMMAND_DURATION_SECONDS, "command" => command),
            attempts: histogram!(COMMAND_ATTEMPTS, "command" => command),
            conflicts: counter!(COMMAND_CONFLICTS_TOTAL, "command" => command),
            retries: counter!(COMMAND_RETRIES_TOTAL, "command" => command),
            turns_free: counter!(TURNS_TOTAL, "command" => command, "waited" => "false"),
            turns_waited: counter!(TURNS_TOTAL, "command" => command, "waited" => "true"),
            turn_wait: histogram!(TURN_WAIT_SECONDS, "command" => command),
        }
    }

    pub(crate) fn outcome(&self, outcome: Outcome) -> &Counter {
        match outcome {
            Outcome::Success => &self.success,
            Outcome::Rejected => &self.rejected,
            Outcome::Conflict => &self.conflict,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::Timeout => &self.timeout,
            Outcome::Overloaded => &self.overloaded,
            Outcome::Error => &self.error,
        }
    }

    /// The turns counter for a turn that `waited` for another writer's, or not.
    pub(crate) fn turns(&self, waited: bool) -> &Counter {
        if waited {
            &self.turns_waited
        } else {
            &self.turns_free
        }
    }

    /// The refusals counter for `why`.
    pub(crate) fn refusal(&self, why: Refusal) -> &Counter {
        match why {
            Refusal::QueueFull => &self.queue_full,
            Refusal::Timeout => &self.admission_timeout,
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
    pub(crate) fn new() -> Self {
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
}

impl MetricsRegistry {
    pub(crate) fn new() -> Self {
        Self {
            commands: RwLock::new(HashMap::default()),
        }
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
