//! # crossfold
//!
//! The command an operator runs against a Crossfold event store on PostgreSQL, without
//! writing Rust: `crossfold migrate` (with `--dry-run`, and `migrate status`),
//! `crossfold streams`, `crossfold stream ID`, `crossfold event EVENT_ID`, `crossfold tail`
//! (with `--follow`), `crossfold health`, `crossfold projections ...`, `crossfold deadlines`,
//! `crossfold indexes [list|create|drop]`, `crossfold snapshots [list|drop STATE]` and
//! `crossfold check-events`. Run
//! `crossfold --help` for every option; the exit statuses are listed there and in the
//! operations guide.

mod archive;
mod args;
mod check;
mod config;
mod deadlines;
mod error;
mod health;
mod indexes;
mod inspect;
mod migrate;
mod output;
mod projections;
mod snapshots;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use crossfold_core::ErrorChain;
use crossfold_postgres::tokio_postgres::config::Host;
use crossfold_postgres::{PgConfig, PgEventStore};

use crate::args::{Cli, Command};
use crate::config::Settings;
use crate::error::{CliError, code};

/// How long connecting may take before the command gives up and says so.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are answers, not errors.
            return ExitCode::from(if e.use_stderr() {
                code::USAGE
            } else {
                code::OK
            });
        }
    };
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crossfold: cannot start: {}", ErrorChain(&e));
            return ExitCode::from(code::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(status) => ExitCode::from(status),
        // A reader that went away (`crossfold tail | head`) is a normal end.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(code::OK)
        }
        Err(e) => {
            report(&e, json);
            ExitCode::from(e.code())
        }
    }
}

/// Prints a failure on stderr: a line of text, or with `--json` a JSON object, so a script
/// that reads stderr as JSON still can.
fn report(error: &CliError, json: bool) {
    let message = ErrorChain(error).to_string();
    let hint = error.hint();
    let mut stderr = std::io::stderr().lock();
    if json {
        let value = serde_json::json!({
            "error": message,
            "hint": hint,
            "exit_status": error.code(),
        });
        let _ = writeln!(stderr, "{value}");
    } else {
        let _ = writeln!(stderr, "crossfold: {message}");
        if let Some(hint) = hint {
            let _ = writeln!(stderr, "  hint: {hint}");
        }
    }
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let settings = Settings::resolve(&cli)?;
    let json = cli.json;
    match cli.command {
        Command::Migrate(args) => {
            let store = connect(&settings, false).await?;
            migrate::run(&store, args, json).await
        }
        Command::Streams(args) => {
            let store = connect_ready(&settings, false).await?;
            inspect::streams(&store, args, json).await
        }
        Command::Stream(args) => {
            let store = connect_ready(&settings, false).await?;
            inspect::stream(&store, args, json).await
        }
        Command::Event(args) => {
            let store = connect_ready(&settings, false).await?;
            inspect::event(&store, args, json).await
        }
        Command::Tail(args) => {
            let store = connect_ready(&settings, args.follow).await?;
            inspect::tail(&store, args, json).await
        }
        Command::Health => health::run(&settings, json).await,
        Command::Projections(args) => projections::run(&settings, args.action, json).await,
        Command::Deadlines(args) => {
            let store = connect_ready(&settings, false).await?;
            deadlines::run(&store, args, json).await
        }
        Command::Indexes(args) => {
            let store = connect_ready(&settings, false).await?;
            indexes::run(&store, args, json).await
        }
        Command::Snapshots(args) => {
            let store = connect_ready(&settings, false).await?;
            snapshots::run(&store, args, json).await
        }
        Command::Partitions(args) => {
            let store = connect_ready(&settings, false).await?;
            archive::partitions(&store, args, json).await
        }
        Command::Archive(args) => {
            let store = connect_ready(&settings, false).await?;
            archive::archive(&store, args, json).await
        }
        Command::CheckEvents(args) => {
            let store = connect_ready(&settings, false).await?;
            check::run(&store, args, json).await
        }
    }
}

/// The store's settings: a small pool (one command, a few statements), and `LISTEN` only for
/// following the log.
pub(crate) fn pg_config(settings: &Settings, listen: bool) -> Result<PgConfig, CliError> {
    let mut config = PgConfig::from_url(&settings.database_url).map_err(|e| {
        CliError::Config(format!("the database URL is not valid: {}", ErrorChain(&e)))
    })?;
    if let Some(schema) = &settings.schema {
        config = config.schema(schema.clone());
    }
    if config.get_driver_config().get_connect_timeout().is_none() {
        config.driver_config_mut().connect_timeout(CONNECT_TIMEOUT);
    }
    config = config.pool_size(2).listen(listen);
    config
        .validate()
        .map_err(|e| CliError::Config(ErrorChain(&e).to_string()))?;
    Ok(config)
}

/// Where the URL points, for messages: hosts, ports and database, never the password.
pub(crate) fn target(config: &PgConfig) -> String {
    let pg = config.get_driver_config();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .zip(pg.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            #[cfg(unix)]
            Host::Unix(path) => format!("{}", path.display()),
        })
        .collect();
    format!(
        "{}/{} (schema {})",
        hosts.join(","),
        pg.get_dbname().unwrap_or("(default database)"),
        config.get_schema()
    )
}

/// Connects to the store.
pub(crate) async fn connect(settings: &Settings, listen: bool) -> Result<PgEventStore, CliError> {
    let config = pg_config(settings, listen)?;
    let target = target(&config);
    PgEventStore::connect(config)
        .await
        .map_err(|source| match source {
            crossfold_core::StoreError::InvalidRequest(message) => CliError::Config(message),
            source => CliError::Unreachable { target, source },
        })
}

/// Connects to a store whose schema this build can read: migrated, nothing pending.
async fn connect_ready(settings: &Settings, listen: bool) -> Result<PgEventStore, CliError> {
    let store = connect(settings, listen).await?;
    store
        .check_schema()
        .await
        .map_err(|source| CliError::Schema {
            schema: store.schema().to_owned(),
            source,
        })?;
    Ok(store)
}
