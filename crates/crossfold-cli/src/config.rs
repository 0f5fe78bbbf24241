//! Where the database and the schema come from: flags (and, through clap, the environment)
//! first, then the config file.

use std::path::{Path, PathBuf};

use crossfold_core::ErrorChain;
use serde::Deserialize;

use crate::args::Cli;
use crate::error::CliError;

/// The name of the config file looked for in the working directory.
pub(crate) const DEFAULT_FILE: &str = "crossfold.toml";

/// What `crossfold.toml` may hold. Unknown keys are refused, so a misspelt key is not
/// silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    database_url: Option<String>,
    schema: Option<String>,
}

/// The settings every command connects with.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) database_url: String,
    /// `None`: the URL's `?schema=`, else the store's default.
    pub(crate) schema: Option<String>,
}

impl Settings {
    /// Flags and environment (already merged by clap) win over the file; a file named with
    /// `--config` must exist, `./crossfold.toml` is read only when it does.
    pub(crate) fn resolve(cli: &Cli) -> Result<Self, CliError> {
        let file = match &cli.config {
            Some(path) => read(path)?,
            None => {
                let path = PathBuf::from(DEFAULT_FILE);
                if path.is_file() {
                    read(&path)?
                } else {
                    File::default()
                }
            }
        };
        let database_url = cli
            .database_url
            .clone()
            .or(file.database_url)
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| {
                CliError::Config(
                    "no database given: pass --database-url, set DATABASE_URL, or put \
                     database_url in crossfold.toml"
                        .to_owned(),
                )
            })?;
        Ok(Self {
            database_url,
            schema: cli.schema.clone().or(file.schema),
        })
    }
}

fn read(path: &Path) -> Result<File, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Config(format!(
            "cannot read the config file {}: {}",
            path.display(),
            ErrorChain(&e)
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        CliError::Config(format!(
            "the config file {} is not valid: {}(it may hold database_url and schema)",
            path.display(),
            ErrorChain(&e)
        ))
    })
}
