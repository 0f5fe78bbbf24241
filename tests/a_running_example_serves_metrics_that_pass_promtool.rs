//! The `monitoring` example, run as a host application is: its `/metrics` answer over HTTP
//! passes `promtool check metrics` (every metric described, Prometheus naming and unit
//! conventions), and its health endpoints answer with each component. On PostgreSQL when the
//! `postgres` feature is on, so the store's own metrics are checked too.
//!
//! Uses `promtool` (Debian's `prometheus` package; CI installs it and requires it; without it
//! a built-in subset of its rules checks the answer). Runs the example's binary
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
    let promtool = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // CI installs promtool and must run it; elsewhere (a fresh checkout running the README's test
    // command) the built-in subset of its rules below checks the same answer.
    assert!(
        promtool || std::env::var_os("CI").is_none(),
        "promtool is needed in CI: `apt-get install prometheus` (Debian) puts it on the PATH"
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

    let findings = lint(&metrics);
    assert!(findings.is_empty(), "{findings:#?}\n{metrics}");
    if !promtool {
        eprintln!("promtool is not installed: checked with the built-in rules only");
    } else {
        promtool_check(&metrics);
    }

    // The example logs JSON lines.
    drop(running);
    let mut logs = String::new();
    BufReader::new(stderr).read_to_string(&mut logs).unwrap();
    let first_log = logs.lines().next().unwrap_or_default();
    let log: serde_json::Value = serde_json::from_str(first_log)
        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {first_log:?}"));
    assert_eq!(log["level"], "INFO");
    drop_schema(&url, &schema);
}

fn promtool_check(metrics: &str) {
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
}

fn drop_schema(url: &str, schema: &str) {
    if cfg!(feature = "postgres") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
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

/// The rules of `promtool check metrics` that Crossfold's metrics must keep, for machines without
/// promtool: every family described (HELP and TYPE, before its samples), snake_case names, counters
/// ending in `_total` and nothing else using the suffixes of counters and histograms, base units
/// (seconds, bytes) as suffixes.
fn lint(metrics: &str) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut findings = Vec::new();
    let snake = |name: &str| {
        name.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    for line in metrics.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if text.trim().is_empty() {
                findings.push(format!("{name}: empty HELP"));
            }
            help.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s).filter(|f| {
                        types
                            .get(*f)
                            .is_some_and(|k| k == "histogram" || k == "summary")
                    })
                })
                .unwrap_or(name);
            if !help.contains(family) || !types.contains_key(family) {
                findings.push(format!("{name}: no HELP or TYPE before its samples"));
            }
        }
    }
    for (name, kind) in &types {
        if !snake(name) {
            findings.push(format!("{name}: not snake_case"));
        }
        if kind == "counter" && !name.ends_with("_total") {
            findings.push(format!("{name}: counter without _total"));
        }
        if kind != "counter" && name.ends_with("_total") {
            findings.push(format!("{name}: non-counter ending in _total"));
        }
        if ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.ends_with(s))
        {
            findings.push(format!("{name}: reserved suffix"));
        }
        for unit in [
            "milliseconds",
            "microseconds",
            "nanoseconds",
            "minutes",
            "hours",
            "kilobytes",
            "megabytes",
            "bits",
            "percent",
        ] {
            if name.contains(unit) {
                findings.push(format!("{name}: not a base unit ({unit})"));
            }
        }
    }
    findings
}

#[test]
fn the_built_in_rules_refuse_what_promtool_refuses() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total 1\n\
                # HELP d_seconds Time.\n# TYPE d_seconds histogram\nd_seconds_bucket{le=\"1\"} 1\nd_seconds_sum 1\nd_seconds_count 1\n";
    assert_eq!(lint(good), Vec::<String>::new());
    for bad in [
        "# TYPE a counter\na 1\n",
        "# HELP a_total Things.\n# TYPE a_total counter\na_total 1\nb 2\n",
        "# HELP g_total G.\n# TYPE g_total gauge\ng_total 1\n",
        "# HELP fooBar F.\n# TYPE fooBar gauge\nfooBar 1\n",
        "# HELP d_milliseconds D.\n# TYPE d_milliseconds gauge\nd_milliseconds 1\n",
    ] {
        assert!(!lint(bad).is_empty(), "{bad}");
    }
}
