//! One PostgreSQL server per deployment (Debian's `postgresql` package): its own `initdb` data
//! directory under the state directory, its own loopback port, started with the deployment's
//! first node and stopped with `kanmon up` (or when the deployment is deleted).
//!
//! # Running as root
//! `initdb` and `postgres` refuse to run as root. When `kanmon up` runs as root, every
//! server-side command (`initdb`, `pg_ctl`) runs as the `postgres` OS user through
//! `runuser -u postgres --` (util-linux; the package creates that user), and the data
//! directory is created by root and then handed to that user (`chown -R postgres:postgres`,
//! mode 0700, as `initdb` requires). The user must be able to traverse the state directory's
//! parents; [`Databases::new`] checks this and says so when it cannot. Run as any other user,
//! the commands run as that user directly. Clients (`pg_dump`, the nodes) connect over TCP to
//! 127.0.0.1 with a password generated per deployment (scram-sha-256), so they need no OS user.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
};

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The PostgreSQL server programs are not installed.
    #[error(
        "PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH): \
         install it with `apt-get install postgresql` (Debian/Ubuntu), or run `kanmon up --no-database`"
    )]
    NotInstalled,
    /// Running as root, but the `postgres` user cannot be used.
    #[error("running as root: {0}")]
    RootSetup(String),
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

/// Where the PostgreSQL programs are.
#[derive(Debug, Clone)]
pub struct PgTools {
    /// Directory holding `initdb`, `pg_ctl`, `pg_dump` (empty: found on PATH).
    pub bin: PathBuf,
}

impl PgTools {
    /// The newest `/usr/lib/postgresql/<major>/bin` holding `initdb`, else `initdb` on PATH.
    pub fn find() -> Result<Self, DbError> {
        let mut best: Option<(u32, PathBuf)> = None;
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            for e in entries.flatten() {
                let major = e.file_name().to_string_lossy().parse::<u32>().ok();
                let bin = e.path().join("bin");
                if let Some(major) = major {
                    if bin.join("initdb").is_file() && best.as_ref().is_none_or(|b| b.0 < major) {
                        best = Some((major, bin));
                    }
                }
            }
        }
        if let Some((_, bin)) = best {
            return Ok(Self { bin });
        }
        let on_path = std::env::var_os("PATH").is_some_and(|p| {
            std::env::split_paths(&p)
                .any(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        });
        if on_path {
            Ok(Self {
                bin: PathBuf::new(),
            })
        } else {
            Err(DbError::NotInstalled)
        }
    }

    fn program(&self, name: &str) -> PathBuf {
        if self.bin.as_os_str().is_empty() {
            PathBuf::from(name)
        } else {
            self.bin.join(name)
        }
    }
}

/// A running (or adopted) database of one deployment.
#[derive(Debug, Clone)]
struct Running {
    port: u16,
    password: String,
}

/// The databases of all deployments under one state directory.
#[derive(Debug)]
pub struct Databases {
    tools: PgTools,
    dir: PathBuf,
    as_postgres: bool,
    running: Mutex<HashMap<String, Running>>,
    /// Serialises [`Databases::ensure`]: two nodes of a resumed deployment start together.
    starting: Mutex<()>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The program and arguments of `cmd`, never its environment (a `Command`'s `Debug` prints
/// the variables it sets, `PGPASSWORD` among them).
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(cmd: &mut Command) -> Result<Output, DbError> {
    let command = describe(cmd);
    let out = cmd.output().map_err(|e| DbError::Command {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(DbError::Command { command, detail })
    }
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
    /// Databases under `dir` (created if missing). Fails when PostgreSQL is not installed, or
    /// when running as root and the `postgres` user cannot reach `dir`.
    pub fn new(dir: &Path) -> Result<Self, DbError> {
        let tools = PgTools::find()?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
        let as_postgres = is_root();
        if as_postgres {
            let probe = run(Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-x"])
                .arg(&dir));
            if let Err(e) = probe {
                return Err(DbError::RootSetup(format!(
                    "the `postgres` OS user cannot enter {} ({e}); choose a --dir it can reach",
                    dir.display()
                )));
            }
        }
        Ok(Self {
            tools,
            dir,
            as_postgres,
            running: Mutex::new(HashMap::new()),
            starting: Mutex::new(()),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A server-side command, as the `postgres` user when running as root.
    fn server_cmd(&self, program: &str) -> Command {
        let program = self.tools.program(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn data_dir(&self, instance: &str) -> PathBuf {
        self.dir.join(instance)
    }

    fn password_file(&self, instance: &str) -> PathBuf {
        self.dir.join(format!("{instance}.password"))
    }

    /// Creates the data directory (once), starts the server if it is not running, and returns
    /// the `postgres://` URL the deployment's nodes get as `DATABASE_URL`. Blocking.
    pub fn ensure(&self, instance: &str) -> Result<String, DbError> {
        let _one_at_a_time = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = self.running().get(instance).cloned() {
            if self.is_running(instance) {
                return Ok(url(&r));
            }
        }
        let data = self.data_dir(instance);
        let password = self.password(instance)?;
        if !data.join("PG_VERSION").is_file() {
            self.initdb(instance, &data, &password)?;
        }
        let log = data.join("server.log");
        if self.is_running(instance) {
            // Left running by a killed `kanmon up`: restart it on a port we know.
            self.stop(instance)?;
        }
        // The port is free when chosen, but a node binding port 0 meanwhile can take it before
        // the server binds: then the start fails and another port is tried (bounded).
        let mut attempt = 1;
        let port = loop {
            let port = free_port()?;
            match self.start_server(&data, &log, port) {
                Ok(()) => break port,
                Err(e) if attempt < START_ATTEMPTS => {
                    tracing::warn!(instance, port, attempt, error = %e, "database did not start; trying another port");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let r = Running { port, password };
        tracing::info!(instance, port, "database started");
        self.running().insert(instance.to_string(), r.clone());
        Ok(url(&r))
    }

    /// `pg_ctl start` on `port`, waiting until it accepts connections.
    fn start_server(&self, data: &Path, log: &Path, port: u16) -> Result<(), DbError> {
        let opts = format!("-p {port}");
        // Own process group, so a Ctrl-C at the terminal does not stop the server before
        // `kanmon up` stops it itself.
        run(
            std::os::unix::process::CommandExt::process_group(&mut self.server_cmd("pg_ctl"), 0)
                .arg("start")
                .arg("-w")
                .args(["-t", "60"])
                .arg("-D")
                .arg(data)
                .arg("-l")
                .arg(log)
                .args(["-o", &opts]),
        )
        .map(|_| ())
    }

    fn password(&self, instance: &str) -> Result<String, DbError> {
        let path = self.password_file(instance);
        if let Ok(p) = std::fs::read_to_string(&path) {
            return Ok(p.trim().to_string());
        }
        let p = crate::runtime::random_secret();
        write_private(&path, &p)?;
        Ok(p)
    }

    fn initdb(&self, instance: &str, data: &Path, password: &str) -> Result<(), DbError> {
        if data.exists() {
            std::fs::remove_dir_all(data).map_err(io(data))?;
        }
        std::fs::create_dir_all(data).map_err(io(data))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
                .map_err(io(data))?;
        }
        // initdb reads the superuser password from a file the server user can read; it
        // must not be inside the (still empty) data directory.
        let pwfile = self.dir.join(format!("{instance}.initdb-pw"));
        write_private(&pwfile, password)?;
        if self.as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(data)
                .arg(&pwfile))?;
        }
        let result = run(self
            .server_cmd("initdb")
            .arg("-D")
            .arg(data)
            .args(["-U", "kanmon", "--auth=scram-sha-256", "--encoding=UTF8"])
            .arg(format!("--pwfile={}", pwfile.display())));
        let _ = std::fs::remove_file(&pwfile);
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

    fn is_running(&self, instance: &str) -> bool {
        let data = self.data_dir(instance);
        data.join("PG_VERSION").is_file()
            && self
                .server_cmd("pg_ctl")
                .arg("status")
                .arg("-D")
                .arg(&data)
                .output()
                .is_ok_and(|o| o.status.success())
    }

    /// Stops the server of `instance` (fast shutdown) if it runs. Blocking.
    pub fn stop(&self, instance: &str) -> Result<(), DbError> {
        self.running().remove(instance);
        if !self.is_running(instance) {
            return Ok(());
        }
        run(self
            .server_cmd("pg_ctl")
            .arg("stop")
            .args(["-m", "fast", "-w", "-t", "60"])
            .arg("-D")
            .arg(self.data_dir(instance)))?;
        tracing::info!(instance, "database stopped");
        Ok(())
    }

    /// Stops the server and removes the data (the deployment was deleted). Blocking.
    pub fn destroy(&self, instance: &str) -> Result<(), DbError> {
        self.stop(instance)?;
        let data = self.data_dir(instance);
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(io(&data))?;
        }
        let _ = std::fs::remove_file(self.password_file(instance));
        Ok(())
    }

    /// Stops every server this manager started. Blocking.
    pub fn stop_all(&self) {
        let names: Vec<String> = self.running().keys().cloned().collect();
        for name in names {
            if let Err(e) = self.stop(&name) {
                tracing::error!(instance = name, error = %e, "stopping database failed");
            }
        }
    }

    /// Dumps the database of `instance` (plain SQL, `pg_dump`) into `out`. Blocking.
    pub fn dump(&self, instance: &str, out: &Path) -> Result<(), DbError> {
        let r = self
            .running()
            .get(instance)
            .cloned()
            .ok_or_else(|| DbError::Command {
                command: "pg_dump".into(),
                detail: format!("the database of {instance} is not running"),
            })?;
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        run(Command::new(self.tools.program("pg_dump"))
            .args(["-h", "127.0.0.1", "-p", &r.port.to_string(), "-U", "kanmon"])
            .arg("-f")
            .arg(out)
            .arg("postgres")
            .env("PGPASSWORD", &r.password))?;
        Ok(())
    }
}

fn url(r: &Running) -> String {
    format!(
        "postgres://kanmon:{}@127.0.0.1:{}/postgres",
        r.password, r.port
    )
}

fn write_private(path: &Path, text: &str) -> Result<(), DbError> {
    crate::private::write_file(path, text.as_bytes()).map_err(io(path))
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

    /// A failing command's error names the program and its arguments, never the environment
    /// it was given.
    #[test]
    fn failed_commands_do_not_show_their_environment() {
        let err = run(Command::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .env("PGPASSWORD", "pw-0123456789"))
        .unwrap_err()
        .to_string();
        assert!(!err.contains("pw-0123456789"), "{err}");
        assert!(err.contains("sh -c") && err.contains("oops"), "{err}");
    }

    #[test]
    fn database_url_is_loopback_with_password() {
        let r = Running {
            port: 5999,
            password: "pw".into(),
        };
        assert_eq!(url(&r), "postgres://kanmon:pw@127.0.0.1:5999/postgres");
    }
}
