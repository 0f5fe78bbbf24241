//! `crossfold health`: the store's own health check, plus whether its schema is migrated, as
//! an exit status for scripts and probes (0 healthy, 1 degraded, 2 unhealthy).

use std::io::Write;
use std::time::{Duration, Instant};

use crossfold_core::checkpoint::{
    DesiredState, ProjectionControl, ProjectionRecord, ProjectionState,
};
use crossfold_core::{ErrorChain, HealthCheck, HealthReport, HealthStatus, Timestamp};
use crossfold_postgres::{PgCheckpoints, PgEventStore, PgMigrationError};

use crate::config::Settings;
use crate::error::{CliError, code};
use crate::output::table;

/// A check that takes longer is reported unhealthy: a probe must answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(settings: &Settings, json: bool) -> Result<u8, CliError> {
    let components = match crate::connect(settings, false).await {
        Ok(store) => {
            let mut components = vec![store_report(&store).await, schema_report(&store).await];
            if components.iter().all(|c| c.status == HealthStatus::Healthy) {
                components.extend(projection_reports(&store).await);
            }
            components
        }
        // An unreachable server is an answer here, not a failure of the command.
        Err(CliError::Unreachable { target, source }) => vec![HealthReport::unhealthy(
            "event_store",
            format!(
                "PostgreSQL at {target} did not answer: {}",
                ErrorChain(&source)
            ),
        )],
        Err(other) => return Err(other),
    };
    let status = components
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(HealthStatus::Healthy);
    print(status, &components, json)?;
    Ok(match status {
        HealthStatus::Healthy => code::OK,
        HealthStatus::Degraded => code::FAILED,
        HealthStatus::Unhealthy => code::UNHEALTHY,
    })
}

async fn store_report(store: &PgEventStore) -> HealthReport {
    let started = Instant::now();
    match tokio::time::timeout(CHECK_TIMEOUT, store.check_health()).await {
        Ok(report) => report,
        Err(_) => {
            let mut report = HealthReport::unhealthy(
                "event_store",
                format!("no answer within {CHECK_TIMEOUT:?}"),
            );
            report.checked_in = started.elapsed();
            report
        }
    }
}

/// Healthy when the schema has every migration this build knows; degraded when some are
/// pending (the store works, a deploy is half done); unhealthy when it is not there at all or
/// cannot be used.
async fn schema_report(store: &PgEventStore) -> HealthReport {
    let started = Instant::now();
    let result = tokio::time::timeout(CHECK_TIMEOUT, store.migration_status()).await;
    let mut report = match result {
        Err(_) => HealthReport::unhealthy("schema", format!("no answer within {CHECK_TIMEOUT:?}")),
        Ok(Err(PgMigrationError::Store(e))) => {
            HealthReport::unhealthy("schema", format!("cannot be read: {}", ErrorChain(&e)))
        }
        Ok(Err(e)) => HealthReport::unhealthy("schema", ErrorChain(&e).to_string()),
        Ok(Ok(status)) if !status.schema_exists || status.version == 0 => HealthReport::unhealthy(
            "schema",
            "no Crossfold store in this schema: run `crossfold migrate`",
        )
        .detail("version", 0),
        Ok(Ok(status)) if !status.pending.is_empty() => HealthReport {
            status: HealthStatus::Degraded,
            message: Some(format!(
                "migrations {:?} pending: run `crossfold migrate`",
                status.pending
            )),
            ..HealthReport::healthy("schema")
        }
        .detail("version", status.version),
        Ok(Ok(status)) => HealthReport::healthy("schema").detail("version", status.version),
    };
    report.checked_in = started.elapsed();
    report.detail("schema", store.schema())
}

/// One component per projection the schema knows (`projection:NAME`), from what its runner
/// last reported: unhealthy when failed or stalled; degraded when paused, stopped, retrying,
/// wanted running while no process holds its lease, or waiting for an append open longer than
/// the store's long-transaction threshold.
async fn projection_reports(store: &PgEventStore) -> Vec<HealthReport> {
    let started = Instant::now();
    let control = PgCheckpoints::new(store);
    let threshold = store.long_transaction_threshold();
    match tokio::time::timeout(CHECK_TIMEOUT, control.list()).await {
        Ok(Ok(records)) => records
            .iter()
            .map(|r| projection_report(r, threshold))
            .collect(),
        Ok(Err(e)) => vec![HealthReport::unhealthy(
            "projections",
            format!("cannot be read: {}", ErrorChain(&e)),
        )],
        Err(_) => {
            let mut report = HealthReport::unhealthy(
                "projections",
                format!("no answer within {CHECK_TIMEOUT:?}"),
            );
            report.checked_in = started.elapsed();
            vec![report]
        }
    }
}

fn projection_report(record: &ProjectionRecord, threshold: Duration) -> HealthReport {
    let status = &record.status;
    let component = format!("projection:{}", record.name);
    let why = |what: String| match &status.last_error {
        Some(e) => format!("{what}: {e}"),
        None => what,
    };
    let unowned = record
        .lease_expires_at
        .as_ref()
        .is_none_or(|expires| *expires < Timestamp::now());
    let (level, message) = match status.state {
        ProjectionState::Failed => (
            HealthStatus::Unhealthy,
            Some(why(match status.error_position {
                Some(p) => format!("failed at position {p}"),
                None => "failed".to_owned(),
            })),
        ),
        ProjectionState::Stalled => (HealthStatus::Unhealthy, Some(why("stalled".to_owned()))),
        _ if record.desired != DesiredState::Running => (
            HealthStatus::Degraded,
            Some(format!("{} by a control request", record.desired.as_str())),
        ),
        ProjectionState::Paused | ProjectionState::Stopped => (
            HealthStatus::Degraded,
            Some(format!("{} by a control request", status.state)),
        ),
        _ if unowned => (
            HealthStatus::Degraded,
            Some("no process holds its lease: nothing applies its events".to_owned()),
        ),
        _ if status.retries > 0 => (HealthStatus::Degraded, Some(why("retrying".to_owned()))),
        ProjectionState::Waiting
            if status
                .waiting_for
                .as_ref()
                .is_some_and(|a| a.open_seconds > threshold.as_secs_f64()) =>
        {
            (
                HealthStatus::Degraded,
                status.waiting_for.as_ref().map(|a| {
                    format!(
                        "waiting for {a}: {} committed events cannot be applied until it ends",
                        status.lag_events
                    )
                }),
            )
        }
        _ => (HealthStatus::Healthy, None),
    };
    let mut report = HealthReport::healthy(component)
        .detail("state", status.state.as_str())
        .detail("position", record.position.to_string())
        .detail("lag_events", status.lag_events)
        .detail("lag_seconds", status.lag_seconds);
    if let Some(append) = &status.waiting_for {
        report = report
            .detail("waiting_pid", append.pid)
            .detail("waiting_seconds", append.open_seconds);
    }
    report.status = level;
    report.message = message;
    report
}

fn print(status: HealthStatus, components: &[HealthReport], json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", HealthReport::document(status, components))?;
        return Ok(());
    }
    writeln!(out, "{status}")?;
    let rows: Vec<Vec<String>> = components
        .iter()
        .map(|c| {
            vec![
                c.component.clone(),
                c.status.to_string(),
                c.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&mut out, &["COMPONENT", "STATUS", "MESSAGE"], &rows)?;
    for c in components.iter().filter(|c| !c.details.is_empty()) {
        let details: Vec<String> = c.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(out, "{}: {}", c.component, details.join(" "))?;
    }
    Ok(())
}
