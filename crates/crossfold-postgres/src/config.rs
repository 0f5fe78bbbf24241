//! Connection, pool and store settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::archive::PgArchivedReads;

/// The longest schema name accepted: the LISTEN channel is derived from it and PostgreSQL
/// identifiers stop at 63 bytes.
const MAX_SCHEMA_LEN: usize = 48;

/// How to reach PostgreSQL and how the store uses it.
///
/// Built from code ([`PgConfig::new`] plus setters) or from a URL ([`PgConfig::from_url`]).
///
/// ```
/// use std::time::Duration;
/// use crossfold_postgres::PgConfig;
///
/// let config = PgConfig::from_url(
///     "postgres://app@db.internal/app?schema=billing&pool_size=32&statement_timeout=5s",
/// )?
/// .wait_timeout(Duration::from_secs(2));
/// assert_eq!(config.get_schema(), "billing");
/// assert_eq!(config.get_pool_size(), 32);
/// assert_eq!(config.get_statement_timeout(), Some(Duration::from_secs(5)));
/// # Ok::<(), crossfold_postgres::PgConfigError>(())
/// ```
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) wait_timeout: Option<Duration>,
    pub(crate) create_timeout: Option<Duration>,
    pub(crate) recycle_timeout: Option<Duration>,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) notify_interval: Duration,
    pub(crate) visibility_wait: Duration,
    pub(crate) long_transaction_threshold: Duration,
    pub(crate) migration_lock_timeout: Duration,
    pub(crate) listen: bool,
    pub(crate) group_commit: bool,
    /// `None`: as many as the pool serves commands (see [`PgConfig::group_commit_calls`]).
    pub(crate) group_commit_calls: Option<usize>,
    pub(crate) archived_reads: PgArchivedReads,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config redacts the password in its own Debug.
        f.debug_struct("PgConfig")
            .field("pg", &self.pg)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("create_timeout", &self.create_timeout)
            .field("recycle_timeout", &self.recycle_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("notify_interval", &self.notify_interval)
            .field("visibility_wait", &self.visibility_wait)
            .field(
                "long_transaction_threshold",
                &self.long_transaction_threshold,
            )
            .field("migration_lock_timeout", &self.migration_lock_timeout)
            .field("listen", &self.listen)
            .field("group_commit", &self.group_commit)
            .field("group_commit_calls", &self.group_commit_calls)
            .field("archived_reads", &self.archived_reads)
            .finish()
    }
}

impl PgConfig {
    /// Settings for the server described by `pg`, with the defaults: schema `crossfold`, a pool
    /// of 16 connections, 5 s to wait for or create a connection, no statement timeout,
    /// notifications coalesced to one per 5 ms, reads waiting up to 250 ms for the visibility
    /// horizon, listening on, health degraded by an append open longer than 30 s,
    /// migrations giving up on a table lock after 3 s, group commit off.
    pub fn new(pg: tokio_postgres::Config) -> Self {
        Self {
            pg,
            schema: "crossfold".to_owned(),
            pool_size: 16,
            wait_timeout: Some(Duration::from_secs(5)),
            create_timeout: Some(Duration::from_secs(5)),
            recycle_timeout: Some(Duration::from_secs(5)),
            statement_timeout: None,
            notify_interval: Duration::from_millis(5),
            visibility_wait: Duration::from_millis(250),
            long_transaction_threshold: Duration::from_secs(30),
            migration_lock_timeout: Duration::from_secs(3),
            listen: true,
            group_commit: false,
            group_commit_calls: None,
            archived_reads: PgArchivedReads::Refuse,
        }
    }

    /// Parses a connection URL (`postgres://user:password@host:port/database?...`) or a
    /// `key=value` connection string.
    ///
    /// Besides the driver's own parameters, a URL may carry the store's settings as query
    /// parameters: `schema`, `pool_size`, `pool_wait_timeout`, `pool_create_timeout`,
    /// `pool_recycle_timeout`, `statement_timeout`, `notify_interval`, `visibility_wait`,
    /// `long_transaction_threshold`, `migration_lock_timeout` (durations as `250ms`, `5s`,
    /// `1m 30s`, or a number of milliseconds), `group_commit` (`true` or `false`), `group_commit_calls`. Their names and values are percent-decoded
    /// (`%20` is a space, `+` stays a plus sign, as in the rest of the URL); every other part
    /// of the URL, and every other parameter, is read by tokio-postgres, which refuses
    /// parameters it does not know.
    pub fn from_url(url: &str) -> Result<Self, PgConfigError> {
        let (base, query) = split_query(url);
        let mut driver_params = Vec::new();
        let mut ours = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let known = percent_decode_str(key)
                .decode_utf8()
                .ok()
                .and_then(|key| OUR_PARAMS.iter().find(|ours| **ours == key));
            match known {
                Some(key) => ours.push((*key, decode(key, value)?)),
                None => driver_params.push(pair),
            }
        }
        let driver_url = if driver_params.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", driver_params.join("&"))
        };
        let pg = tokio_postgres::Config::from_str(&driver_url).map_err(|e| PgConfigError {
            message: "invalid connection string".to_owned(),
            source: Some(Box::new(e)),
        })?;
        let mut config = Self::new(pg);
        for (key, value) in ours {
            config = config.apply_param(key, &value)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_param(self, key: &str, value: &str) -> Result<Self, PgConfigError> {
        Ok(match key {
            "schema" => self.schema(value),
            "pool_size" => self.pool_size(
                value
                    .parse()
                    .map_err(|_| PgConfigError::invalid(key, value, "expected a number"))?,
            ),
            "pool_wait_timeout" => self.wait_timeout(parse_duration(key, value)?),
            "pool_create_timeout" => self.create_timeout(parse_duration(key, value)?),
            "pool_recycle_timeout" => self.recycle_timeout(parse_duration(key, value)?),
            "statement_timeout" => self.statement_timeout(parse_duration(key, value)?),
            "notify_interval" => self.notify_interval(parse_duration(key, value)?),
            "visibility_wait" => self.visibility_wait(parse_duration(key, value)?),
            "long_transaction_threshold" => {
                self.long_transaction_threshold(parse_duration(key, value)?)
            }
            "migration_lock_timeout" => self.migration_lock_timeout(parse_duration(key, value)?),
            "group_commit" => self.group_commit(parse_bool(key, value)?),
            "group_commit_calls" => self.group_commit_calls(
                value
                    .parse()
                    .map_err(|_| PgConfigError::invalid(key, value, "expected a number"))?,
            ),
            _ => self,
        })
    }

    /// The schema holding the store's tables. Several stores can share one database, each in
    /// its own schema. Lowercase letters, digits and `_`, starting with a letter or `_`, at most
    /// 48 bytes; checked when the store connects.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the pool opens (at least 1). The store also keeps one more,
    /// dedicated connection for `LISTEN`.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long a call waits for a free pooled connection before failing with
    /// `StoreError::Unavailable`.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// How long opening a new connection may take.
    pub fn create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = Some(timeout);
        self
    }

    /// How long checking a returned connection may take.
    pub fn recycle_timeout(mut self, timeout: Duration) -> Self {
        self.recycle_timeout = Some(timeout);
        self
    }

    /// The server-side `statement_timeout` of every pooled connection; a statement running
    /// longer fails with `StoreError::Timeout` and writes nothing.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    /// The shortest interval between two `NOTIFY`s this process sends to wake subscribers of
    /// other processes (appends in between are announced together).
    pub fn notify_interval(mut self, interval: Duration) -> Self {
        self.notify_interval = interval;
        self
    }

    /// How long a read of the global log (and `head_position`) waits for events that have
    /// committed but are not yet visible because an older transaction is still open.
    ///
    /// Within this limit a read sees every event committed before it started (read-your-writes);
    /// beyond it, the read returns what is visible and the rest follows later (never lost).
    /// Usually the older transaction is another append finishing within milliseconds.
    pub fn visibility_wait(mut self, wait: Duration) -> Self {
        self.visibility_wait = wait;
        self
    }

    /// How long an append of this store may stay open (or the log's visibility horizon stand
    /// still) before the store's [`HealthCheck`](crossfold_core::HealthCheck) reports
    /// [`Degraded`](crossfold_core::HealthStatus::Degraded).
    ///
    /// Subscriptions see no event committed after an open append started until it ends, so it
    /// delays them. Writing transactions that are not appends of this store delay nothing, and
    /// only show in the report.
    pub fn long_transaction_threshold(mut self, threshold: Duration) -> Self {
        self.long_transaction_threshold = threshold;
        self
    }

    /// How long a migration waits for a table lock before it gives up with
    /// `StoreError::Timeout` (nothing of that migration applied; run it again later).
    ///
    /// A migration that waits for a lock queues every later append on that table behind it,
    /// so it must not wait long; the default is 3 s.
    pub fn migration_lock_timeout(mut self, timeout: Duration) -> Self {
        self.migration_lock_timeout = timeout;
        self
    }

    /// Whether to keep a `LISTEN` connection that wakes waiting subscribers as soon as another
    /// process appends. Without it subscribers still see every event, by polling. A store
    /// connected to a hot standby never listens (a standby refuses `LISTEN`, and notifications
    /// are not replicated).
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// Whether appends that arrive while others are in flight are sent together: one call of
    /// the store's group function, one transaction and one commit (one WAL flush) for all of
    /// them, each append still all-or-nothing on its own (a subtransaction each). An append
    /// that finds the store idle is sent at once and alone, as without group commit.
    ///
    /// It pays off when commits are the bottleneck (many appends in flight on different
    /// streams, a slow WAL flush); it costs a few microseconds per append for the
    /// subtransaction, and an append may wait for the call ahead of it to return. A group
    /// whose connection is lost leaves every append in it in doubt (each is settled as a
    /// lone append in doubt is). Needs migration 8; without it, appends go alone. Off by
    /// default; see the operations guide for when to turn it on.
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// With group commit on, how many calls may be in flight at once, lone appends and groups
    /// together (at least 1). Appends beyond them wait for one to return and then go together.
    /// By default as many as the pool serves commands (its size less an eighth, at least one
    /// connection: what the executor admits at once), so that an append never waits for
    /// company while a connection is free for it: group commit then only gathers appends that
    /// would otherwise wait for a connection. Fewer calls make larger groups (fewer commits)
    /// sooner, but a group's appends run one after the other in one server backend and an
    /// append may wait for the call ahead of it: see the operations guide before lowering it.
    pub fn group_commit_calls(mut self, calls: usize) -> Self {
        self.group_commit_calls = Some(calls.max(1));
        self
    }

    /// What a read of an archived stream returns (see [`PgEventStore::archive_stream`]): by
    /// default [`PgArchivedReads::Refuse`], a [`PgStreamArchived`](crate::PgStreamArchived)
    /// error; or the archived events. An archived stream takes no new events either way.
    ///
    /// [`PgEventStore::archive_stream`]: crate::PgEventStore::archive_stream
    pub fn archived_streams(mut self, reads: PgArchivedReads) -> Self {
        self.archived_reads = reads;
        self
    }

    /// Whether group commit is on.
    pub fn get_group_commit(&self) -> bool {
        self.group_commit
    }

    /// The most calls group commit keeps in flight (set, or derived from the pool size).
    pub fn get_group_commit_calls(&self) -> usize {
        self.group_commit_calls
            .unwrap_or_else(|| served_connections(self.pool_size))
    }

    /// The driver configuration, to adjust what the setters here do not cover.
    pub fn driver_config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.pg
    }

    /// The driver configuration.
    pub fn get_driver_config(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// The schema name.
    pub fn get_schema(&self) -> &str {
        &self.schema
    }

    /// The pool size.
    pub fn get_pool_size(&self) -> usize {
        self.pool_size
    }

    /// The statement timeout, if any.
    pub fn get_statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }

    /// The age beyond which an open append degrades health.
    pub fn get_long_transaction_threshold(&self) -> Duration {
        self.long_transaction_threshold
    }

    /// Checks the settings that cannot be checked by the setters.
    pub fn validate(&self) -> Result<(), PgConfigError> {
        validate_schema(&self.schema)
    }

    /// The driver configuration pooled connections use: the statement timeout and an
    /// application name are sent in the startup packet, so they cost no round trip.
    pub(crate) fn pool_driver_config(&self) -> tokio_postgres::Config {
        let mut pg = self.pg.clone();
        if pg.get_application_name().is_none() {
            pg.application_name("crossfold");
        }
        if let Some(timeout) = self.statement_timeout {
            let setting = format!("-c statement_timeout={}", timeout.as_millis().max(1));
            let options = match pg.get_options() {
                Some(existing) if !existing.is_empty() => format!("{existing} {setting}"),
                _ => setting,
            };
            pg.options(options);
        }
        pg
    }

    /// The driver configuration of the `LISTEN` connection: keepalives find a silently dropped
    /// connection within about a minute, so it is replaced instead of waiting forever.
    pub(crate) fn listen_driver_config(&self) -> tokio_postgres::Config {
        let mut pg = self.pg.clone();
        if pg.get_application_name().is_none() {
            pg.application_name("crossfold-listen");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.create_timeout.unwrap_or(Duration::from_secs(5)));
        }
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
        pg
    }
}

const OUR_PARAMS: &[&str] = &[
    "schema",
    "pool_size",
    "pool_wait_timeout",
    "pool_create_timeout",
    "pool_recycle_timeout",
    "statement_timeout",
    "notify_interval",
    "visibility_wait",
    "long_transaction_threshold",
    "migration_lock_timeout",
    "group_commit",
    "group_commit_calls",
];

/// A URL's connection part and its query string (empty for a `key=value` string). The query
/// starts at the first `?` after the user info, which the driver ends at the first `@`, so a
/// `?` in a password is not taken for the start of the query.
fn split_query(url: &str) -> (&str, &str) {
    let Some(scheme) = url.find("://") else {
        return (url, "");
    };
    let after_scheme = scheme + "://".len();
    let host = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |at| after_scheme + at + 1);
    match url[host..].find('?') {
        Some(question) => (&url[..host + question], &url[host + question + 1..]),
        None => (url, ""),
    }
}

/// A query parameter's value, percent-decoded as the driver decodes its own.
fn decode(key: &str, value: &str) -> Result<String, PgConfigError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|value| value.into_owned())
        .map_err(|e| PgConfigError {
            message: format!("invalid {key} {value:?}: not UTF-8 once percent-decoded"),
            source: Some(Box::new(e)),
        })
}

/// A duration as people write it (`250ms`, `5s`, `1m 30s`: humantime's syntax), or a number
/// of milliseconds.
fn parse_duration(key: &str, value: &str) -> Result<Duration, PgConfigError> {
    if let Ok(millis) = value.parse::<u64>() {
        return Ok(Duration::from_millis(millis));
    }
    humantime::parse_duration(value).map_err(|e| PgConfigError {
        message: format!(
            "invalid {key} {value:?}: expected a duration such as 250ms, 5s or 1m 30s, or a \
             number of milliseconds"
        ),
        source: Some(Box::new(e)),
    })
}

/// `true`/`false` (also `on`/`off`, `1`/`0`, `yes`/`no`), as PostgreSQL writes booleans.
fn parse_bool(key: &str, value: &str) -> Result<bool, PgConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        _ => Err(PgConfigError::invalid(key, value, "expected true or false")),
    }
}

pub(crate) fn validate_schema(schema: &str) -> Result<(), PgConfigError> {
    let mut chars = schema.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if starts_well && rest_ok && schema.len() <= MAX_SCHEMA_LEN && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(PgConfigError::invalid(
            "schema",
            schema,
            "expected lowercase letters, digits and _, starting with a letter or _, \
             not starting with pg_, at most 48 bytes",
        ))
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PgConfigError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PgConfigError {
    fn invalid(key: &str, value: &str, expected: &str) -> Self {
        Self {
            message: format!("invalid {key} {value:?}: {expected}"),
            source: None,
        }
    }
}

/// How many of a pool's `size` connections command executions (or group commit's calls) may
/// use at once: the pool less an eighth, at least one connection kept for the rest (the
/// `NOTIFY` after appends, subscriptions, projections, health checks), at least one served.
pub(crate) fn served_connections(size: usize) -> usize {
    size.saturating_sub((size / 8).max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_store_settings_and_driver_settings() {
        let c = PgConfig::from_url(
            "postgres://u:pw@localhost:5433/db?application_name=x&schema=s1&pool_size=3\
             &pool_wait_timeout=250ms&statement_timeout=2s&notify_interval=7\
             &long_transaction_threshold=90s",
        )
        .unwrap();
        assert_eq!(c.get_schema(), "s1");
        assert_eq!(c.get_pool_size(), 3);
        assert_eq!(c.wait_timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.get_statement_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(c.notify_interval, Duration::from_millis(7));
        assert_eq!(c.get_long_transaction_threshold(), Duration::from_secs(90));
        assert_eq!(c.pg.get_application_name(), Some("x"));
        assert_eq!(c.pg.get_dbname(), Some("db"));
        assert_eq!(c.pg.get_ports(), &[5433]);
    }

    #[test]
    fn group_commit_is_off_unless_asked_for() {
        let c = PgConfig::from_url("postgres://h/db").unwrap();
        assert!(!c.get_group_commit());
        assert!(c.group_commit(true).get_group_commit());
        for on in ["true", "on", "1", "YES"] {
            let c = PgConfig::from_url(&format!("postgres://h/db?group_commit={on}")).unwrap();
            assert!(c.get_group_commit(), "{on}");
        }
        let c = PgConfig::from_url("postgres://h/db?group_commit=off").unwrap();
        assert!(!c.get_group_commit());
        // As many calls as the pool serves commands.
        assert_eq!(c.get_group_commit_calls(), 14);
        assert_eq!(c.clone().pool_size(32).get_group_commit_calls(), 28);
        assert_eq!(c.clone().pool_size(1).get_group_commit_calls(), 1);
        let c = PgConfig::from_url("postgres://h/db?group_commit=on&group_commit_calls=3").unwrap();
        assert_eq!(c.get_group_commit_calls(), 3);
        assert_eq!(c.group_commit_calls(0).get_group_commit_calls(), 1);
        let refused = PgConfig::from_url("postgres://h/db?group_commit=maybe").unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("invalid group_commit \"maybe\""),
            "{refused}"
        );
    }

    #[test]
    fn key_value_strings_pass_through() {
        let c = PgConfig::from_url("host=localhost user=postgres").unwrap();
        assert_eq!(c.pg.get_user(), Some("postgres"));
        assert_eq!(c.get_schema(), "crossfold");
    }

    #[test]
    fn bad_values_are_refused() {
        let refused = |url: &str| PgConfig::from_url(url).unwrap_err().to_string();
        assert!(refused("postgres://h/db?pool_size=many").contains("invalid pool_size \"many\""));
        assert!(refused("postgres://h/db?statement_timeout=soon").contains("statement_timeout"));
        assert!(refused("postgres://h/db?schema=Bad-Name").contains("Bad-Name"));
        let unparsable = PgConfig::from_url("not a url at all ===").unwrap_err();
        assert!(
            std::error::Error::source(&unparsable).is_some(),
            "{unparsable}"
        );
    }

    #[test]
    fn durations_are_written_as_people_write_them() {
        let c = PgConfig::from_url(
            "postgres://h/db?statement_timeout=1m%2030s&pool_wait_timeout=1500\
             &visibility_wait=2min&notify_interval=250ms&migration_lock_timeout=3s",
        )
        .unwrap();
        assert_eq!(c.get_statement_timeout(), Some(Duration::from_secs(90)));
        assert_eq!(c.wait_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(c.visibility_wait, Duration::from_secs(120));
        assert_eq!(c.notify_interval, Duration::from_millis(250));
        assert_eq!(c.migration_lock_timeout, Duration::from_secs(3));
        let refused = PgConfig::from_url("postgres://h/db?visibility_wait=5 parsecs").unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("invalid visibility_wait \"5 parsecs\": expected a duration"),
            "{refused}"
        );
        assert!(std::error::Error::source(&refused).is_some());
    }

    #[test]
    fn store_parameters_are_percent_decoded() {
        let c = PgConfig::from_url("postgres://h/db?sch%65ma=billing%5F2").unwrap();
        assert_eq!(c.get_schema(), "billing_2");
        let refused = |url: &str| PgConfig::from_url(url).unwrap_err().to_string();
        assert!(refused("postgres://h/db?schema=my%20schema").contains("\"my schema\""));
        assert!(refused("postgres://h/db?schema=a%2Fb").contains("\"a/b\""));
        // `+` is a plus sign here, as the driver reads it, not a space.
        assert!(refused("postgres://h/db?schema=a+b").contains("\"a+b\""));
        assert!(refused("postgres://h/db?schema=%FF").contains("not UTF-8"));
    }

    #[test]
    fn the_connection_part_is_the_drivers() {
        let c = PgConfig::from_url("postgres://u%40corp:p%40ss%2540?x@h:5433/my%20db?schema=s1")
            .unwrap();
        assert_eq!(c.pg.get_user(), Some("u@corp"));
        assert_eq!(c.pg.get_password(), Some(&b"p@ss%40?x"[..]));
        assert_eq!(c.pg.get_dbname(), Some("my db"));
        assert_eq!(c.pg.get_ports(), &[5433]);
        assert_eq!(c.get_schema(), "s1");
        // Parameters that are not the store's go to the driver, which refuses those it does
        // not know.
        let unknown = PgConfig::from_url("postgres://h/db?schema=s1&colour=blue").unwrap_err();
        assert_eq!(unknown.to_string(), "invalid connection string");
        assert!(
            crossfold_core::ErrorChain(&unknown)
                .to_string()
                .contains("colour"),
            "{unknown}"
        );
    }

    #[test]
    fn schema_names() {
        assert!(validate_schema("crossfold").is_ok());
        assert!(validate_schema("_x9").is_ok());
        for bad in ["", "9x", "a\"b", "pg_x", &"x".repeat(49)] {
            let refused = validate_schema(bad).unwrap_err().to_string();
            assert!(refused.starts_with("invalid schema"), "{bad:?}: {refused}");
        }
    }

    #[test]
    fn statement_timeout_joins_existing_options() {
        let mut c = PgConfig::from_url("postgres://h/db?options=-c%20work_mem%3D4MB").unwrap();
        c = c.statement_timeout(Duration::from_millis(1500));
        let pg = c.pool_driver_config();
        let options = pg.get_options().unwrap();
        assert!(options.ends_with("-c statement_timeout=1500"), "{options}");
        assert_eq!(pg.get_application_name(), Some("crossfold"));
    }
}
