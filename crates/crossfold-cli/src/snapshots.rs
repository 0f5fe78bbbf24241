//! `crossfold snapshots`: the snapshots of command state the store holds, per state — how
//! many, their size, the state versions they were taken under, the newest — and
//! `snapshots drop STATE`, for a state whose snapshots should go (taken by a build whose fold
//! was wrong, or taking room no longer worth it). Snapshots are only shortcuts: dropping them
//! changes no decision, the state's commands fold from the events again and take new ones as
//! their policy says.

use std::io::Write;

use crossfold_core::{SnapshotStore, SnapshotSummary};
use crossfold_postgres::PgEventStore;
use serde_json::json;

use crate::args::{SnapshotsAction, SnapshotsArgs};
use crate::error::{CliError, code};
use crate::output::{size, table};

pub(crate) async fn run(
    store: &PgEventStore,
    args: SnapshotsArgs,
    json: bool,
) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    match args.action.unwrap_or(SnapshotsAction::List) {
        SnapshotsAction::List => {
            let summary = store.snapshot_summary().await?;
            list(&mut out, &summary, json)?;
        }
        SnapshotsAction::Drop(name) => {
            let state = name.state;
            let dropped = store.drop_snapshots(&state).await?;
            if json {
                writeln!(out, "{}", json!({"state": state, "dropped": dropped}))?;
            } else if dropped == 0 {
                writeln!(out, "no snapshots of {state} to drop")?;
            } else {
                writeln!(
                    out,
                    "dropped {dropped} snapshot{} of {state}: its commands fold from the \
                     events again",
                    if dropped == 1 { "" } else { "s" }
                )?;
            }
        }
    }
    Ok(code::OK)
}

fn versions(summary: &SnapshotSummary) -> String {
    summary
        .state_versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(out: &mut impl Write, summary: &[SnapshotSummary], json: bool) -> Result<(), CliError> {
    if json {
        let rows: Vec<_> = summary
            .iter()
            .map(|s| {
                json!({
                    "state": s.state,
                    "count": s.count,
                    "bytes": s.bytes,
                    "state_versions": s.state_versions,
                    "newest": s.newest.map(|t| t.to_string()),
                })
            })
            .collect();
        writeln!(out, "{}", json!({ "snapshots": rows }))?;
        return Ok(());
    }
    if summary.is_empty() {
        writeln!(out, "no snapshots")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|s| {
            vec![
                s.state.clone(),
                s.count.to_string(),
                size(s.bytes),
                versions(s),
                s.newest.map_or_else(String::new, |t| t.to_string()),
            ]
        })
        .collect();
    table(
        out,
        &["STATE", "COUNT", "SIZE", "VERSIONS", "NEWEST"],
        &rows,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::Timestamp;

    #[test]
    fn a_state_is_one_row() {
        let summary = [SnapshotSummary {
            state: "bank.balance".into(),
            count: 3,
            bytes: 2048,
            state_versions: vec![1, 3],
            newest: Some(Timestamp::from_unix_micros(0)),
        }];
        let mut out = Vec::new();
        list(&mut out, &summary, false).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "STATE         COUNT  SIZE    VERSIONS  NEWEST\n\
             bank.balance  3      2.0 kB  1, 3      1970-01-01T00:00:00.000000Z\n"
        );
        let mut out = Vec::new();
        list(&mut out, &[], false).unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "no snapshots\n");
    }
}
