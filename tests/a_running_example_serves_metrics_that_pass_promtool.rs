//! The `monitoring` example, run as a host application is: its `/metrics` answer over HTTP
//! passes `promtool check metrics` (every metric described, Prometheus naming and unit
//! conventions), and its health endpoints answer with each component. On PostgreSQL when the
//! `postgres` feature is on, so the store's own metrics are checked too.
//!
//! Needs `promtool` (Debian's `prometheus` package; CI installs it). Runs the example's binary
//! that `cargo test` built along with the tests. Run alone (`cargo test --test
//! a_running_example_...`), cargo builds no example: the test then builds it if there is none,
//! but runs whatever was built last if there is one — build the example first
//! (`cargo build --example monitoring --features monitoring,postgres`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kills the example when the test ends, however it ends.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example_binary() -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf();
    let binary = dir.join("examples").join("monitoring");
    if !binary.is_file() {
        let mut features = vec!["memory", "monitoring"];
        if cfg!(feature = "postgres") {
            features.push("postgres");
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let built = Command::new(cargo)
            .args(["build", "--example", "monitoring", "--features"])
            .arg(features.join(","))
            .status()
            .unwrap();
        assert!(built.success(), "building the example failed");
    }
    binary
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

#[test]
fn a_running_example_serves_metrics_that_pass_promtool() {
    let promtool = Command::new("promtool").arg("--version").output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is needed: `apt-get install prometheus` (Debian) puts it on the PATH"
    );

    let mut command = Command::new(example_binary());
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--commands",
        "200",
        "--exit-after",
        "120",
        "--json-logs",
    ]);
    let schema = format!(
        "cf_test_{}_{:08x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        uuid::Uuid::new_v4().as_u128() as u32
    );
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    if cfg!(feature = "postgres") {
        let join = if url.contains('?') { '&' } else { '?' };
        command.args(["--postgres", &format!("{url}{join}schema={schema}")]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let addr: SocketAddr = first
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "workload done");

    let (status, live) = get(addr, "/health/live");
    assert_eq!((status, live.as_str()), (200, r#"{"status":"healthy"}"#));
    // Readiness also refreshes the store's pool and transaction gauges.
    let (status, ready) = get(addr, "/health/ready");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let components: Vec<&str> = ready["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    if cfg!(feature = "postgres") {
        assert_eq!(components, ["event_store", "pool", "listener"], "{ready}");
    } else {
        assert_eq!(components, ["event_store"], "{ready}");
    }
    assert_eq!(status == 503, ready["status"] == "unhealthy", "{ready}");

    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let mut expected = vec![
        "# TYPE crossfold_commands_total counter",
        "# TYPE crossfold_command_duration_seconds histogram",
        "# TYPE crossfold_command_attempts histogram",
        r#"crossfold_commands_total{command="Transfer",outcome="success"}"#,
    ];
    if cfg!(feature = "postgres") {
        expected.extend([
            "# TYPE crossfold_store_operation_duration_seconds histogram",
            "# TYPE crossfold_postgres_pool_connections gauge",
            "# TYPE crossfold_postgres_oldest_transaction_age_seconds gauge",
        ]);
    }
    for line in expected {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }

    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    // promtool prints lint findings and still exits 0 for some of them: neither is allowed.
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {findings}\n{metrics}"
    );

    // The example logs JSON lines.
    drop(running);
    let mut logs = String::new();
    BufReader::new(stderr).read_to_string(&mut logs).unwrap();
    let first_log = logs.lines().next().unwrap_or_default();
    let log: serde_json::Value = serde_json::from_str(first_log)
        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {first_log:?}"));
    assert_eq!(log["level"], "INFO");

    if cfg!(feature = "postgres") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .unwrap();
        });
    }
}
