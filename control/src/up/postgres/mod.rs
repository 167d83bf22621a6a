//! One PostgreSQL server per deployment (Debian's `postgresql` package): its own `initdb` data
//! directory, its own loopback port, started with the deployment's first node and stopped with
//! `kanmon up` (or when the deployment is deleted). Where the data directories live and as whom
//! the servers run (as root: the `postgres` OS user, data outside the state directory) is
//! `placement`'s; how a server is started so that it never outlives `kanmon up`, and how one
//! a killed run left behind is stopped, is `server`'s. Clients (`pg_dump`, the nodes) connect
//! over TCP to 127.0.0.1 with a password generated per deployment (scram-sha-256) and kept
//! 0600 in the state directory, so they need no OS user.

mod placement;
mod server;
mod stats;
mod tier;
mod tools;

pub use placement::{data_root, ROOT_DATA_BASE};
pub use stats::{DatabaseStats, StatsConfig};
use tools::run;
pub use tools::PgTools;

use crate::domain::tier::{apply_needed, postgres_tier, Apply, PgSetting};

use std::{
    collections::HashMap,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The PostgreSQL server programs are not installed.
    #[error(
        "PostgreSQL is not installed (no initdb/postgres under /usr/lib/postgresql/*/bin or on PATH): \
         install it with `apt-get install postgresql` (Debian/Ubuntu), or run `kanmon up --no-database`"
    )]
    NotInstalled,
    /// Running as root, but the `postgres` user or the data root cannot be used.
    #[error("running as root: {0}")]
    RootSetup(String),
    /// `kanmon up` is stopping: no database starts any more.
    #[error("the databases are shutting down")]
    Closed,
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command.
        command: String,
        /// Its stderr (or the spawn error).
        detail: String,
    },
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DbError + '_ {
    move |source| DbError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A running database of one deployment: the server is our child.
#[derive(Debug)]
struct Running {
    port: u16,
    password: String,
    server: Child,
    /// The CPU tier it was sized for, and that tier's settings.
    db_cpus: u32,
    settings: Vec<PgSetting>,
}

/// The superuser `initdb` creates, as whom nodes, `pg_dump` and the sampler connect.
const SUPERUSER: &str = "kanmon";
/// The database the nodes are given.
const DATABASE: &str = "postgres";

/// How to reach one running server (for sampling its statistics).
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub(crate) instance: String,
    pub(crate) port: u16,
    pub(crate) password: String,
    /// The postmaster's process id.
    pub(crate) pid: u32,
}

/// The databases of all deployments under one state directory.
#[derive(Debug)]
pub struct Databases {
    tools: PgTools,
    /// `{state}/postgres`: passwords, the data-root record, and (not as root) the data.
    dir: PathBuf,
    placement: placement::Placement,
    launcher: server::Launcher,
    running: Mutex<HashMap<String, Running>>,
    /// Serialises [`Databases::ensure`] (two nodes of a resumed deployment start together)
    /// and [`Databases::stop_all`] after it.
    starting: Mutex<()>,
    closed: AtomicBool,
}

/// Tries to start a database server before giving up (each on a newly chosen port).
const START_ATTEMPTS: u32 = 3;

fn free_port() -> Result<u16, DbError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io(Path::new("127.0.0.1:0")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io(Path::new("127.0.0.1:0")))
}

impl Databases {
    /// Databases of the state directory whose `postgres` directory is `dir` (created if
    /// missing). Fails when PostgreSQL is not installed, or when running as root and there is
    /// no `postgres` user or the data root cannot be set up.
    pub fn new(dir: &Path) -> Result<Self, DbError> {
        let tools = PgTools::find()?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
        let placement = placement::decide(&dir, Path::new(ROOT_DATA_BASE))?;
        Ok(Self {
            tools,
            dir,
            placement,
            launcher: server::launcher()?,
            running: Mutex::new(HashMap::new()),
            starting: Mutex::new(()),
            closed: AtomicBool::new(false),
        })
    }

    /// Where the data directories are (one per deployment, named after it).
    pub fn data_root(&self) -> &Path {
        &self.placement.data_root
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn data_dir(&self, instance: &str) -> PathBuf {
        self.placement.data_root.join(instance)
    }

    fn password_file(&self, instance: &str) -> PathBuf {
        self.dir.join(format!("{instance}.password"))
    }

    /// Creates the data directory (once), starts the server if it is not running (stopping one
    /// a previous run left behind first) sized for `db_cpus` CPUs, and returns the
    /// `postgres://` URL the deployment's nodes get as `DATABASE_URL`. A running server of a
    /// smaller tier is resized: its settings file rewritten, then reloaded, or restarted on the
    /// same port when a changed setting needs it. The tier only rises (a node of an older
    /// generation does not shrink it back). Blocking.
    pub fn ensure(&self, instance: &str, db_cpus: u32) -> Result<String, DbError> {
        let _one_at_a_time = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return Err(DbError::Closed);
        }
        let mut db_cpus = db_cpus.max(1);
        let mut keep_port = None;
        let exited = match self.running().get_mut(instance) {
            Some(r) => match r.server.try_wait() {
                Ok(None) => {
                    db_cpus = db_cpus.max(r.db_cpus);
                    let settings = postgres_tier(db_cpus);
                    match apply_needed(&r.settings, &settings) {
                        None => return Ok(url(&r.password, r.port)),
                        Some(Apply::Reload) => {
                            let data = self.data_dir(instance);
                            tier::write(&data, db_cpus, &settings, self.placement.user)?;
                            server::reload(&r.server)?;
                            tracing::info!(instance, db_cpus, "database settings reloaded");
                            (r.db_cpus, r.settings) = (db_cpus, settings);
                            return Ok(url(&r.password, r.port));
                        }
                        Some(Apply::Restart) => {
                            tracing::info!(
                                instance,
                                from = r.db_cpus,
                                to = db_cpus,
                                "database restarts for its new CPU tier"
                            );
                            keep_port = Some(r.port);
                            None
                        }
                    }
                }
                Ok(Some(status)) => Some(status.to_string()),
                Err(e) => Some(e.to_string()),
            },
            None => None,
        };
        if keep_port.is_some() {
            // Resized: stop it (fast shutdown) and start it again below on the same port.
            if let Some(mut r) = self.running().remove(instance) {
                server::stop(&mut r.server)?;
            }
        }
        if let Some(status) = exited {
            tracing::warn!(
                instance,
                status,
                "database server had exited; starting it again"
            );
            self.running().remove(instance);
        }
        let settings = postgres_tier(db_cpus);
        let data = self.data_dir(instance);
        let password = self.password(instance)?;
        if data.join("PG_VERSION").is_file() {
            server::stop_leftover(&data)?;
        } else {
            self.initdb(instance, &data, &password)?;
        }
        tier::write(&data, db_cpus, &settings, self.placement.user)?;
        // The port is free when chosen, but a node binding port 0 meanwhile can take it before
        // the server binds: then the start fails and another port is tried (bounded).
        let mut attempt = 1;
        let (port, child) = loop {
            // A restarted server keeps its port, so running nodes' URLs stay right.
            let port = match keep_port.take() {
                Some(p) => p,
                None => free_port()?,
            };
            let postgres = self.tools.program("postgres");
            match server::start(&self.launcher, postgres, self.placement.user, &data, port) {
                Ok(child) => break (port, child),
                Err(e) if attempt < START_ATTEMPTS => {
                    tracing::warn!(instance, port, attempt, error = %e, "database did not start; trying another port");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(
            instance,
            port,
            pid = child.id(),
            db_cpus,
            "database started"
        );
        let url = url(&password, port);
        self.running().insert(
            instance.to_string(),
            Running {
                port,
                password,
                server: child,
                db_cpus,
                settings,
            },
        );
        Ok(url)
    }

    fn password(&self, instance: &str) -> Result<String, DbError> {
        let path = self.password_file(instance);
        if let Ok(p) = std::fs::read_to_string(&path) {
            return Ok(p.trim().to_string());
        }
        let p = crate::runtime::random_secret();
        write_private(&path, &p, None)?;
        Ok(p)
    }

    fn initdb(&self, instance: &str, data: &Path, password: &str) -> Result<(), DbError> {
        if data.exists() {
            std::fs::remove_dir_all(data).map_err(io(data))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(data)
            .map_err(io(data))?;
        let user = self.placement.user;
        if let Some(u) = user {
            std::os::unix::fs::chown(data, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
                .map_err(io(data))?;
        }
        // initdb reads the superuser password from a file the server user can read; it
        // must not be inside the (still empty) data directory.
        let pwfile = self
            .placement
            .data_root
            .join(format!("{instance}.initdb-pw"));
        write_private(&pwfile, password, user)?;
        let result = run(server::command_as(
            self.tools.program("initdb"),
            user,
            &self.placement.data_root,
        )
        .arg("-D")
        .arg(data)
        .args(["-U", "kanmon", "--auth=scram-sha-256", "--encoding=UTF8"])
        .arg(format!("--pwfile={}", pwfile.display())));
        if let Err(e) = std::fs::remove_file(&pwfile) {
            tracing::warn!(file = %pwfile.display(), error = %e, "removing initdb's password file");
        }
        result?;
        // Loopback TCP only, no Unix socket (no shared /var/run directory needed).
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io(&conf))?;
        text.push_str(
            "\n# kanmon up\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n",
        );
        std::fs::write(&conf, text).map_err(io(&conf))?;
        tracing::info!(instance, dir = %data.display(), "database initialised");
        Ok(())
    }

    /// The `DATABASE_URL` of `instance`'s server, if it runs.
    pub fn url(&self, instance: &str) -> Option<String> {
        self.running()
            .get(instance)
            .map(|r| url(&r.password, r.port))
    }

    /// The servers running now.
    pub(crate) fn servers(&self) -> Vec<ServerInfo> {
        self.running()
            .iter()
            .map(|(instance, r)| ServerInfo {
                instance: instance.clone(),
                port: r.port,
                password: r.password.clone(),
                pid: r.server.id(),
            })
            .collect()
    }

    /// Stops the server of `instance` (fast shutdown) if it runs. Blocking.
    pub fn stop(&self, instance: &str) -> Result<(), DbError> {
        let Some(mut r) = self.running().remove(instance) else {
            return Ok(());
        };
        server::stop(&mut r.server)?;
        tracing::info!(instance, "database stopped");
        Ok(())
    }

    /// Stops the server and removes the data (the deployment was deleted). Blocking.
    pub fn destroy(&self, instance: &str) -> Result<(), DbError> {
        self.stop(instance)?;
        let data = self.data_dir(instance);
        if data.exists() {
            server::stop_leftover(&data)?;
            std::fs::remove_dir_all(&data).map_err(io(&data))?;
        }
        let password = self.password_file(instance);
        if let Err(e) = std::fs::remove_file(&password) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(DbError::Io {
                    path: password,
                    source: e,
                });
            }
        }
        Ok(())
    }

    /// Stops every server this manager started, after any start in progress; none starts
    /// afterwards. Blocking.
    pub fn stop_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _after_starts = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = self.running().keys().cloned().collect();
        for name in names {
            if let Err(e) = self.stop(&name) {
                tracing::error!(instance = name, error = %e, "stopping database failed");
            }
        }
    }

    /// Dumps the database of `instance` (plain SQL, `pg_dump`) into `out`. Blocking.
    pub fn dump(&self, instance: &str, out: &Path) -> Result<(), DbError> {
        let (port, password) = self
            .running()
            .get(instance)
            .map(|r| (r.port, r.password.clone()))
            .ok_or_else(|| DbError::Command {
                command: "pg_dump".into(),
                detail: format!("the database of {instance} is not running"),
            })?;
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        run(Command::new(self.tools.program("pg_dump"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "kanmon"])
            .arg("-f")
            .arg(out)
            .arg("postgres")
            .env("PGPASSWORD", &password))?;
        Ok(())
    }
}

impl Drop for Databases {
    /// Servers die with their owner: the launcher thread's end would stop them anyway
    /// (SIGINT), this also waits for them.
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn url(password: &str, port: u16) -> String {
    format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}")
}

/// Creates `path` anew with mode 0600 (never readable by others, not even for a moment),
/// owned by `owner` when given, holding `text`.
fn write_private(
    path: &Path,
    text: &str,
    owner: Option<placement::ServerUser>,
) -> Result<(), DbError> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DbError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    if let Some(u) = owner {
        std::os::unix::fs::fchown(&f, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
            .map_err(io(path))?;
    }
    f.write_all(text.as_bytes()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_postgres_says_what_to_install() {
        let text = DbError::NotInstalled.to_string();
        assert!(text.contains("apt-get install postgresql"), "{text}");
        assert!(text.contains("--no-database"), "{text}");
    }

    #[test]
    fn database_url_is_loopback_with_password() {
        assert_eq!(
            url("pw", 5999),
            "postgres://kanmon:pw@127.0.0.1:5999/postgres"
        );
    }
}
