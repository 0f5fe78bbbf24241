//! `crossfold indexes`: the optional read indexes of the log — list them, create one where a
//! subscription filters by category or event type, drop one that no read needs.

use std::io::Write;

use crossfold_postgres::{PgEventStore, PgReadIndex};
use serde_json::json;

use crate::args::{IndexesAction, IndexesArgs};
use crate::error::{CliError, code};
use crate::output::{size, table};

pub(crate) async fn run(
    store: &PgEventStore,
    args: IndexesArgs,
    json: bool,
) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    match args.action.unwrap_or(IndexesAction::List) {
        IndexesAction::List => {
            let indexes = store.read_indexes().await?;
            list(&mut out, &indexes, json)?;
        }
        IndexesAction::Create(name) => {
            let index = name.index;
            if !json {
                // Before the wait, so an operator knows what is going on.
                writeln!(
                    out,
                    "building {} (appends and reads go on meanwhile) ...",
                    index.index_name()
                )?;
                out.flush()?;
            }
            let created = store.create_read_index(index).await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"index": index.as_str(), "name": index.index_name(), "created": created})
                )?;
            } else if created {
                writeln!(
                    out,
                    "{} is ready: reads by {index} use it",
                    index.index_name()
                )?;
            } else {
                writeln!(out, "{} was there already", index.index_name())?;
            }
        }
        IndexesAction::Drop(name) => {
            let index = name.index;
            let dropped = store.drop_read_index(index).await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"index": index.as_str(), "name": index.index_name(), "dropped": dropped})
                )?;
            } else if dropped {
                writeln!(
                    out,
                    "{} dropped: reads by {index} scan the log from their position",
                    index.index_name()
                )?;
            } else {
                writeln!(out, "{} was not there", index.index_name())?;
            }
        }
    }
    Ok(code::OK)
}

fn list(out: &mut impl Write, indexes: &[PgReadIndex], json: bool) -> Result<(), CliError> {
    if json {
        let rows: Vec<_> = indexes
            .iter()
            .map(|i| {
                json!({
                    "index": i.index.as_str(),
                    "name": i.index.index_name(),
                    "state": i.state.as_str(),
                    "size_bytes": i.size_bytes,
                    "scans": i.scans,
                })
            })
            .collect();
        writeln!(out, "{}", json!({ "indexes": rows }))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = indexes
        .iter()
        .map(|i| {
            vec![
                i.index.as_str().to_owned(),
                i.index.index_name().to_owned(),
                i.state.as_str().to_owned(),
                i.size_bytes.map_or_else(String::new, size),
                i.scans.map_or_else(String::new, |s| s.to_string()),
            ]
        })
        .collect();
    table(out, &["INDEX", "NAME", "STATE", "SIZE", "SCANS"], &rows)?;
    Ok(())
}
