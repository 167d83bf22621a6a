//! The real `kanmon up` binary as a child of a test: started in a state directory on free
//! loopback ports, its output to a log file or through a pipe into `tee` (as in
//! `kanmon up 2>&1 | tee up.log`), ended by a signal; and the PostgreSQL processes that serve
//! a state directory, found in `/proc`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use kanmon_control::up::postgres::data_root;

use crate::{client_config, free_port, http_get, tls_connect, workspace_bin};

/// The demo deployment's hostname.
pub const DEMO_HOST: &str = "demo.us-east1.kanmon.test";

/// Where `kanmon up`'s stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A log file beside the state directory.
    File,
    /// One pipe for both, read by a `tee` child writing the same log file.
    PipeToTee,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct UpOpts {
    /// Run the deployments' PostgreSQL servers (else `--no-database`).
    pub database: bool,
    /// Where the output goes.
    pub output: Output,
    /// More arguments of `kanmon up`.
    pub extra_args: Vec<String>,
}

/// A running `kanmon up`; SIGINT, then SIGKILL after a bounded wait, when dropped.
pub struct UpProcess {
    child: Child,
    tee: Option<Child>,
    log: PathBuf,
    /// The proxy's TLS address.
    pub tls: SocketAddr,
    /// The control API address.
    pub api: SocketAddr,
    /// The proxy's admin listener (`/metrics`).
    pub admin: SocketAddr,
    /// The control plane's metrics listener.
    pub metrics: SocketAddr,
    /// The state directory.
    pub state: PathBuf,
}

/// Sends `signal` (`INT`, `KILL`, …) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "kill -{signal} {pid} failed"
    );
}

/// Polls `child` until it exits or `limit` passes.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl UpProcess {
    /// Starts `kanmon up --dir state` on new free ports (grace 2 s), then `opts.extra_args`.
    pub fn start(state: &Path, opts: &UpOpts) -> Self {
        let (tls, admin, api, metrics) = (free_port(), free_port(), free_port(), free_port());
        let log = state.with_extension(format!("{}.log", tls.port()));
        let mut cmd = Command::new(workspace_bin("kanmon"));
        cmd.arg("up")
            .arg("--dir")
            .arg(state)
            .args(["--grace", "2s"])
            .args(["--listen", &tls.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--api", &api.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(&opts.extra_args);
        if !opts.database {
            cmd.arg("--no-database");
        }
        let tee = match opts.output {
            Output::File => {
                let file = std::fs::File::create(&log).expect("log file");
                cmd.stdout(Stdio::null()).stderr(file);
                None
            }
            Output::PipeToTee => {
                let (reader, writer) = std::io::pipe().expect("pipe");
                cmd.stdout(writer.try_clone().expect("pipe")).stderr(writer);
                let tee = Command::new("tee")
                    .arg(&log)
                    .stdin(reader)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("tee");
                Some(tee)
            }
        };
        let child = cmd.spawn().expect("kanmon up");
        // The test keeps no end of the pipe: when tee goes, nobody reads it.
        drop(cmd);
        Self {
            child,
            tee,
            log,
            tls,
            api,
            admin,
            metrics,
            state: state.to_path_buf(),
        }
    }

    /// The process id of `kanmon up`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What `kanmon up` wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends `tee` as Ctrl-C would, and waits for it: `kanmon up`'s output is a pipe nobody
    /// reads any more.
    pub fn close_output(&mut self) {
        let tee = self.tee.as_mut().expect("output goes to tee");
        signal(tee.id(), "INT");
        assert!(
            wait_exit(tee, Duration::from_secs(10)).is_some(),
            "tee did not exit on SIGINT"
        );
    }

    /// Sends `sig` and waits (bounded) for the exit.
    pub fn end_with(&mut self, sig: &str) -> Option<ExitStatus> {
        signal(self.child.id(), sig);
        wait_exit(&mut self.child, Duration::from_secs(90))
    }

    /// Waits (bounded) until the demo deployment answers through the proxy; returns the body.
    pub async fn served(&mut self) -> String {
        let ca = self.state.join("certs").join("ca.crt");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kanmon up exited ({status}); its log:\n{}", self.log());
            }
            // The CA appears once `kanmon up` has created it.
            if ca.is_file() {
                if let Ok(s) = tls_connect(self.tls, DEMO_HOST, client_config(&ca)).await {
                    if let Ok((200, body)) = http_get(s, DEMO_HOST, "/healthcheck").await {
                        return body;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the demo deployment was never served through {}; log:\n{}",
            self.tls,
            self.log()
        );
    }

    /// The admin token of the state directory.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state.join("kanmon.db.admin-token"))
            .expect("token")
            .trim()
            .to_string()
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.child.id(), "INT");
            if wait_exit(&mut self.child, Duration::from_secs(30)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if let Some(tee) = self.tee.as_mut() {
            if matches!(tee.try_wait(), Ok(None)) {
                let _ = tee.kill();
                let _ = tee.wait();
            }
        }
    }
}

/// A state directory `.kanmon` in a `mktemp -d` (0700: only its owner may enter, like a
/// clone under `/root`), removed with the data root its databases were given outside it
/// (when running as root).
pub struct StateDir {
    tmp: tempfile::TempDir,
    state: PathBuf,
}

impl StateDir {
    /// A new state directory (not created yet) in a new private (0700) directory.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        use std::os::unix::fs::PermissionsExt;
        // As `mktemp -d` makes it (tempfile follows the umask).
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
        let state = tmp.path().join(".kanmon");
        Self { tmp, state }
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.state
    }

    /// The private directory holding it.
    pub fn private_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Where the data directories of its deployments are (see
    /// `kanmon_control::up::postgres::data_root`).
    pub fn data_root(&self) -> PathBuf {
        data_root(&self.state.join("postgres"))
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let root = self.data_root();
        if !root.starts_with(self.tmp.path()) && root.is_dir() {
            if let Err(e) = std::fs::remove_dir_all(&root) {
                eprintln!("removing {}: {e}", root.display());
            }
        }
    }
}

/// The `postgres` processes (postmaster, backends, background workers) serving a data
/// directory under `root`: each runs in its data directory.
pub fn postgres_processes_under(root: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let in_root =
            std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root));
        if comm.trim() == "postgres" && in_root {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until no `postgres` process serves a data directory under `root`; the ones
/// still there when the time is up.
pub async fn postgres_gone(root: &Path, limit: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = postgres_processes_under(root);
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
