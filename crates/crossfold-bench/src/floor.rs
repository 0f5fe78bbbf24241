//! The floor: what PostgreSQL itself allows on this machine for the same work, measured with
//! `pgbench` running hand-written SQL in the same run, so the library's figures can be judged
//! as ratios.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossfold_core::ErrorChain;
use serde_json::json;

/// The scripts, in the order they run.
pub(crate) const SCRIPTS: [(&str, &str); 6] = [
    ("floor", include_str!("../floor/floor.sql")),
    ("command", include_str!("../floor/command.sql")),
    ("transfer", include_str!("../floor/transfer.sql")),
    ("batch", include_str!("../floor/batch.sql")),
    ("read", include_str!("../floor/read.sql")),
    ("schema", include_str!("../floor/schema.sql")),
];

/// Transactions per second of each script.
#[derive(Clone, Debug, Default)]
pub(crate) struct Floor {
    pub(crate) results: Vec<(String, f64, f64)>,
}

impl Floor {
    pub(crate) fn tps(&self, script: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|(s, _, _)| s == script)
            .map(|(_, tps, _)| *tps)
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!(
            self.results
                .iter()
                .map(|(s, tps, lat)| json!({"script": s, "tps": tps, "latency_avg_ms": lat}))
                .collect::<Vec<_>>()
        )
    }
}

/// Runs every script with `pgbench -M prepared -c <clients>` for `seconds` each.
pub(crate) async fn measure(url: &str, seconds: u64, clients: usize) -> Result<Floor, String> {
    let dir = write_scripts()?;
    let result = run_all(url, &dir, seconds, clients).await;
    let _ = psql(url, "DROP TABLE IF EXISTS floor_events, floor_streams").await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_all(url: &str, dir: &Path, seconds: u64, clients: usize) -> Result<Floor, String> {
    let schema = dir.join("schema.sql");
    let out = tokio::process::Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", url, "-f"])
        .arg(&schema)
        .output()
        .await
        .map_err(|e| format!("cannot run psql: {}", ErrorChain(&e)))?;
    if !out.status.success() {
        return Err(format!(
            "floor schema failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut floor = Floor::default();
    for (name, _) in SCRIPTS.iter().filter(|(n, _)| *n != "schema") {
        eprint!("  floor: {name:<9}");
        let out = tokio::process::Command::new("pgbench")
            .args(["-n", "-M", "prepared", "-c"])
            .arg(clients.to_string())
            .args(["-j", "2", "-T"])
            .arg(seconds.to_string())
            .arg("-f")
            .arg(dir.join(format!("{name}.sql")))
            .arg(url)
            .output()
            .await
            .map_err(|e| format!("cannot run pgbench: {}", ErrorChain(&e)))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (tps, latency) = parse(&text).ok_or_else(|| {
            format!(
                "pgbench {name} printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        eprintln!(" {tps:>9.0} tx/s  {latency:.2} ms");
        floor.results.push(((*name).to_owned(), tps, latency));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(floor)
}

fn parse(text: &str) -> Option<(f64, f64)> {
    let mut tps = None;
    let mut latency = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("tps = ") {
            tps = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        }
        if let Some(rest) = line.strip_prefix("latency average = ") {
            latency = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        }
    }
    Some((tps?, latency.unwrap_or(0.0)))
}

fn write_scripts() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("crossfold-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create {}: {}", dir.display(), ErrorChain(&e)))?;
    for (name, sql) in SCRIPTS {
        std::fs::write(dir.join(format!("{name}.sql")), sql)
            .map_err(|e| format!("cannot write script {name}: {}", ErrorChain(&e)))?;
    }
    Ok(dir)
}

async fn psql(url: &str, sql: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("psql")
        .args(["-q", url, "-c", sql])
        .output()
        .await
        .map_err(|e| ErrorChain(&e).to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_output() {
        let text = "transaction type: floor.sql\nlatency average = 0.975 ms\ninitial connection time = 12.3 ms\ntps = 16410.123456 (without initial connection time)\n";
        assert_eq!(parse(text), Some((16410.123456, 0.975)));
        assert_eq!(parse("nothing"), None);
    }
}
