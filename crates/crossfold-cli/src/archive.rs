//! `crossfold partitions` and `crossfold archive`: a log partitioned by position — list its
//! partitions, convert a log, create partitions ahead, detach old ones to archive them or
//! attach them again — and archived streams — archive one, read one back.

use std::io::Write;

use crossfold_postgres::{PgEventStore, PgLogPartition, PgLogPartitioning};
use serde_json::json;

use crate::args::{ArchiveAction, ArchiveArgs, PartitionsAction, PartitionsArgs};
use crate::error::{CliError, code};
use crate::inspect::stream_id;
use crate::output::{event_block, event_json, size, table};

pub(crate) async fn partitions(
    store: &PgEventStore,
    args: PartitionsArgs,
    json: bool,
) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    match args.action.unwrap_or(PartitionsAction::List) {
        PartitionsAction::List => {
            let partitions = store.log_partitions().await?;
            list(&mut out, &partitions, json)?;
        }
        PartitionsAction::Convert(args) => {
            if !json {
                writeln!(
                    out,
                    "partitioning the log by {} transaction ids, {} ahead (appends go on until \
                     the last step) ...",
                    args.size, args.ahead
                )?;
                out.flush()?;
            }
            let started = std::time::Instant::now();
            let report = store
                .partition_log(
                    PgLogPartitioning::new(args.size)
                        .ahead(args.ahead)
                        .margin(args.margin),
                )
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({
                        "partitioned": true,
                        "seconds": seconds,
                        "event_ids": report.event_ids,
                        "ids_seconds": report.ids_seconds,
                        "check_seconds": report.check_seconds,
                        "lock_wait_seconds": report.lock_wait_seconds,
                        "switch_seconds": report.switch_seconds,
                    })
                )?;
            } else {
                writeln!(
                    out,
                    "partitioned in {seconds:.1} s: {} event ids recorded in {:.1} s and their \
                     range checked in {:.1} s (appends went on), then {:.3} s under the events \
                     table's lock (after {:.3} s waiting for it)",
                    report.event_ids,
                    report.ids_seconds,
                    report.check_seconds,
                    report.switch_seconds,
                    report.lock_wait_seconds
                )?;
                list(&mut out, &store.log_partitions().await?, false)?;
            }
        }
        PartitionsAction::Create => {
            let made = store.ensure_log_partitions().await?;
            if json {
                writeln!(out, "{}", json!({"created": made}))?;
            } else {
                writeln!(out, "created {made} partition(s) ahead of the log")?;
            }
        }
        PartitionsAction::Detach(args) => {
            let events = store.detach_log_partition(&args.name, args.force).await?;
            if json {
                writeln!(out, "{}", json!({"detached": args.name, "events": events}))?;
            } else {
                writeln!(
                    out,
                    "detached {}: {events} event(s) left the log; its table stays in the \
                     schema (dump it with pg_dump -t, then drop it, or attach it again)",
                    args.name
                )?;
            }
        }
        PartitionsAction::Attach(args) => {
            let events = store.attach_log_partition(&args.name).await?;
            if json {
                writeln!(out, "{}", json!({"attached": args.name, "events": events}))?;
            } else {
                writeln!(
                    out,
                    "attached {}: {events} event(s) back in the log",
                    args.name
                )?;
            }
        }
    }
    Ok(code::OK)
}

fn bound(b: Option<u64>, open: &str) -> String {
    b.map_or_else(|| open.to_owned(), |b| b.to_string())
}

fn list(out: &mut impl Write, partitions: &[PgLogPartition], json: bool) -> Result<(), CliError> {
    if json {
        let rows: Vec<_> = partitions
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "from": p.lower,
                    "to": p.upper,
                    "attached": p.attached,
                    "exists": p.exists,
                    "estimated_events": p.estimated_events,
                    "bytes": p.bytes,
                    "created_at": p.created_at.to_string(),
                    "detached_at": p.detached_at.map(|t| t.to_string()),
                })
            })
            .collect();
        writeln!(out, "{}", json!({ "partitions": rows }))?;
        return Ok(());
    }
    if partitions.is_empty() {
        writeln!(
            out,
            "the log is not partitioned (`crossfold partitions convert --size N` partitions it)"
        )?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = partitions
        .iter()
        .map(|p| {
            let state = match (p.attached, p.exists) {
                (true, _) => "attached".to_owned(),
                (false, true) => "detached".to_owned(),
                (false, false) => "detached, dropped".to_owned(),
            };
            vec![
                p.name.clone(),
                if p.upper.is_none() {
                    "default".to_owned()
                } else {
                    bound(p.lower, "start")
                },
                bound(p.upper, ""),
                state,
                p.estimated_events.to_string(),
                size(p.bytes),
            ]
        })
        .collect();
    table(
        out,
        &["PARTITION", "FROM", "TO", "STATE", "EVENTS (EST.)", "SIZE"],
        &rows,
    )?;
    Ok(())
}

pub(crate) async fn archive(
    store: &PgEventStore,
    args: ArchiveArgs,
    json: bool,
) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    match args.action {
        ArchiveAction::Stream(args) => {
            let id = stream_id(&args.id)?;
            let moved = store.archive_stream(&id, args.force).await?;
            if json {
                writeln!(out, "{}", json!({"archived": id.as_str(), "events": moved}))?;
            } else {
                writeln!(
                    out,
                    "archived {}: {moved} event(s) moved out of the log (`crossfold archive \
                     read {}` shows them)",
                    id.as_str(),
                    id.as_str()
                )?;
            }
        }
        ArchiveAction::Read(args) => {
            let id = stream_id(&args.id)?;
            let Some(read) = store.read_archived_stream(&id).await? else {
                return Err(CliError::NotFound(format!(
                    "stream {:?} is not archived",
                    id.as_str()
                )));
            };
            if json {
                let events: Vec<_> = read.events.iter().map(event_json).collect();
                writeln!(
                    out,
                    "{}",
                    json!({ "stream": id.as_str(), "version": read.version.get(), "archived": true, "events": events })
                )?;
            } else {
                for event in &read.events {
                    event_block(&mut out, event)?;
                }
                writeln!(
                    out,
                    "archived stream {}: {} event(s)",
                    id.as_str(),
                    read.events.len()
                )?;
            }
        }
    }
    Ok(code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::Timestamp;

    #[test]
    fn partitions_are_rows_and_the_default_says_so() {
        let at = Timestamp::from_unix_micros(0);
        let partitions = [
            PgLogPartition {
                name: "events_000000".into(),
                lower: None,
                upper: Some(1000),
                attached: false,
                exists: true,
                estimated_events: 5,
                bytes: 8192,
                created_at: at,
                detached_at: Some(at),
            },
            PgLogPartition {
                name: "events_default".into(),
                lower: None,
                upper: None,
                attached: true,
                exists: true,
                estimated_events: 0,
                bytes: 0,
                created_at: at,
                detached_at: None,
            },
        ];
        let mut text = Vec::new();
        list(&mut text, &partitions, false).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("events_000000   start    1000  detached"),
            "{text}"
        );
        assert!(text.contains("events_default  default"), "{text}");
        let mut doc = Vec::new();
        list(&mut doc, &partitions, true).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc["partitions"][0]["to"], 1000);
        assert_eq!(doc["partitions"][1]["to"], serde_json::Value::Null);
    }
}
