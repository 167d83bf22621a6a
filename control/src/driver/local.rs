//! The local process driver: every node is a child process on its own loopback port.
//!
//! Contract with the node command (the demo game node in `benches/` follows it): it is started
//! with `--listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --console-listen 127.0.0.1:0`
//! (configurable), the node id in
//! `KANMON_NODE_ID`, runtime variables as `KANMON_VAR_<KEY>`, and the path of a 0600 JSON file
//! in `KANMON_NODE_CONFIG` holding the merged config as `KANMON_CONFIG_<KEY>` entries (the
//! deployment's server and runtime keys among them as `KANMON_CONFIG_SOCKET_SERVER_KEY` and
//! `KANMON_CONFIG_RUNTIME_HTTP_KEY`, Nakama's `socket.server_key` and `runtime.http_key`),
//! `KANMON_SECRET_KEYS` (which of those entries are secret, comma-separated) plus the
//! deployment's `DATABASE_URL` (secrets stay out of the environment, which other processes of
//! the same user can read in `/proc/PID/environ`); it prints `listening on ADDR` (and, when
//! started with those flags, `grpc listening on ADDR` and `console listening on ADDR`, in any
//! order) on stdout, answers `GET /healthcheck` with 200, and on SIGTERM
//! stops taking work and exits. Its output goes to `{log_dir}/{instance}/{node}.log`, each line
//! cut at [`LOG_LINE_LIMIT`] bytes and stored as a [`Record`] (UTC time, stream, severity).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

use nix::sys::signal::Signal;

use super::{
    cpu_limit::{join_in_child, CpuLimitMode, CpuLimiter},
    env_name,
    lifeline::{die_with_parent, Launcher},
    log_file::{LogFile, Retention, SharedLogFile},
    node_log::{Record, Stream, LOG_LINE_LIMIT},
    DriverError, Endpoints, NodeHealth, Processes,
};
use crate::domain::NodeLaunch;

/// The variable naming a node's configuration file.
pub const CONFIG_ENV: &str = "KANMON_NODE_CONFIG";

/// Where the configuration of node `id` is written: beside its log, in the deployment's 0700
/// directory.
fn config_file(dir: &std::path::Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.config.json"))
}

/// How nodes are started.
#[derive(Debug, Clone)]
pub struct LocalDriverConfig {
    /// Program to run.
    pub program: PathBuf,
    /// Arguments (the listen flags go here).
    pub args: Vec<String>,
    /// Directory for node logs.
    pub log_dir: PathBuf,
    /// How much of each node's log is kept.
    pub log_retention: Retention,
    /// How long a node may take to print its address.
    pub startup_timeout: Duration,
    /// How long a node may take to exit after SIGTERM beyond its own shutdown grace (the
    /// deployment's `shutdown_grace_sec`, in [`NodeLaunch::shutdown_grace`]) before it is
    /// killed: Nakama finishes its work for up to that grace and then still has to exit.
    pub exit_slack: Duration,
    /// The builds directory (`[builds] dir`): a node whose image is an artifact built for its
    /// own deployment (`{dir}/{instance}/images/...`) runs that artifact as its program, with
    /// the same arguments. Any other image is only passed on as `KANMON_IMAGE`, so a tenant
    /// can never name a program of the machine, or another tenant's build, as its image.
    pub build_images: Option<PathBuf>,
}

impl LocalDriverConfig {
    /// `program node --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --console-listen
    /// 127.0.0.1:0` (the demo node's form).
    pub fn demo_node(program: impl Into<PathBuf>, log_dir: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: [
                "node",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--console-listen",
                "127.0.0.1:0",
            ]
            .map(String::from)
            .to_vec(),
            log_dir: log_dir.into(),
            log_retention: Retention::default(),
            startup_timeout: Duration::from_secs(10),
            exit_slack: Duration::from_secs(5),
            build_images: None,
        }
    }

    /// The program for a node of `instance` with `image`: the deployment's own build artifact
    /// when the image is one (see [`Self::build_images`]), the configured program otherwise.
    pub fn program_for(&self, instance: &str, image: Option<&str>) -> PathBuf {
        let own = self
            .build_images
            .as_ref()
            .zip(image)
            .and_then(|(dir, image)| {
                let path = Path::new(image);
                let images = dir.join(instance).join("images");
                // Directly in the images directory, with no `..` or `.` to climb out of it.
                let inside = path.parent() == Some(images.as_path())
                    && path.components().all(|c| {
                        matches!(
                            c,
                            std::path::Component::Normal(_) | std::path::Component::RootDir
                        )
                    });
                (inside && path.is_file()).then(|| path.to_path_buf())
            });
        own.unwrap_or_else(|| self.program.clone())
    }
}

struct Proc {
    incarnation: u64,
    /// Its launch's shutdown grace: the SIGTERM-to-kill wait is this plus the exit slack.
    shutdown_grace: Duration,
    /// Read once at spawn, so a scrape need not wait for the child's lock.
    pid: Option<u32>,
    endpoints: Endpoints,
    child: Arc<tokio::sync::Mutex<Child>>,
}

/// See the module docs.
pub struct LocalDriver {
    config: LocalDriverConfig,
    procs: Mutex<HashMap<(String, String), Proc>>,
    /// Extra environment per deployment (`DATABASE_URL`).
    env: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// Set by [`LocalDriver::shutdown`]: no more starts, no more exit reports.
    closed: AtomicBool,
    /// Forks every node, so nodes get SIGTERM when the driver (or the process) goes, even by
    /// `kill -9`; made on the first start, inside the runtime the nodes are reaped by.
    launcher: OnceLock<Launcher<Command, Child>>,
    /// Each node's CPU limit (a cgroup per node where the machine allows it).
    cpu: CpuLimiter,
}

impl std::fmt::Debug for LocalDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDriver")
            .field("program", &self.config.program)
            .finish_non_exhaustive()
    }
}

/// Reads lines (cut at [`LOG_LINE_LIMIT`]) that `node` prints on `stream` from `from` and
/// appends their records to `log`.
async fn pump(node: String, stream: Stream, from: impl AsyncRead + Unpin, log: SharedLogFile) {
    pump_lines(&node, stream, from, &log).await;
}

/// Appends one record of what `node` printed; false when the log cannot be written.
fn append(log: &SharedLogFile, node: &str, stream: Stream, line: &[u8]) -> bool {
    let record = Record::new(node, stream, line, SystemTime::now());
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    match log.append(&record.to_line()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(node, error = %e, "node log not writable");
            false
        }
    }
}

async fn pump_lines(node: &str, stream: Stream, from: impl AsyncRead + Unpin, log: &SharedLogFile) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bounded read: at most the limit plus one byte per call, so a newline-less flood
        // cannot grow memory; the rest of an over-long line is skipped.
        let mut limited = (&mut reader).take(LOG_LINE_LIMIT as u64 + 1);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') {
            let mut skip = Vec::new();
            loop {
                skip.clear();
                let mut rest = (&mut reader).take(64 * 1024);
                match rest.read_until(b'\n', &mut skip).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if skip.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
        }
        if !append(log, node, stream, &buf) {
            return;
        }
    }
}

impl LocalDriver {
    /// A driver starting nodes as `config` says.
    pub fn new(config: LocalDriverConfig) -> Self {
        Self {
            config,
            procs: Mutex::new(HashMap::new()),
            env: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            launcher: OnceLock::new(),
            cpu: CpuLimiter::detect(),
        }
    }

    /// How the nodes' CPU limits are enforced (cgroup v2, cgroup v1, or not at all).
    pub fn cpu_limit_mode(&self) -> CpuLimitMode {
        self.cpu.mode()
    }

    /// The cgroup node `node` runs in (`None` when limits are not enforced).
    pub fn node_cgroup(&self, node: &str) -> Option<PathBuf> {
        self.cpu.cgroup_of(node)
    }

    /// Sets extra environment variables for the nodes of `instance` started from now on.
    pub fn set_instance_env(&self, instance: &str, vars: Vec<(String, String)>) {
        self.env
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.to_string(), vars);
    }

    /// Stops every node (all at once, each with the usual SIGTERM then kill) and closes the
    /// driver: later starts never complete and running nodes are no longer reported as
    /// exited, so the control plane does not record its own shutdown as node crashes.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let keys: Vec<(String, String)> = self.procs().keys().cloned().collect();
        let stops = keys.iter().map(|(i, n)| self.stop_node(i, n));
        for (result, (instance, node)) in futures_util::future::join_all(stops)
            .await
            .into_iter()
            .zip(&keys)
        {
            if let Err(e) = result {
                tracing::error!(error = %e, instance, node, "stopping node failed");
            }
        }
    }

    /// Whether [`LocalDriver::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn launcher(&self) -> Result<&Launcher<Command, Child>, DriverError> {
        if let Some(l) = self.launcher.get() {
            return Ok(l);
        }
        let runtime = tokio::runtime::Handle::current();
        let launcher = Launcher::new("kanmon-nodes", move |mut cmd: Command| {
            let _in_runtime = runtime.enter();
            cmd.spawn()
        })
        .map_err(|e| DriverError::Other(format!("node launcher thread: {e}")))?;
        Ok(self.launcher.get_or_init(|| launcher))
    }

    /// (deployment, node, pid) of every running node process, for CPU and memory sampling.
    pub fn node_pids(&self) -> Vec<(String, String, u32)> {
        self.procs()
            .iter()
            .filter_map(|((dep, node), p)| Some((dep.clone(), node.clone(), p.pid?)))
            .collect()
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Proc>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn spawn(
        &self,
        instance: &str,
        spec: &NodeLaunch,
    ) -> Result<(Child, Endpoints), DriverError> {
        let err = |source| DriverError::Start {
            node: spec.id.clone(),
            source,
        };
        let dir = self.config.log_dir.join(instance);
        // Logs hold whatever a node prints (tokens, addresses): owner-only, like the config.
        crate::private::create_dir(&dir).map_err(err)?;
        let log_path = dir.join(format!("{}.log", spec.id));
        let mut cmd = Command::new(self.config.program_for(instance, spec.image.as_deref()));
        cmd.args(&self.config.args)
            .env("KANMON_NODE_ID", &spec.id)
            .env("KANMON_VERSION", spec.version.to_string())
            .env("KANMON_GENERATION", spec.generation.to_string())
            // Held open by the driver: a node may treat EOF on stdin as "the control plane is
            // gone" (the demo node does), so nodes do not outlive a killed control plane.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Own process group: a Ctrl-C at the terminal reaches the control plane only, which
            // then stops nodes in order (SIGTERM, 1001 to WebSocket clients) instead of every
            // node dying at once and being recorded as crashed.
            .process_group(0);
        for (k, v) in &spec.vars {
            cmd.env(env_name("KANMON_VAR_", k), v);
        }
        if let Some(image) = &spec.image {
            cmd.env("KANMON_IMAGE", image);
        }
        let extra = self
            .env
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance)
            .cloned()
            .unwrap_or_default();
        // Config (secret config included) and the database URL go to a 0600 file, not the
        // environment: every process of the same user can read another's /proc/PID/environ.
        let config: BTreeMap<String, String> = super::node_config_entries(spec)
            .into_iter()
            .chain(extra)
            .collect();
        let config_path = config_file(&dir, &spec.id);
        let text = serde_json::to_vec(&config)
            .map_err(|e| DriverError::Other(format!("encoding node config: {e}")))?;
        crate::private::write_file(&config_path, &text).map_err(err)?;
        cmd.env(CONFIG_ENV, &config_path);
        die_with_parent(cmd.as_std_mut(), Signal::SIGTERM);
        if let Some(procs) = self.cpu.prepare(&spec.id, spec.cpus).map_err(err)? {
            join_in_child(cmd.as_std_mut(), procs);
        }
        let mut child = self.launcher()?.spawn(cmd).map_err(err)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| DriverError::Other("no stdout".into()))?;
        let log: SharedLogFile = Arc::new(Mutex::new(
            LogFile::open(&log_path, self.config.log_retention).map_err(err)?,
        ));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(pump(spec.id.clone(), Stream::Stderr, stderr, log.clone()));
        }
        let mut lines = BufReader::new(stdout);
        let (mut addr, mut grpc, mut console) = (None::<SocketAddr>, None, None);
        let asked = |flag: &str| self.config.args.iter().any(|a| a == flag);
        let (wants_grpc, wants_console) = (asked("--grpc-listen"), asked("--console-listen"));
        let read_addresses = async {
            let mut line = String::new();
            for _ in 0..16 {
                line.clear();
                let mut limited = (&mut lines).take(LOG_LINE_LIMIT as u64);
                if limited.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                append(&log, &spec.id, Stream::Stdout, line.as_bytes());
                let text = line.trim();
                if let Some(a) = text.strip_prefix("grpc listening on ") {
                    grpc = a.parse().ok();
                } else if let Some(a) = text.strip_prefix("console listening on ") {
                    console = a.parse().ok();
                } else if let Some(a) = text.strip_prefix("listening on ") {
                    addr = a.parse().ok();
                }
                let all = addr.is_some()
                    && (!wants_grpc || grpc.is_some())
                    && (!wants_console || console.is_some());
                if all {
                    break;
                }
            }
        };
        if tokio::time::timeout(self.config.startup_timeout, read_addresses)
            .await
            .is_err()
        {
            tracing::warn!(node = %spec.id, "node did not print its address in time");
        }
        let Some(addr) = addr else {
            return Err(DriverError::Other(format!(
                "node {} exited or printed no address",
                spec.id
            )));
        };
        tokio::spawn(pump(spec.id.clone(), Stream::Stdout, lines, log));
        Ok((
            child,
            Endpoints {
                addr,
                grpc,
                console,
            },
        ))
    }
}

async fn http_ok(addr: SocketAddr) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
    else {
        return false;
    };
    let req = b"GET /healthcheck HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut head)).await,
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")
    )
}

#[async_trait]
impl Processes for LocalDriver {
    async fn start_node(
        &self,
        instance: &str,
        spec: &NodeLaunch,
    ) -> Result<Endpoints, DriverError> {
        if self.is_closed() {
            // Shutting down: the control plane is going away; never start, never report.
            std::future::pending::<()>().await;
        }
        let key = (instance.to_string(), spec.id.clone());
        let existing = self
            .procs()
            .get(&key)
            .map(|p| (p.incarnation, p.endpoints, p.child.clone()));
        if let Some((incarnation, endpoints, child)) = existing {
            let running = matches!(child.lock().await.try_wait(), Ok(None));
            if incarnation == spec.incarnation && running {
                return Ok(endpoints);
            }
            self.stop_node(instance, &spec.id).await?;
        }
        let (child, endpoints) = self.spawn(instance, spec).await?;
        let proc = Proc {
            incarnation: spec.incarnation,
            shutdown_grace: spec.shutdown_grace,
            pid: child.id(),
            endpoints,
            child: Arc::new(tokio::sync::Mutex::new(child)),
        };
        self.procs().insert(key, proc);
        Ok(endpoints)
    }

    async fn stop_node(&self, instance: &str, node: &str) -> Result<(), DriverError> {
        let Some(proc) = self
            .procs()
            .remove(&(instance.to_string(), node.to_string()))
        else {
            return Ok(());
        };
        // The node read its configuration at start; the secrets need not stay on disk.
        crate::private::remove(&config_file(&self.config.log_dir.join(instance), node));
        let mut child = proc.child.lock().await;
        if let Some(pid) = child.id() {
            // SIGTERM through kill(1): the crate forbids unsafe code, so no direct libc call.
            let term = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if let Err(e) = term {
                tracing::warn!(error = %e, node, "could not send SIGTERM; killing");
            }
        }
        // The node's own grace (Nakama exits after it on SIGTERM): never killed before.
        let wait = proc.shutdown_grace + self.config.exit_slack;
        let result = match tokio::time::timeout(wait, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            _ => {
                tracing::warn!(
                    instance,
                    node,
                    grace = ?proc.shutdown_grace,
                    "node still running after its shutdown grace and the exit slack; killing"
                );
                child
                    .kill()
                    .await
                    .map_err(|e| DriverError::Other(format!("killing {node}: {e}")))
            }
        };
        // Exited and reaped: its cgroup is empty now.
        self.cpu.release(node);
        result
    }

    async fn health(&self, instance: &str, node: &str) -> NodeHealth {
        let found = self
            .procs()
            .get(&(instance.to_string(), node.to_string()))
            .map(|p| (p.endpoints.addr, p.child.clone()));
        if self.is_closed() {
            return NodeHealth::NotYet;
        }
        let Some((addr, child)) = found else {
            return NodeHealth::Exited;
        };
        if !matches!(child.lock().await.try_wait(), Ok(None)) {
            return NodeHealth::Exited;
        }
        if http_ok(addr).await {
            NodeHealth::Healthy
        } else {
            NodeHealth::NotYet
        }
    }

    async fn exit_code(&self, instance: &str, node: &str) -> Option<i32> {
        let child = self
            .procs()
            .get(&(instance.to_string(), node.to_string()))
            .map(|p| p.child.clone())?;
        let status = child.lock().await.try_wait().ok()??;
        status.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn log_lines_are_cut_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', 3 * LOG_LINE_LIMIT));
        input.extend(b"\nafter\n");
        let log = LogFile::open(&path, Retention::default()).unwrap();
        pump(
            "n-0".into(),
            Stream::Stderr,
            &input[..],
            Arc::new(Mutex::new(log)),
        )
        .await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{}", lines.len());
        assert_eq!(lines[0].line, "short");
        assert_eq!(lines[1].line.len(), LOG_LINE_LIMIT);
        assert_eq!(lines[2].line, "after");
        assert!(lines
            .iter()
            .all(|r| r.node == "n-0" && r.stream == Stream::Stderr));
    }

    #[test]
    fn env_names_are_shell_safe() {
        assert_eq!(
            env_name("KANMON_VAR_", "db.pool-size"),
            "KANMON_VAR_DB_POOL_SIZE"
        );
    }
}
