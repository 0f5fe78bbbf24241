//! `crossfold deadlines`: how many deadlines are pending and overdue, and the next ones due.

use std::io::Write;

use crossfold_core::Timestamp;
use crossfold_core::deadline::DeadlineStore;
use crossfold_postgres::{PgDeadlineStore, PgEventStore};
use serde_json::json;

use crate::args::DeadlinesArgs;
use crate::error::{CliError, code};
use crate::output::table;

pub(crate) async fn run(
    store: &PgEventStore,
    args: DeadlinesArgs,
    json: bool,
) -> Result<u8, CliError> {
    let deadlines = PgDeadlineStore::new(store);
    // "Overdue" by this machine's clock, as a worker here would see it.
    let now = Timestamp::now();
    let counts = deadlines.deadline_counts(now).await?;
    let next = deadlines.pending(args.limit).await?;
    let mut out = std::io::stdout().lock();
    if json {
        let next: Vec<_> = next
            .iter()
            .map(|r| {
                json!({
                    "id": r.deadline.id.as_str(),
                    "kind": r.deadline.kind,
                    "due_at": r.deadline.due_at.to_string(),
                    "overdue": r.deadline.due_at <= now,
                    "claims": r.claims,
                    "payload": r.deadline.payload,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            json!({
                "pending": counts.pending,
                "overdue": counts.overdue,
                "next": next,
            })
        )?;
        return Ok(code::OK);
    }
    writeln!(
        out,
        "{} pending, {} overdue (by this machine's clock)",
        counts.pending, counts.overdue
    )?;
    if next.is_empty() {
        return Ok(code::OK);
    }
    let rows: Vec<Vec<String>> = next
        .iter()
        .map(|r| {
            vec![
                r.deadline.id.to_string(),
                r.deadline.kind.clone(),
                r.deadline.due_at.to_string(),
                if r.deadline.due_at <= now {
                    "overdue".to_owned()
                } else {
                    String::new()
                },
                r.claims.to_string(),
            ]
        })
        .collect();
    table(&mut out, &["DEADLINE", "KIND", "DUE", "", "CLAIMS"], &rows)?;
    Ok(code::OK)
}
