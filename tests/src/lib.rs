//! Harness for kanmon's end-to-end tests (`tests/*.rs`): the `kanmon up` wiring on loopback —
//! the control plane (API, store, local process driver) and the embedded proxy sharing one
//! health table through [`ProxyPublisher`] — plus TLS/WebSocket clients and a [`Timeline`]
//! of every node-state change the control plane published.
//!
//! Nodes are `kanmon-bench node` processes: build them first (`cargo build --workspace --bins`,
//! which `scripts/test.sh` does); [`node_program`] finds the binary next to the test's target
//! directory.

pub mod clients;
pub mod k8s;
pub mod k8s_cluster;
pub mod prometheus;
pub mod serve;
mod timeline;
pub mod up_process;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use kanmon_control::{
    cli::{Client, ClientError},
    driver::NodeStatePublisher,
    runtime::Settings,
    up::{issue_certs, proxy_config, ControlPlane, Databases, ProxyPublisher, UpConfig},
};
use kanmon_proxy::{
    server::{ShutdownSignal, ShutdownWatcher},
    Proxy, RunOptions,
};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use serde_json::{json, Value};
use tokio::{net::TcpStream, sync::oneshot};
use tokio_rustls::{client::TlsStream, TlsConnector};

pub use timeline::{Recording, Timeline};

/// A WebSocket through the proxy.
pub type Ws = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// A binary of this workspace build (`target/<profile>/<name>`, next to the test executable's
/// `deps/` directory). Panics with what to build when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The demo node, `kanmon-bench` (see [`workspace_bin`]).
pub fn node_program() -> PathBuf {
    workspace_bin("kanmon-bench")
}

/// A free loopback port for a process that binds by number, chosen where other tests'
/// port-0 binds never go (see `kanmon_bench::ports`).
pub fn free_port() -> SocketAddr {
    kanmon_bench::ports::free_loopback_port()
}

/// How to start a [`Platform`].
#[derive(Debug, Clone)]
pub struct PlatformOpts {
    /// Node program (default: [`node_program`]).
    pub node_program: PathBuf,
    /// Run a PostgreSQL per deployment.
    pub database: bool,
    /// The platform's cap on a deployment's shutdown grace (short in tests); a drain waits
    /// the deployment's own `shutdown_grace_sec` (see [`Platform::set_shutdown_grace`]).
    pub grace: Duration,
    /// First CrashLoopBackOff delay.
    pub backoff_base: Duration,
}

impl Default for PlatformOpts {
    fn default() -> Self {
        Self {
            node_program: node_program(),
            database: false,
            grace: Duration::from_secs(3),
            backoff_base: Duration::from_millis(300),
        }
    }
}

/// Ends the proxy when the sender is fired or dropped.
struct StopOn(Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait::async_trait]
impl ShutdownWatcher for StopOn {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().ok().and_then(|mut r| r.take());
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// The local platform of `kanmon up`, on loopback with free ports and a temporary state
/// directory, and the demo production deployment (`demo`, two nodes).
pub struct Platform {
    /// State directory.
    pub dir: tempfile::TempDir,
    /// The control plane.
    pub control: Option<ControlPlane>,
    /// API client with the admin token.
    pub api: Client,
    /// The proxy's TLS address.
    pub tls_addr: SocketAddr,
    /// `demo.us-east1.kanmon.test`.
    pub hostname: String,
    /// Every node-state change published to the proxy.
    pub timeline: Arc<Timeline>,
    tls: Arc<ClientConfig>,
    /// The demo's server key, once [`Platform::ws`] asked for it.
    server_key: std::sync::OnceLock<String>,
    _proxy_thread: std::thread::JoinHandle<()>,
}

/// Stop senders of the test proxies, never dropped.
static PROXY_STOPPERS: Mutex<Vec<oneshot::Sender<()>>> = Mutex::new(Vec::new());

/// Keeps an embedded proxy running for the rest of the test process: when pingora shuts down,
/// kanmon-proxy's shutdown watcher may end the whole process with status 0, which would end
/// the test binary as if it had passed. The proxy thread dies with the test process.
fn keep_proxy_running(stop: oneshot::Sender<()>) {
    PROXY_STOPPERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(stop);
}

impl Platform {
    /// Starts the platform and waits (bounded) until the demo deployment's first deploy has
    /// completed. Call from a multi-thread tokio runtime.
    pub async fn start(opts: PlatformOpts) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.timings.grace = opts.grace;
        settings.timings.backoff_base = opts.backoff_base;
        settings.timings.backoff_cap = opts.backoff_base * 4;
        settings.timings.health_timeout = Duration::from_secs(20);
        settings.health_poll = Duration::from_millis(50);
        settings.monitor_interval = Duration::from_millis(200);
        let ca = issue_certs(&dir.path().join("certs"), &settings).expect("local CA");
        let (tls_addr, admin_addr) = (free_port(), free_port());
        let cfg = proxy_config(dir.path(), tls_addr, admin_addr, &settings);

        let (pub_tx, pub_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        // pingora runs its own runtimes: on a plain thread, never inside ours.
        let proxy_thread = std::thread::spawn(move || {
            let table = Arc::new(kanmon_router::HealthTable::new());
            let proxy = Proxy::build(
                &cfg,
                RunOptions {
                    upgrade: false,
                    table: Some(table),
                },
            )
            .expect("proxy builds");
            let _ = pub_tx.send(proxy.publisher());
            proxy.run_with(Box::new(StopOn(Mutex::new(Some(stop_rx)))));
        });
        let publisher = tokio::task::block_in_place(|| pub_rx.recv()).expect("proxy publisher");
        keep_proxy_running(stop_tx);
        let timeline = Arc::new(Timeline::default());
        let recording: Arc<dyn NodeStatePublisher> = Arc::new(Recording::new(
            Arc::new(ProxyPublisher::new(publisher)),
            timeline.clone(),
        ));

        let mut up = UpConfig::new(dir.path(), &opts.node_program);
        up.api_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        up.metrics_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        up.settings = settings;
        let databases = opts.database.then(|| {
            Arc::new(Databases::new(&dir.path().join("postgres")).expect("PostgreSQL usable"))
        });
        let control = ControlPlane::start(up, databases, recording)
            .await
            .expect("control plane starts");
        let api = Client::new(
            &format!("http://{}", control.api_addr),
            control.token.clone(),
        );
        let platform = Self {
            tls: client_config(&ca),
            dir,
            control: Some(control),
            api,
            tls_addr,
            hostname: "demo.us-east1.kanmon.test".into(),
            timeline,
            server_key: std::sync::OnceLock::new(),
            _proxy_thread: proxy_thread,
        };
        platform.wait_proxy().await;
        // Creating a deployment queues its certificate operation ahead of its first deploy
        // (when a certificate keeper runs): the deploy is then operation 2.
        let mut first = platform.wait_op(1, Duration::from_secs(60)).await;
        if first.to_string().contains("\"certificate\"") {
            first = platform.wait_op(2, Duration::from_secs(60)).await;
        }
        assert_eq!(first["status"], "completed", "first deploy: {first}");
        platform.wait_certificate().await;
        platform
    }

    /// Waits (bounded) until the proxy serves the demo's own certificate: the certificate
    /// keeper issues it within a pass of the deployment's creation, which a fast first deploy
    /// can beat.
    async fn wait_certificate(&self) {
        for _ in 0..400 {
            if self.tls().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy never served a certificate for {}", self.hostname);
    }

    async fn wait_proxy(&self) {
        for _ in 0..200 {
            if TcpStream::connect(self.tls_addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy never listened on {}", self.tls_addr);
    }

    /// Stops nodes and databases. The proxy keeps running until the test process ends (see
    /// [`keep_proxy_running`]).
    pub async fn stop(mut self) {
        if let Some(cp) = self.control.take() {
            cp.shutdown().await;
        }
    }

    /// A TLS connection to the proxy for the demo hostname.
    pub async fn tls(&self) -> std::io::Result<TlsStream<TcpStream>> {
        tls_connect(self.tls_addr, &self.hostname, self.tls.clone()).await
    }

    /// Where WebSocket clients of the demo deployment connect, with its server key (read once).
    pub async fn ws_target(&self) -> clients::WsTarget {
        let key = match self.server_key.get() {
            Some(k) => k.clone(),
            None => {
                let k = server_key(&self.api, "demo").await;
                self.server_key.get_or_init(|| k).clone()
            }
        };
        clients::WsTarget {
            addr: self.tls_addr,
            host: self.hostname.clone(),
            tls: self.tls.clone(),
            server_key: Some(key),
        }
    }

    /// A WebSocket to the demo deployment's `/ws` with its server key.
    pub async fn ws(&self) -> Result<Ws, String> {
        self.ws_target().await.ws().await
    }

    /// `GET path` through the proxy (HTTP/1.1, connection close): status and body.
    pub async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let tls = self.tls().await?;
        http_get(tls, &self.hostname, path).await
    }

    /// Queues an operation on `demo` through the API; returns its id.
    pub async fn submit(&self, body: Value) -> Result<u64, ClientError> {
        let op = self
            .api
            .post("/v1/deployments/demo/operations", &body)
            .await?;
        Ok(op["id"].as_u64().expect("operation id"))
    }

    /// Sets the demo's `shutdown_grace_sec` (Nakama's config key; unset, a drain does not
    /// wait at all, as Nakama's default of 0 s) and waits for the rolling operation it is.
    pub async fn set_shutdown_grace(&self, secs: u64) {
        let id = self
            .submit(json!({ "kind": "set-config",
                            "config": { "shutdown_grace_sec": secs.to_string() } }))
            .await
            .expect("set-config queued");
        let op = self.wait_op(id, Duration::from_secs(60)).await;
        assert_eq!(op["status"], "completed", "set shutdown_grace_sec: {op}");
    }

    /// Polls an operation until it finishes or `limit` passes; returns its last state.
    pub async fn wait_op(&self, id: u64, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let op = self
                .api
                .get(&format!("/v1/operations/{id}"))
                .await
                .unwrap_or_else(|e| json!({ "error": e.to_string() }));
            let done = matches!(op["status"].as_str(), Some("completed" | "failed"));
            if done || tokio::time::Instant::now() >= deadline {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The demo deployment as the API shows it.
    pub async fn deployment(&self) -> Value {
        self.api
            .get("/v1/deployments/demo")
            .await
            .expect("deployment")
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // The nodes are killed when the driver is dropped with the test's runtime (kill on
        // drop). Stop the database servers here too when a test failed before `stop`, and
        // remove the data root they were given outside the state directory (as root).
        if let Some(dbs) = self.control.as_ref().and_then(|c| c.databases()) {
            dbs.stop_all();
        }
        let root = kanmon_control::up::postgres::data_root(&self.dir.path().join("postgres"));
        if !root.starts_with(self.dir.path()) && root.is_dir() {
            if let Err(e) = std::fs::remove_dir_all(&root) {
                eprintln!("removing {}: {e}", root.display());
            }
        }
    }
}

/// A WebSocket to `wss://{host}/ws` over `tls`, presenting `server_key` as Nakama clients do
/// (HTTP Basic, the key as username): nodes started by kanmon refuse `/ws` without it.
pub async fn ws_with_key(
    tls: TlsStream<TcpStream>,
    host: &str,
    server_key: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http};
    let mut req = format!("wss://{host}/ws").into_client_request()?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{server_key}:"));
    let value =
        format!("Basic {basic}")
            .parse()
            .map_err(|e: http::header::InvalidHeaderValue| {
                tokio_tungstenite::tungstenite::Error::HttpFormat(e.into())
            })?;
    req.headers_mut().insert(http::header::AUTHORIZATION, value);
    let (ws, _) = tokio_tungstenite::client_async(req, tls).await?;
    Ok(ws)
}

/// The server key of `instance` (the client needs the `secrets` permission).
pub async fn server_key(api: &Client, instance: &str) -> String {
    let keys = api
        .get(&format!("/v1/deployments/{instance}/keys"))
        .await
        .expect("keys");
    keys["server_key"].as_str().expect("server_key").to_string()
}

/// One HTTP/1.1 `GET` (connection close) over an established stream: status and body.
pub async fn http_get<S>(mut s: S, host: &str, path: &str) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A TLS connection to `addr` for `host`, trusting `tls`'s roots.
pub async fn tls_connect(
    addr: SocketAddr,
    host: &str,
    tls: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    TlsConnector::from(tls).connect(name, tcp).await
}

/// A rustls client config trusting only the CA certificate at `ca` (ALPN `http/1.1`).
pub fn client_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(ca).expect("CA certificate");
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}
