//! `crossfold migrate`, `migrate --dry-run`, `migrate status`.

use std::io::Write;
use std::time::Duration;

use crossfold_postgres::{PgEventStore, PgMigration, PgMigrationStatus};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::args::{MigrateAction, MigrateArgs};
use crate::error::{CliError, code};
use crate::output::table;

fn schema_error(store: &PgEventStore) -> impl Fn(crossfold_postgres::PgMigrationError) -> CliError {
    let schema = store.schema().to_owned();
    move |source| CliError::Schema {
        schema: schema.clone(),
        source,
    }
}

fn migration(version: u32) -> Option<&'static PgMigration> {
    PgEventStore::migrations()
        .iter()
        .find(|m| m.version() == version)
}

fn name(version: u32) -> &'static str {
    migration(version).map_or("(unknown to this build)", PgMigration::name)
}

pub(crate) async fn run(
    store: &PgEventStore,
    args: MigrateArgs,
    json: bool,
) -> Result<u8, CliError> {
    let status = store
        .migration_status()
        .await
        .map_err(schema_error(store))?;
    if let Some(MigrateAction::Status) = args.action {
        return print_status(store, &status, json);
    }
    let pending: Vec<u32> = status
        .pending
        .iter()
        .copied()
        .filter(|v| args.to.is_none_or(|to| *v <= to))
        .collect();
    if args.dry_run {
        return print_plan(store, &status, &pending, json);
    }
    let report = if pending.is_empty() {
        None
    } else {
        // One call for all of them, not one per migration: a store created by the call builds
        // its indexes in a transaction instead of waiting for every older one in the database.
        let spinner = (!json).then(|| spinner(&pending));
        let result = match args.to {
            Some(to) => store.migrate_to(to).await,
            None => store.migrate().await,
        };
        if let Some(spinner) = spinner {
            spinner.finish_and_clear();
        }
        Some(result.map_err(schema_error(store))?)
    };
    let applied = report
        .as_ref()
        .map(|r| r.applied.clone())
        .unwrap_or_default();
    let version = report.as_ref().map_or(status.version, |r| r.version);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            json!({
                "schema": store.schema(),
                "applied": applied,
                "version": version,
                "dry_run": false,
            })
        )?;
    } else if applied.is_empty() {
        writeln!(
            out,
            "schema {}: at version {version}, nothing to apply",
            store.schema()
        )?;
    } else {
        for v in &applied {
            writeln!(out, "applied {v} {}", name(*v))?;
        }
        writeln!(out, "schema {}: now at version {version}", store.schema())?;
    }
    Ok(code::OK)
}

fn spinner(pending: &[u32]) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let list: Vec<String> = pending
        .iter()
        .map(|v| format!("{v} {}", name(*v)))
        .collect();
    spinner.set_message(format!("applying {}", list.join(", ")));
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

fn print_plan(
    store: &PgEventStore,
    status: &PgMigrationStatus,
    pending: &[u32],
    json: bool,
) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            json!({
                "schema": store.schema(),
                "version": status.version,
                "would_apply": pending,
                "dry_run": true,
            })
        )?;
        return Ok(code::OK);
    }
    if pending.is_empty() {
        writeln!(
            out,
            "schema {}: at version {}, nothing to apply",
            store.schema(),
            status.version
        )?;
        return Ok(code::OK);
    }
    if !status.schema_exists {
        writeln!(out, "would create schema {}", store.schema())?;
    }
    for v in pending {
        let how = match migration(*v) {
            Some(m) if !m.is_transactional() => "outside a transaction (concurrent index builds)",
            _ => "in a transaction",
        };
        writeln!(out, "would apply {v} {} {how}", name(*v))?;
    }
    writeln!(out, "(dry run: nothing was changed)")?;
    Ok(code::OK)
}

fn print_status(
    store: &PgEventStore,
    status: &PgMigrationStatus,
    json: bool,
) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        let applied: Vec<_> = status
            .applied
            .iter()
            .map(|(v, at)| json!({"version": v, "name": name(*v), "applied_at": at}))
            .collect();
        let pending: Vec<_> = status
            .pending
            .iter()
            .map(|v| json!({"version": v, "name": name(*v)}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({
                "schema": store.schema(),
                "schema_exists": status.schema_exists,
                "version": status.version,
                "applied": applied,
                "pending": pending,
                "newer": status.newer,
                "up_to_date": status.pending.is_empty(),
            })
        )?;
        return Ok(code::OK);
    }
    let summary = if !status.schema_exists {
        "does not exist".to_owned()
    } else if status.pending.is_empty() {
        format!("version {}, up to date", status.version)
    } else {
        format!(
            "version {}, {} migration(s) pending: run `crossfold migrate`",
            status.version,
            status.pending.len()
        )
    };
    writeln!(out, "schema {}: {summary}", store.schema())?;
    let mut rows: Vec<Vec<String>> = status
        .applied
        .iter()
        .map(|(v, at)| {
            vec![
                v.to_string(),
                name(*v).to_owned(),
                "applied".to_owned(),
                at.clone().unwrap_or_default(),
            ]
        })
        .collect();
    rows.extend(status.pending.iter().map(|v| {
        vec![
            v.to_string(),
            name(*v).to_owned(),
            "pending".to_owned(),
            String::new(),
        ]
    }));
    rows.extend(status.newer.iter().map(|v| {
        vec![
            v.to_string(),
            name(*v).to_owned(),
            "applied by a newer build".to_owned(),
            String::new(),
        ]
    }));
    rows.sort_by_key(|r| r[0].parse::<u32>().unwrap_or(u32::MAX));
    table(&mut out, &["VERSION", "NAME", "STATE", "APPLIED AT"], &rows)?;
    Ok(code::OK)
}
