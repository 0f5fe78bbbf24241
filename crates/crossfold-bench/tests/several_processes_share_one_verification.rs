//! `crossfold-bench --processes`: a workload run by several processes of the command against
//! one PostgreSQL schema, reported once, with one verification of everything they wrote. The
//! memory store cannot be shared between processes, which the command says instead of running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[test]
fn two_processes_run_w4_and_w5_and_everything_they_wrote_verifies() {
    let json = std::env::temp_dir().join(format!(
        "crossfold-bench-processes-{}.json",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_crossfold-bench"))
        .args(["--store", "postgres", "--url", &url()])
        .args(["--workloads", "w4,w5", "--processes", "2"])
        .args(["--concurrency", "2", "--duration", "1", "--warmup", "0"])
        .args(["--accounts", "10", "--quiet", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}; is PostgreSQL at {} (DATABASE_URL)?\n{stderr}",
        output.status,
        url()
    );
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let reports = report["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{text}");
    for r in reports {
        assert_eq!(r["processes"], 2, "{r}");
        assert_eq!(r["concurrency"], 2, "{r}");
        assert_eq!(r["verification"]["passed"], true, "{r}");
        assert!(r["operations"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
    // W5 names each batch stream after its task: two processes with the same names would fail
    // each other's appends.
    let w5 = &reports[1];
    assert_eq!(w5["workload"], "w5");
    assert_eq!(w5["failed"], 0, "{w5}");
    assert!(
        stderr.contains("2 processes with 2 in flight each"),
        "{stderr}"
    );
}

#[test]
fn the_memory_store_cannot_be_shared_between_processes() {
    let output = Command::new(env!("CARGO_BIN_EXE_crossfold-bench"))
        .args(["--store", "memory", "--processes", "2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--processes needs --store postgres"),
        "{stderr}"
    );
}
