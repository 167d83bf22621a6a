//! `kanmon up`: the whole local platform in one process — the control plane (API, SQLite store
//! in a state directory, local process driver, one PostgreSQL per deployment) and the edge
//! proxy, sharing the proxy's node health table so a draining mark reaches the router at once.
//!
//! The binary wires it as: [`postgres::Databases::new`] (fails with what to install),
//! [`issue_certs`] (the local CA) + [`proxy_config`] → `kanmon_proxy::Proxy::build` with an external table,
//! then [`ControlPlane::start`] on its own tokio runtime with a [`ProxyPublisher`] over
//! `Proxy::publisher()`, and the proxy on the main thread until a signal has stopped the
//! control plane ([`ControlPlane::shutdown`]: nodes, then databases). Tests use the same parts.

pub mod driver;
pub mod postgres;
pub mod progress;
pub mod publisher;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use kanmon_proxy::{devcerts::LocalCa, ProxyConfig};
use kanmon_router::{InstanceName, Zone};

pub use crate::driver::ProxyPublisher;
pub use driver::DatabaseDriver;
pub use postgres::{DatabaseStats, Databases, DbError, StatsConfig};

use crate::{
    api,
    bootstrap::{bootstrap_admin, BootstrapError},
    certs,
    domain::{CreateDeployment, DeploymentType},
    driver::{LocalDriver, LocalDriverConfig, NodeStatePublisher, ProcessDriver},
    metrics,
    runtime::{DatabaseExporter, Runtime, RuntimeError, Settings},
    store::{Store, StoreError},
};

/// Why `kanmon up` could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// State directory, token file or listener.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Creating the admin token.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// Starting the runtime or creating the demo deployment.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Certificates.
    #[error("local CA: {0}")]
    Certs(#[from] kanmon_proxy::devcerts::DevCertError),
    /// The certificate keeper.
    #[error("certificates: {0}")]
    Keeper(#[from] certs::CertError),
    /// The API's TLS configuration.
    #[error("API TLS: {0}")]
    Tls(#[from] api::tls::TlsError),
    /// A bad demo deployment setting.
    #[error("demo deployment: {0}")]
    Demo(String),
}

/// The demo deployment `kanmon up` creates when it does not exist yet.
#[derive(Debug, Clone)]
pub struct DemoDeployment {
    /// Instance name.
    pub instance: String,
    /// Zone.
    pub zone: String,
    /// Node CPUs (production: one node per CPU).
    pub node_cpus: u32,
}

impl Default for DemoDeployment {
    fn default() -> Self {
        Self {
            instance: "demo".into(),
            zone: "us-east1".into(),
            node_cpus: 2,
        }
    }
}

/// How the control plane of `kanmon up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// State directory: `kanmon.db` (+ `.admin-token`), `logs/`, `exports/`, `postgres/`, `certs/`.
    pub dir: PathBuf,
    /// Where the API listens (loopback).
    pub api_listen: SocketAddr,
    /// Where the control plane's `/metrics` is served (loopback).
    pub metrics_listen: SocketAddr,
    /// How nodes are started (its `log_dir` is normally `{dir}/logs`).
    pub node: LocalDriverConfig,
    /// Lifecycle settings.
    pub settings: Settings,
    /// Created on first start (`None`: none).
    pub demo: Option<DemoDeployment>,
    /// Serve the API over TLS with a `localhost` certificate from the local CA in
    /// `{dir}/certs` (clients pass `--ca {dir}/certs/ca.crt`).
    pub api_tls: bool,
    /// Where deployment certificates come from (an ACME account is kept in the store).
    pub certs: certs::SourceConfig,
    /// How the databases' load is sampled for the metrics.
    pub database_stats: StatsConfig,
}

impl UpConfig {
    /// Defaults for state directory `dir` and node program `program` (the demo node's
    /// command line).
    pub fn new(dir: &Path, program: &Path) -> Self {
        let node = LocalDriverConfig::demo_node(program, dir.join("logs"));
        let mut settings = Settings::default();
        settings.timings.grace = Duration::from_secs(10);
        Self {
            dir: dir.to_path_buf(),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            node,
            settings,
            demo: Some(DemoDeployment::default()),
            api_tls: false,
            certs: certs::SourceConfig::LocalCa,
            database_stats: StatsConfig::default(),
        }
    }
}

/// Makes the local CA in `cert_dir` (created there on first use, ECDSA P-256, reused while it
/// is fit; see [`kanmon_proxy::devcerts`]) and returns its certificate's path (what clients
/// trust). Deployments get their certificates from the [`CertKeeper`] once they exist; the
/// zone wildcards earlier versions issued are removed, so no two tenants share a certificate.
pub fn issue_certs(cert_dir: &Path, settings: &Settings) -> Result<PathBuf, UpError> {
    // Owner-only before any key is written: no other user can open a key file in the moment
    // between its creation and its chmod.
    crate::private::create_dir(cert_dir)
        .map_err(io_err(format!("creating {}", cert_dir.display())))?;
    let ca = LocalCa::open_or_create(cert_dir, &settings.base_domain)?;
    for (zone, _) in &settings.zones {
        let stem = format!("_.{}.{}", zone.as_str(), settings.base_domain);
        for ext in ["crt", "key"] {
            crate::private::remove(&cert_dir.join(format!("{stem}.{ext}")));
        }
    }
    Ok(ca.cert_path)
}

/// A TLS configuration for the API with a `localhost` certificate signed by the local CA in
/// `cert_dir`, kept in `{cert_dir}/api/` (not among the proxy's SNI certificates).
pub fn api_tls_config(
    cert_dir: &Path,
    base_domain: &str,
) -> Result<Arc<rustls::ServerConfig>, UpError> {
    let dir = cert_dir.join("api");
    crate::private::create_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let ca = LocalCa::open_or_create(cert_dir, base_domain)?;
    let cert = ca.issue(&dir, "localhost")?;
    Ok(api::tls::server_config(&cert, &dir.join("localhost.key"))?)
}

/// The embedded proxy's configuration: `tls`/`admin` listeners, certificates in `cert_dir`,
/// the upgrade socket in the state directory.
pub fn proxy_config(
    dir: &Path,
    tls: SocketAddr,
    admin: SocketAddr,
    settings: &Settings,
) -> ProxyConfig {
    let mut cfg = ProxyConfig::default();
    cfg.listen.tls = tls;
    cfg.listen.admin = admin;
    cfg.tls.cert_dir = dir.join("certs");
    cfg.routing.base_domain = settings.base_domain.clone();
    // One console rule for the edge and the control plane (names, certificates).
    cfg.routing.console_label = settings.console.pattern();
    cfg.shutdown.grace_period = Duration::from_secs(1);
    // A directory of its own, created 0700 by the proxy whatever the umask left on `dir`.
    cfg.shutdown.upgrade_sock = dir.join("run").join("upgrade.sock");
    cfg.server.threads = 2;
    cfg
}

struct Dumper {
    databases: Arc<Databases>,
    dir: PathBuf,
}

impl Dumper {
    /// An exporter into `dir`. Dumps left by an earlier run are deleted: their download links
    /// died with that process, so nothing can fetch them any more.
    fn new(databases: Arc<Databases>, dir: PathBuf) -> Self {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "sql") {
                    crate::private::remove(&e.path());
                }
            }
        }
        Self { databases, dir }
    }
}

impl DatabaseExporter for Dumper {
    fn export(&self, instance: &str) -> Result<PathBuf, String> {
        let stamp = crate::runtime::now().0;
        let path = self.dir.join(format!("{instance}-{stamp}.sql"));
        // Created 0600 in a 0700 directory before pg_dump writes into it (pg_dump would create
        // it with the umask's mode).
        crate::private::create_dir(&self.dir)
            .and_then(|()| crate::private::create_file(&path).map(drop))
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        if let Err(e) = self.databases.dump(instance, &path) {
            crate::private::remove(&path);
            return Err(e.to_string());
        }
        Ok(path)
    }
}

/// A running control plane of `kanmon up`.
#[derive(Debug)]
pub struct ControlPlane {
    /// The runtime.
    pub runtime: Runtime,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the control plane's `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// The admin token (read from the token file on later starts).
    pub token: String,
    /// The admin token file.
    pub token_file: PathBuf,
    local: Arc<LocalDriver>,
    databases: Option<Arc<Databases>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpError {
    let what = what.into();
    move |source| UpError::Io { what, source }
}

impl ControlPlane {
    /// Opens the store in `cfg.dir`, starts the runtime (resuming recorded deployments: their
    /// nodes and databases are started again), the API and, on first start, the demo
    /// deployment. Node states go to `publisher`. Must run inside a tokio runtime.
    pub async fn start(
        cfg: UpConfig,
        databases: Option<Arc<Databases>>,
        publisher: Arc<dyn NodeStatePublisher>,
    ) -> Result<Self, UpError> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(io_err(format!("creating {}", cfg.dir.display())))?;
        let db = cfg.dir.join("kanmon.db");
        let store = Arc::new(Store::open(&db)?);
        let token_file = cfg.dir.join("kanmon.db.admin-token");
        let token = match bootstrap_admin(&store, &token_file)? {
            Some(t) => t,
            None => std::fs::read_to_string(&token_file)
                .map_err(io_err(format!("reading {}", token_file.display())))?
                .trim()
                .to_string(),
        };
        let tls = if cfg.api_tls {
            Some(api_tls_config(
                &cfg.dir.join("certs"),
                &cfg.settings.base_domain,
            )?)
        } else {
            None
        };
        let mut node = cfg.node.clone();
        node.build_images = cfg.settings.builds.as_ref().map(|b| b.dir.clone());
        let local = Arc::new(LocalDriver::new(node));
        let driver = Arc::new(ProcessDriver::new(Arc::new(DatabaseDriver::new(
            local.clone(),
            databases.clone(),
        ))));
        let publisher: Arc<dyn NodeStatePublisher> = match &databases {
            Some(dbs) => Arc::new(publisher::DatabaseCleanup {
                inner: publisher,
                databases: dbs.clone(),
            }),
            None => publisher,
        };
        let settings = Settings {
            node_logs: Some(cfg.node.log_dir.clone()),
            ..cfg.settings.clone()
        };
        let runtime = Runtime::start(store.clone(), settings, driver, publisher)?;
        tokio::spawn(crate::billing::run(runtime.clone()));
        if let Some(dbs) = &databases {
            runtime.set_exporter(Arc::new(Dumper::new(dbs.clone(), cfg.dir.join("exports"))));
        }
        let listener = tokio::net::TcpListener::bind(cfg.api_listen)
            .await
            .map_err(io_err(format!("binding the API on {}", cfg.api_listen)))?;
        let api_addr = listener
            .local_addr()
            .map_err(io_err("reading the API address"))?;
        let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics_listen)
            .await
            .map_err(io_err(format!("binding metrics on {}", cfg.metrics_listen)))?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(io_err("reading the metrics address"))?;
        runtime.set_listeners(vec![api_addr, metrics_addr]);
        tokio::spawn(crate::notify::run(runtime.clone()));
        let cert_metrics = metrics::certs::CertMetrics::new().map_err(RuntimeError::from)?;
        let keeper = certs::keeper(
            &cfg.certs,
            certs::SinkConfig::Dir,
            &cfg.dir.join("certs"),
            &cfg.settings.base_domain,
            store.clone(),
            &cfg.dir.join("acme-account.json"),
            cert_metrics.clone(),
        )
        .await?;
        let app = api::App::new(runtime.clone());
        let mut sources = metrics::MetricsSources::new(
            runtime.clone(),
            app.auth_failures.clone(),
            Some(local.clone()),
        )
        .with_certs(cert_metrics);
        let mut tasks = vec![keeper.spawn(runtime.clone(), certs::PASS)];
        if let Some(dbs) = &databases {
            let stats = DatabaseStats::new(dbs.clone(), cfg.database_stats.clone());
            sources = sources.with_databases(stats.clone());
            tasks.push(tokio::spawn(stats.run()));
        }
        let routes = metrics::count_requests(api::router_for(app), runtime.metrics().clone());
        tasks.extend([
            tokio::spawn(async move {
                let served = match tls {
                    Some(config) => match api::tls::TlsListener::new(listener, config) {
                        Ok(tls) => axum::serve(tls, routes).await,
                        Err(e) => Err(e),
                    },
                    None => axum::serve(listener, routes).await,
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "API server stopped");
                }
            }),
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(metrics_listener, sources).await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            }),
        ]);
        if let Some(demo) = &cfg.demo {
            if runtime.deployment(&demo.instance).is_err() {
                create_demo(&runtime, demo)?;
            }
        }
        Ok(Self {
            runtime,
            api_addr,
            metrics_addr,
            token,
            token_file,
            local,
            databases,
            tasks,
        })
    }

    /// The local process driver of the nodes (for their CPU limits, in tests and tools).
    pub fn local(&self) -> &Arc<LocalDriver> {
        &self.local
    }

    /// The databases, when the platform runs them.
    pub fn databases(&self) -> Option<&Arc<Databases>> {
        self.databases.as_ref()
    }

    /// Prints a line to stdout whenever an operation or node changes, until shutdown.
    pub fn spawn_progress(&mut self) {
        self.tasks.push(tokio::spawn(progress::print_progress(
            self.runtime.clone(),
            Duration::from_millis(100),
        )));
    }

    /// Stops every node (SIGTERM, then kill after the grace), then every database, then the
    /// API. Deployments stay recorded: the next start resumes them.
    pub async fn shutdown(self) {
        self.local.shutdown().await;
        if let Some(dbs) = self.databases.clone() {
            if let Err(e) = tokio::task::spawn_blocking(move || dbs.stop_all()).await {
                tracing::error!(error = %e, "stopping databases failed");
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn create_demo(rt: &Runtime, demo: &DemoDeployment) -> Result<(), UpError> {
    let bad = |e: &dyn std::fmt::Display| UpError::Demo(e.to_string());
    let version = rt
        .settings()
        .catalog
        .latest()
        .cloned()
        .ok_or_else(|| UpError::Demo("the version catalog is empty".into()))?;
    let req = CreateDeployment {
        org: "local".into(),
        title: "demo".into(),
        instance: InstanceName::parse(&demo.instance).map_err(|e| bad(&e))?,
        zone: Zone::parse(&demo.zone).map_err(|e| bad(&e))?,
        kind: DeploymentType::Production,
        version,
        node_cpus: demo.node_cpus,
        db_cpus: 1,
        delete_protection: None,
    };
    rt.create(req, "admin")?;
    Ok(())
}
