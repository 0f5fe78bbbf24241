//! `crossfold projections list | status | pause | resume | rebuild | reset NAME`.
//!
//! Projections run in the application's processes; their control state (paused, rebuilding),
//! checkpoints and leases live in the store, which is how this command reaches them. This
//! build has no projection support yet, so every action says there is nothing to control
//! (exit status 5). Wiring the projections crate in means implementing [`Control`] on its
//! PostgreSQL control store and returning it from `control`; the printing below already
//! takes what the actions return.

use std::io::Write;

use serde_json::{Value, json};

use crate::args::ProjectionsAction;
use crate::config::Settings;
use crate::error::{CliError, code};
use crate::output::table;

/// One projection as `list` and `status` show it.
#[derive(Debug)]
pub(crate) struct ProjectionRow {
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) position: String,
    pub(crate) lag_events: Option<u64>,
    pub(crate) owner: Option<String>,
}

/// What the command needs from the projections' control store.
#[allow(
    dead_code,
    reason = "implemented when the projections crate is wired in"
)]
pub(crate) trait Control {
    /// Every projection the store knows.
    async fn list(&self) -> Result<Vec<ProjectionRow>, CliError>;
    /// One projection.
    async fn status(&self, name: &str) -> Result<ProjectionRow, CliError>;
    /// Asks the owner to pause, resume, rebuild or reset `name`; returns its state after.
    async fn request(&self, name: &str, action: &str) -> Result<ProjectionRow, CliError>;
}

/// The control store of the projections in the configured store, when this build can reach
/// them (it then connects with `crate::connect`); `None` without connecting, so that saying
/// there is nothing to control does not depend on the database.
async fn control(_settings: &Settings) -> Result<Option<Never>, CliError> {
    Ok(None)
}

/// No control store: this build knows no projections.
pub(crate) enum Never {}

impl Control for Never {
    async fn list(&self) -> Result<Vec<ProjectionRow>, CliError> {
        match *self {}
    }
    async fn status(&self, _name: &str) -> Result<ProjectionRow, CliError> {
        match *self {}
    }
    async fn request(&self, _name: &str, _action: &str) -> Result<ProjectionRow, CliError> {
        match *self {}
    }
}

pub(crate) async fn run(
    settings: &Settings,
    action: ProjectionsAction,
    json: bool,
) -> Result<u8, CliError> {
    let Some(control) = control(settings).await? else {
        return Err(CliError::NothingToControl(
            "there are no projections to control: this build of crossfold has no projection \
             support yet, so it cannot see or change the projections of the application's \
             processes"
                .to_owned(),
        ));
    };
    let rows = match action {
        ProjectionsAction::List => control.list().await?,
        ProjectionsAction::Status(p) => vec![control.status(&p.name).await?],
        ProjectionsAction::Pause(p) => vec![control.request(&p.name, "pause").await?],
        ProjectionsAction::Resume(p) => vec![control.request(&p.name, "resume").await?],
        ProjectionsAction::Rebuild(p) => vec![control.request(&p.name, "rebuild").await?],
        ProjectionsAction::Reset(p) => vec![control.request(&p.name, "reset").await?],
    };
    print(&rows, json)?;
    Ok(code::OK)
}

fn print(rows: &[ProjectionRow], json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        let list: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "state": r.state,
                    "position": r.position,
                    "lag_events": r.lag_events,
                    "owner": r.owner,
                })
            })
            .collect();
        writeln!(out, "{}", json!({ "projections": list }))?;
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.clone(),
                r.position.clone(),
                r.lag_events.map(|l| l.to_string()).unwrap_or_default(),
                r.owner.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["NAME", "STATE", "POSITION", "LAG", "OWNER"],
        &cells,
    )?;
    Ok(())
}
