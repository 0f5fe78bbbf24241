//! `crossfold projections list | status | pause | resume | stop | rebuild | reset NAME`.
//!
//! Projections run in the application's processes; their control state (paused, rebuilding),
//! checkpoints, leases and last reported status live in the store, which is how this command
//! reaches them: it reads and writes the PostgreSQL checkpoint store
//! ([`PgCheckpoints`]), and the process holding a projection's lease acts on a request within
//! its control interval. A request is stored whether or not a process runs the projection now;
//! the next one to take its lease obeys it.

use std::io::Write;

use crossfold_core::checkpoint::{
    CheckpointError, ControlRequest, ProjectionControl, ProjectionRecord,
};
use crossfold_postgres::PgCheckpoints;
use serde_json::json;

use crate::args::ProjectionsAction;
use crate::config::Settings;
use crate::error::{CliError, code};
use crate::output::table;

pub(crate) async fn run(
    settings: &Settings,
    action: ProjectionsAction,
    json: bool,
) -> Result<u8, CliError> {
    let store = crate::connect_ready(settings, false).await?;
    let control = PgCheckpoints::new(&store);
    let (records, detailed) = match action {
        ProjectionsAction::List => (control.list().await.map_err(store_error)?, false),
        ProjectionsAction::Status(p) => (vec![known(&control, &p.name).await?], true),
        ProjectionsAction::Pause(p) => (
            request(&control, &p.name, ControlRequest::Pause).await?,
            true,
        ),
        ProjectionsAction::Resume(p) => (
            request(&control, &p.name, ControlRequest::Resume).await?,
            true,
        ),
        ProjectionsAction::Stop(p) => (
            request(&control, &p.name, ControlRequest::Stop).await?,
            true,
        ),
        ProjectionsAction::Rebuild(p) => (
            request(&control, &p.name, ControlRequest::Rebuild).await?,
            true,
        ),
        ProjectionsAction::Reset(p) => (
            request(&control, &p.name, ControlRequest::Reset).await?,
            true,
        ),
    };
    if json {
        let list = serde_json::to_value(&records).map_err(std::io::Error::other)?;
        writeln!(
            std::io::stdout().lock(),
            "{}",
            json!({ "projections": list })
        )?;
    } else if detailed {
        for record in &records {
            print_detail(record)?;
        }
    } else {
        print_table(&records)?;
    }
    Ok(code::OK)
}

/// A projection the store knows; asking for one it does not is "not found", not a new record.
async fn known(control: &PgCheckpoints, name: &str) -> Result<ProjectionRecord, CliError> {
    control
        .get(name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            CliError::NotFound(format!(
                "no projection named {name:?} in this schema: `crossfold projections list` shows \
                 those that have run"
            ))
        })
}

async fn request(
    control: &PgCheckpoints,
    name: &str,
    request: ControlRequest,
) -> Result<Vec<ProjectionRecord>, CliError> {
    known(control, name).await?;
    Ok(vec![
        control.request(name, request).await.map_err(store_error)?,
    ])
}

fn store_error(error: CheckpointError) -> CliError {
    match error {
        CheckpointError::Store(e) => CliError::Store(e),
        other => CliError::Store(crossfold_core::StoreError::Backend(other.into())),
    }
}

fn owner(record: &ProjectionRecord) -> String {
    record.lease_owner.clone().unwrap_or_else(|| "-".to_owned())
}

fn lag(record: &ProjectionRecord) -> String {
    let status = &record.status;
    format!(
        "{}{} events, {:.1} s",
        if status.lag_events_capped { ">=" } else { "" },
        status.lag_events,
        status.lag_seconds
    )
}

fn print_table(records: &[ProjectionRecord]) -> Result<(), CliError> {
    let cells: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.status.state.to_string(),
                r.desired.as_str().to_owned(),
                r.position.to_string(),
                lag(r),
                owner(r),
            ]
        })
        .collect();
    table(
        &mut std::io::stdout().lock(),
        &["NAME", "STATE", "DESIRED", "POSITION", "LAG", "OWNER"],
        &cells,
    )?;
    Ok(())
}

fn print_detail(r: &ProjectionRecord) -> Result<(), CliError> {
    let status = &r.status;
    let mut rows = vec![
        ("name", r.name.clone()),
        ("state", status.state.to_string()),
        ("desired", r.desired.as_str().to_owned()),
        ("position", r.position.to_string()),
        ("lag", lag(r)),
        ("events/s", format!("{:.1}", status.events_per_second)),
        ("retries", status.retries.to_string()),
        (
            "generation",
            format!("{} (serving {})", r.generation, r.serving_generation),
        ),
        ("owner", owner(r)),
        ("lease token", r.lease_token.to_string()),
        ("dead letters", r.dead_letters.to_string()),
    ];
    if let Some(replay) = r.replay {
        rows.push(("pending", replay.as_str().to_owned()));
    }
    if let Some(append) = &status.waiting_for {
        rows.push(("waiting for", append.to_string()));
    }
    if let Some(error) = &status.last_error {
        rows.push(("last error", error.clone()));
    }
    if let Some(position) = status.error_position {
        rows.push(("failed at", position.to_string()));
    }
    if let Some(at) = &status.reported_at {
        rows.push(("reported at", at.to_string()));
    }
    let cells: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v])
        .collect();
    table(&mut std::io::stdout().lock(), &["FIELD", "VALUE"], &cells)?;
    Ok(())
}
