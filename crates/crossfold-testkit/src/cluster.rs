//! Throwaway PostgreSQL clusters for tests that need a server of their own: restarts, crashes,
//! restores, roles, settings that must not touch a shared server.
//!
//! [`TestCluster`] runs `initdb` and `pg_ctl` from the server's binary directory in a fresh
//! temporary directory, on a free port of 127.0.0.1 with `trust` authentication, and removes
//! everything when dropped. PostgreSQL refuses to run as root; when the tests run as root
//! (as in CI containers) every server binary runs as the `postgres` operating-system user
//! (`runuser -u postgres --`, else `su`), which owns the cluster's directory.
//!
//! [`TestCluster::standby_of`] makes a streaming-replication standby of a running cluster, and
//! [`TestCluster::promote`] fails over to it.
//!
//! The binaries are found in `$PG_BINDIR`, else the newest `/usr/lib/postgresql/N/bin` (the
//! Debian layout), else `pg_config --bindir`.
//!
//! ```no_run
//! use crossfold_testkit::cluster::{StopMode, TestCluster};
//!
//! # fn main() -> std::io::Result<()> {
//! let mut cluster = TestCluster::builder().setting("max_connections", "50").start()?;
//! let url = cluster.url(); // postgres://postgres@127.0.0.1:PORT/postgres
//! cluster.restart(StopMode::Immediate)?; // a crash, then recovery
//! # let _ = url;
//! # Ok(())
//! # }
//! ```

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The operating-system user that runs the server when the tests run as root.
const SERVER_USER: &str = "postgres";

/// How [`TestCluster::stop`] shuts the server down (`pg_ctl stop -m ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Waits for every client to disconnect.
    Smart,
    /// Disconnects clients, rolls back their transactions and shuts down cleanly.
    Fast,
    /// Kills the server without a shutdown checkpoint, like a crash: the next start recovers
    /// from the WAL.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Settings for a [`TestCluster`] before it is created.
#[derive(Clone, Debug)]
pub struct TestClusterBuilder {
    settings: Vec<(String, String)>,
}

impl TestClusterBuilder {
    /// A `postgresql.conf` setting, kept across restarts. Later settings of the same name win.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Runs `initdb` but does not start the server, so tools that need a stopped cluster
    /// (`pg_resetwal`) can run first. Start it with [`TestCluster::start`].
    pub fn init(self) -> io::Result<TestCluster> {
        TestCluster::init(self.settings)
    }

    /// Runs `initdb` and starts the server.
    pub fn start(self) -> io::Result<TestCluster> {
        let mut cluster = self.init()?;
        cluster.start()?;
        Ok(cluster)
    }
}

/// A PostgreSQL cluster of its own in a temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TestCluster {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_server_user: bool,
    running: bool,
}

impl TestCluster {
    /// Settings before creating the cluster. The defaults favour speed over durability
    /// against an operating-system crash (`fsync = off`); a server crash
    /// ([`StopMode::Immediate`]) still loses nothing committed.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder {
            settings: vec![("fsync".to_owned(), "off".to_owned())],
        }
    }

    /// A started cluster with the default settings.
    pub fn start_new() -> io::Result<TestCluster> {
        Self::builder().start()
    }

    /// An empty cluster directory, owned by the server's user, on a free port.
    fn empty() -> io::Result<TestCluster> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bindir = bindir()?;
        let as_server_user = running_as_root();
        let dir = std::env::temp_dir().join(format!(
            "crossfold-cluster-{}-{}-{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        ));
        fs::create_dir_all(&dir)?;
        let cluster = TestCluster {
            bindir,
            dir,
            port: free_port()?,
            as_server_user,
            running: false,
        };
        if as_server_user {
            let status = Command::new("chown")
                .arg(format!("{SERVER_USER}:"))
                .arg(&cluster.dir)
                .status()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "chown {SERVER_USER} {} failed: {status}",
                    cluster.dir.display()
                )));
            }
        }
        Ok(cluster)
    }

    /// Its own address and socket, after (and so overriding) whatever `postgresql.conf` says.
    fn write_local_settings(&self, settings: &[(String, String)]) -> io::Result<()> {
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))?;
        writeln!(conf, "\n# crossfold TestCluster")?;
        writeln!(conf, "listen_addresses = '127.0.0.1'")?;
        writeln!(conf, "unix_socket_directories = '{}'", self.dir.display())?;
        for (name, value) in settings {
            writeln!(conf, "{name} = '{}'", value.replace('\'', "''"))?;
        }
        Ok(())
    }

    /// A streaming-replication standby of `primary` (running), from a base backup
    /// (`pg_basebackup -R`), not started: start it with [`start`](Self::start), end its
    /// recovery with [`promote`](Self::promote).
    pub fn standby_of(primary: &TestCluster) -> io::Result<TestCluster> {
        let standby = Self::empty()?;
        let data = standby.data_dir();
        let port = primary.port.to_string();
        standby.run_checked(
            "pg_basebackup",
            [
                OsStr::new("-h"),
                OsStr::new("127.0.0.1"),
                OsStr::new("-p"),
                OsStr::new(&port),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-R"),
                OsStr::new("-X"),
                OsStr::new("stream"),
                // An immediate checkpoint: a spread one can keep the backup waiting for many
                // seconds after writes.
                OsStr::new("-c"),
                OsStr::new("fast"),
                OsStr::new("--no-sync"),
            ],
        )?;
        standby.write_local_settings(&[])?;
        Ok(standby)
    }

    /// Ends a standby's recovery: it becomes a primary on a new timeline (a failover).
    pub fn promote(&self) -> io::Result<()> {
        let data = self.data_dir();
        self.run_checked(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("promote"),
            ],
        )?;
        Ok(())
    }

    fn init(settings: Vec<(String, String)>) -> io::Result<TestCluster> {
        let cluster = Self::empty()?;
        let data = cluster.data_dir();
        cluster.run_checked(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--no-sync"),
            ],
        )?;
        cluster.write_local_settings(&settings)?;
        Ok(cluster)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) -> io::Result<()> {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let port = format!("-p {}", self.port);
        let result = self.run_checked(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&port),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("60"),
                OsStr::new("start"),
            ],
        );
        match result {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(e) => {
                let tail = fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(io::Error::other(format!(
                    "{e}\nserver log:\n{}",
                    tail.join("\n")
                )))
            }
        }
    }

    /// Stops the server (see [`StopMode`]).
    pub fn stop(&mut self, mode: StopMode) -> io::Result<()> {
        let data = self.data_dir();
        self.run_checked(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode.as_arg()),
                OsStr::new("-w"),
                OsStr::new("stop"),
            ],
        )?;
        self.running = false;
        Ok(())
    }

    /// Stops the server with `mode` and starts it again on the same port.
    pub fn restart(&mut self, mode: StopMode) -> io::Result<()> {
        self.stop(mode)?;
        self.start()
    }

    /// Whether the server was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// A connection URL for the superuser `postgres` and the database `postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres", "postgres")
    }

    /// A connection URL for `user` and `database` (trust authentication: no password).
    pub fn url_for(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's temporary directory, writable by the server's user: the data directory,
    /// the server log and the Unix socket live here, and so can a test's dump files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory of the server's binaries.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Runs one of the server's binaries (`pg_resetwal`, `pg_dump`, `psql`, ...) as the user
    /// that owns the cluster, and fails with its output if it exits unsuccessfully.
    pub fn run_tool<I, S>(&self, tool: &str, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_checked(tool, args)
    }

    fn run_checked<I, S>(&self, tool: &str, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = self.bindir.join(tool);
        let mut command = if self.as_server_user {
            let mut c = Command::new("runuser");
            c.args(["-u", SERVER_USER, "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(args).current_dir(&self.dir);
        let output = match command.output() {
            Err(e) if self.as_server_user && e.kind() == io::ErrorKind::NotFound => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("runuser is needed to run {tool} as {SERVER_USER}: {e}"),
                ));
            }
            other => other?,
        };
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "{} failed ({}): {}{}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(output)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop(StopMode::Immediate);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (PostgreSQL refuses to).
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port that was free a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn bindir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let newest = fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((version, bin))
                })
                .max_by_key(|(version, _)| *version)
                .map(|(_, bin)| bin)
        });
    if let Some(bin) = newest {
        return Ok(bin);
    }
    let output = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "no PostgreSQL server binaries found: set PG_BINDIR, or install the server \
                 (Debian: postgresql-15) ({e})"
                ),
            )
        })?;
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || dir.is_empty() {
        return Err(io::Error::other("pg_config --bindir gave no directory"));
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_restarts_and_is_removed() {
        let mut cluster = TestCluster::builder()
            .setting("application_name", "it's")
            .start()
            .unwrap();
        let dir = cluster.dir().to_owned();
        assert!(cluster.data_dir().join("PG_VERSION").exists());
        let ready = || {
            cluster
                .run_tool(
                    "pg_isready",
                    ["-h", "127.0.0.1", "-p", &cluster.port().to_string()],
                )
                .is_ok()
        };
        assert!(ready());
        cluster.restart(StopMode::Immediate).unwrap();
        assert!(cluster.is_running());
        cluster.stop(StopMode::Fast).unwrap();
        assert!(!cluster.is_running());
        drop(cluster);
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}
