//! `crossfold check-events`: every stored event's payload, read back and checked to be
//! well-formed in its format, with a report of each one that is not.

use std::io::Write;

use crossfold_core::check::{CheckProgress, CheckReport, EventCheck};
use crossfold_core::{LogFilter, Position, RecordedEvent, decode_payload};
use crossfold_postgres::PgEventStore;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::args::CheckEventsArgs;
use crate::error::{CliError, code};

/// Whether `event`'s payload parses in its own format (its shape is the application's to
/// check).
fn well_formed(event: &RecordedEvent) -> Result<(), String> {
    decode_payload::<serde::de::IgnoredAny>(&event.payload)
        .map(drop)
        .map_err(|e| format!("the {:?} payload does not parse: {e}", event.payload.format))
}

/// Steps of the progress bar.
const STEPS: u64 = 1_000;

/// The progress bar (indicatif draws it only when stderr is a terminal).
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(STEPS);
    bar.set_style(
        ProgressStyle::with_template(
            "[{bar:30}] {percent:>3}%  {msg}  ({elapsed}, about {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>."),
    );
    bar
}

fn advance(bar: &ProgressBar, progress: &CheckProgress) {
    bar.set_position((progress.fraction() * STEPS as f64).round() as u64);
    bar.set_message(format!(
        "{} event(s), {} failed",
        progress.read, progress.failed
    ));
}

pub(crate) async fn run(
    store: &PgEventStore,
    args: CheckEventsArgs,
    json: bool,
) -> Result<u8, CliError> {
    let from = match &args.from {
        None => Position::START,
        Some(text) => text.parse().map_err(|e| {
            CliError::Config(format!(
                "--from {text:?}: {}",
                crossfold_core::ErrorChain(&e)
            ))
        })?,
    };
    let mut check = EventCheck::new(store)
        .check_with(LogFilter::all(), well_formed)
        .from(from)
        .batch(args.batch)
        .keep_failures(args.max_failures);
    let bar = (!json && !args.no_progress).then(progress_bar);
    if let Some(bar) = &bar {
        let bar = bar.clone();
        check = check.on_progress(move |progress| advance(&bar, progress));
    }
    let report = check.run().await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", report_json(&report))?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(if report.failed == 0 {
        code::OK
    } else {
        code::FAILED
    })
}

fn report_json(report: &CheckReport) -> serde_json::Value {
    let failures: Vec<_> = report
        .failures
        .iter()
        .map(|f| {
            json!({
                "position": f.position.to_string(),
                "stream": f.stream.as_str(),
                "version": f.version.get(),
                "event_id": f.event_id.to_string(),
                "event_type": f.event_type,
                "schema_version": f.schema_version,
                "error": f.error,
            })
        })
        .collect();
    json!({
        "from": report.from.to_string(),
        "head": report.head.to_string(),
        "read": report.read,
        "failed": report.failed,
        "failures": failures,
    })
}
