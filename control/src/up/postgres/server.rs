//! The `postgres` server processes: started as children of `kanmon up` that die with it, and
//! stopped by their PID — including servers a previous, killed run left behind.
//!
//! `pg_ctl start` detaches the server (it forks, `setsid`s and exits), so a `kanmon up` that was
//! killed, or whose shutdown was cut short, left it running under PID 1. Instead the
//! postmaster is kanmon's own child, started with `PR_SET_PDEATHSIG` = SIGINT (PostgreSQL's
//! fast shutdown): however kanmon ends — Ctrl-C, SIGTERM, a panic, `kill -9` — the kernel tells
//! the postmaster, which stops its backends and exits. The postmaster is the process that must
//! get it: it forks backends itself and they exit when it dies. Servers are forked by the one
//! launcher thread of the [`super::Databases`] that owns them (`crate::driver::lifeline`).

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::{io, placement::ServerUser, DbError};
use crate::driver::lifeline;

/// How long a server may take to accept connections (crash recovery included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Signals that stop a server, each with how long it gets: fast shutdown, then immediate
/// shutdown (crash recovery on next start), then SIGKILL.
const STOP_STEPS: [(Signal, Duration); 3] = [
    (Signal::SIGINT, Duration::from_secs(60)),
    (Signal::SIGQUIT, Duration::from_secs(10)),
    (Signal::SIGKILL, Duration::from_secs(10)),
];

const POLL: Duration = Duration::from_millis(50);

/// Forks the servers of one [`super::Databases`].
pub(super) type Launcher = lifeline::Launcher<Command, Child>;

pub(super) fn launcher() -> Result<Launcher, DbError> {
    Launcher::new("kanmon-postgres", |mut cmd: Command| cmd.spawn())
        .map_err(io(Path::new("kanmon-postgres thread")))
}

/// A command as the server user (`None`: as ourselves), in `cwd`: as `postgres`, kanmon's own
/// working directory may be one it cannot enter, and `initdb` looks up its own.
pub(super) fn command_as(program: PathBuf, user: Option<ServerUser>, cwd: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(cwd);
    if let Some(u) = user {
        // std switches the child's groups (none), gid and uid before the directory change and
        // before `pre_exec` hooks run.
        c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    c
}

/// Starts `postgres` on `data` and `port` as a child that dies with this process, and waits
/// until it accepts connections. Its output goes to `data/server.log`.
pub(super) fn start(
    launcher: &Launcher,
    postgres: PathBuf,
    user: Option<ServerUser>,
    data: &Path,
    port: u16,
) -> Result<Child, DbError> {
    let log_path = data.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = command_as(postgres, user, data);
    cmd.arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        // On the command line rather than in postgresql.conf: data directories an earlier
        // version initialised get them too.
        .args(super::stats::SERVER_SETTINGS.iter().flat_map(|s| ["-c", s]))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io(&log_path))?)
        .stderr(log)
        // Own process group: a Ctrl-C at the terminal reaches kanmon only, which stops the
        // nodes before their database.
        .process_group(0);
    lifeline::die_with_parent(&mut cmd, Signal::SIGINT);
    let mut child = launcher.spawn(cmd).map_err(|e| DbError::Command {
        command: "postgres".into(),
        detail: e.to_string(),
    })?;
    match wait_ready(&mut child, data) {
        Ok(()) => Ok(child),
        Err(why) => {
            if let Err(e) = stop(&mut child) {
                tracing::warn!(error = %e, "stopping a database server that did not start");
            }
            Err(DbError::Command {
                command: format!("postgres -D {} -p {port}", data.display()),
                detail: format!("{why}; {}", log_tail(&log_path, log_start)),
            })
        }
    }
}

/// Waits until the server's `postmaster.pid` names it and says `ready` (PostgreSQL ≥ 10), or
/// it exits, or [`READY_TIMEOUT`] passes. A TCP connect would not do: another process may
/// hold the port.
fn wait_ready(child: &mut Child, data: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let pid_file = data.join("postmaster.pid");
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("exited ({status})")),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            let lines: Vec<&str> = text.lines().collect();
            let ours = lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(child.id());
            if ours && lines.get(7).map(|s| s.trim()) == Some("ready") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within {READY_TIMEOUT:?}"));
        }
        std::thread::sleep(POLL);
    }
}

/// What the server wrote to its log since `from` (the last lines), for an error message.
fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(from)).is_ok() {
            let mut limited = (&mut f).take(64 * 1024);
            if let Err(e) = limited.read_to_string(&mut text) {
                return format!("its log {} is unreadable: {e}", path.display());
            }
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    format!("its log {}: {tail}", path.display())
}

/// Stops a server this process started: the signals of [`STOP_STEPS`] in turn until it has
/// exited (and is reaped). Blocking.
pub(super) fn stop(child: &mut Child) -> Result<(), DbError> {
    let pid = Pid::from_raw(child.id() as i32);
    let exited = |child: &mut Child| matches!(child.try_wait(), Ok(Some(_)) | Err(_));
    escalate(pid, || exited(child))
}

/// Tells a running server to read its configuration files again (SIGHUP).
pub(super) fn reload(child: &Child) -> Result<(), DbError> {
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGHUP).map_err(|e| DbError::Command {
        command: format!("kill -HUP {pid}"),
        detail: e.to_string(),
    })
}

/// Stops the server a previous run left running on `data`, found by the PID in its
/// `postmaster.pid` once that process is checked to be a postgres serving `data`; a pid file
/// naming anything else is stale and removed (a reused PID would stop the new server from
/// starting). Blocking.
pub(super) fn stop_leftover(data: &Path) -> Result<(), DbError> {
    let pid_file = data.join("postmaster.pid");
    let text = match std::fs::read_to_string(&pid_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(DbError::Io {
                path: pid_file,
                source,
            })
        }
    };
    let data = std::fs::canonicalize(data).map_err(io(data))?;
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return remove_stale(&pid_file);
    };
    if !serves(pid, &data) {
        return remove_stale(&pid_file);
    }
    tracing::warn!(pid, data = %data.display(), "stopping the database server a previous run left behind");
    escalate(Pid::from_raw(pid), || !serves(pid, &data))
}

fn remove_stale(pid_file: &Path) -> Result<(), DbError> {
    tracing::info!(file = %pid_file.display(), "removing a stale postmaster.pid");
    match std::fs::remove_file(pid_file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DbError::Io {
            path: pid_file.to_path_buf(),
            source,
        }),
    }
}

/// Whether process `pid` is a `postgres` whose working directory is `data` (the postmaster
/// changes into its data directory; an exited process has no working directory).
pub(super) fn serves(pid: i32, data: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let is_postgres =
        std::fs::read_to_string(proc.join("comm")).is_ok_and(|c| c.trim() == "postgres");
    is_postgres && std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd == data)
}

/// Sends the signals of [`STOP_STEPS`] to `pid` in turn until `gone()`.
fn escalate(pid: Pid, mut gone: impl FnMut() -> bool) -> Result<(), DbError> {
    for (signal, patience) in STOP_STEPS {
        if gone() {
            return Ok(());
        }
        if let Err(e) = kill(pid, signal) {
            if e == nix::errno::Errno::ESRCH {
                return Ok(());
            }
            return Err(DbError::Command {
                command: format!("kill -{signal} {pid}"),
                detail: e.to_string(),
            });
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if gone() {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        tracing::warn!(%pid, %signal, "database server still running; escalating");
    }
    if gone() {
        Ok(())
    } else {
        Err(DbError::Command {
            command: format!("stopping postgres {pid}"),
            detail: "it survived SIGKILL".into(),
        })
    }
}
