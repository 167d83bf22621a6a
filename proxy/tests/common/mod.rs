//! Harness for the proxy's integration tests: a real `kanmon-proxy` process on loopback with
//! certificates from a test CA, in-process demo nodes, and real clients (rustls, hyper,
//! tokio-tungstenite, h2).
#![allow(dead_code, unreachable_pub)]

pub mod lenient_node;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kanmon_proxy::devcerts::LocalCa;
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_tungstenite::WebSocketStream;

pub const BASE: &str = "kanmon.test";
pub const ALPHA: &str = "alpha.us-east1.kanmon.test";
pub const BETA: &str = "beta.us-east1.kanmon.test";
pub const ALPHA_CONSOLE: &str = "alpha-console.us-east1.kanmon.test";
pub const BETA_CONSOLE: &str = "beta-console.us-east1.kanmon.test";

pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// A free loopback port (bound then released; the OS does not hand it out again at once).
/// A port for a proxy to bind by number, chosen where parallel tests' port-0 binds never go.
pub fn free_port() -> SocketAddr {
    kanmon_bench::ports::free_loopback_port()
}

pub struct TestProxy {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub tls_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    roots: Arc<RootCertStore>,
    pub ca: LocalCa,
}

/// Options of a test proxy.
pub struct Opts {
    pub nodes: String,
    /// Extra TOML appended to the config (tables must not repeat the ones written here).
    pub extra: String,
    pub grace: &'static str,
    pub read_timeout: &'static str,
    pub max_connections: u64,
    /// A whole `[discovery]` table replacing the default file discovery (Kubernetes tests).
    pub discovery: Option<String>,
    /// Extra lines for the `[tls]` table.
    pub tls_extra: String,
    /// Extra lines for the `[limits]` table.
    pub limits_extra: String,
    /// Extra lines for the `[listen]` table.
    pub listen_extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            nodes: String::new(),
            extra: String::new(),
            grace: "30s",
            read_timeout: "15s",
            max_connections: 20_000,
            discovery: None,
            tls_extra: String::new(),
            limits_extra: String::new(),
            listen_extra: String::new(),
        }
    }
}

/// The nodes file text for one deployment.
pub fn deployment(
    instance: &str,
    nodes: &[(&str, SocketAddr, Option<SocketAddr>, &str)],
) -> String {
    let mut s =
        format!("[[deployment]]\ninstance = \"{instance}\"\nzone = \"us-east1\"\nnodes = [\n");
    for (id, addr, grpc, state) in nodes {
        let grpc = grpc
            .map(|g| format!(", grpc = \"{g}\""))
            .unwrap_or_default();
        s.push_str(&format!(
            "  {{ id = \"{id}\", addr = \"{addr}\"{grpc}, state = \"{state}\" }},\n"
        ));
    }
    s.push_str("]\n");
    s
}

impl TestProxy {
    pub async fn start(opts: Opts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let ca = LocalCa::open_or_create(&certs, "kanmon.test").unwrap();
        for host in [
            ALPHA,
            BETA,
            ALPHA_CONSOLE,
            BETA_CONSOLE,
            "_.eu-west1.kanmon.test",
        ] {
            ca.issue(&certs, host).unwrap();
        }
        let mut roots = RootCertStore::empty();
        let pem = std::fs::read(&ca.cert_path).unwrap();
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        std::fs::write(dir.path().join("nodes.toml"), &opts.nodes).unwrap();
        let tls_addr = free_port();
        let admin_addr = free_port();
        let config = format!(
            r#"
[listen]
tls = "{tls_addr}"
admin = "{admin_addr}"
{listen_extra}
[tls]
cert_dir = "certs"
{tls_extra}
[routing]
base_domain = "{BASE}"
{discovery}
[shutdown]
grace_period = "{grace}"
upgrade_sock = "{sock}"
[limits]
request_read_timeout = "{read_timeout}"
max_connections_per_deployment = {max}
{limits_extra}
[server]
threads = 2
{extra}
"#,
            grace = opts.grace,
            read_timeout = opts.read_timeout,
            max = opts.max_connections,
            sock = dir.path().join("upgrade.sock").display(),
            extra = opts.extra,
            tls_extra = opts.tls_extra,
            limits_extra = opts.limits_extra,
            listen_extra = opts.listen_extra,
            discovery = opts
                .discovery
                .clone()
                .unwrap_or_else(|| "[discovery]\nkind = \"file\"\npath = \"nodes.toml\"\n".into()),
        );
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kanmon-proxy"))
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "debug,pingora_core=info,pingora_proxy=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let proxy = Self {
            child: Some(child),
            dir,
            tls_addr,
            admin_addr,
            roots: Arc::new(roots),
            ca,
        };
        proxy.wait_ready().await;
        proxy
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("proxy.log")).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        for _ in 0..300 {
            if let Ok((200, _)) = self.admin("/readyz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("proxy never became ready; log:\n{}", self.log());
    }

    /// GET on the admin listener: (status, body).
    pub async fn admin(&self, path: &str) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(self.admin_addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    pub async fn metrics(&self) -> String {
        self.admin("/metrics").await.unwrap().1
    }

    /// The value of one sample line (`name{labels}`) in `/metrics`, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits (bounded, 2 s) until `series` reaches `value` and returns what it last read: a
    /// request is counted once its response is out, so a client can be a moment ahead.
    pub async fn metric_reaches(&self, series: &str, value: f64) -> f64 {
        let mut last = self.metric(series).await;
        for _ in 0..100 {
            if last == value {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            last = self.metric(series).await;
        }
        last
    }

    /// The trust anchors of this proxy's test CA (for clients built by hand).
    pub fn roots(&self) -> RootCertStore {
        (*self.roots).clone()
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// A TLS connection to the proxy with `sni`.
    pub async fn tls(&self, sni: &str, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.tls_addr).await?;
        let name = ServerName::try_from(sni.to_string()).unwrap();
        TlsConnector::from(self.client_config(alpn))
            .connect(name, tcp)
            .await
    }

    /// One HTTP/1.1 GET with SNI `sni` and `Host: host`: (status, headers, body).
    pub async fn get(&self, sni: &str, host: &str, path: &str) -> (u16, http::HeaderMap, String) {
        let tls = self.tls(sni, &[b"http/1.1"]).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    /// A WebSocket through the proxy to `host`'s `/ws`.
    pub async fn ws(&self, host: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let tls = self.tls(host, &[b"http/1.1"]).await?;
        let (ws, _) =
            tokio_tungstenite::client_async(format!("wss://{host}/ws?token=secret-token"), tls)
                .await?;
        Ok(ws)
    }

    pub fn write_nodes(&self, text: &str) {
        let tmp = self.path("nodes.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path("nodes.toml")).unwrap();
    }

    /// Waits (bounded) until the table generation reaches `generation`.
    pub async fn wait_generation(&self, generation: u64) {
        for _ in 0..200 {
            if self.metric("kanmon_table_generation").await >= generation as f64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "generation {generation} never published; log:\n{}",
            self.log()
        );
    }

    /// Starts a second proxy process on the same config with `--upgrade`: it takes over the
    /// listening sockets once this one gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> Child {
        let log = std::fs::File::create(self.path("proxy-upgrade.log")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_kanmon-proxy"))
            .arg("--config")
            .arg(self.path("proxy.toml"))
            .arg("--upgrade")
            .env("RUST_LOG", "debug,pingora_core=info,pingora_proxy=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Sends `signal` (`TERM`, `QUIT`, …) to the proxy.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded by `limit`) for the process to exit; returns whether it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().unwrap().is_some() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.kill().is_ok() {
                let _reaped = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- proxy log ---\n{}", self.log());
        }
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Sends `whoami` and returns the node id the WebSocket landed on.
pub async fn whoami(ws: &mut Ws) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text("whoami")).await.unwrap();
    loop {
        match ws.next().await.expect("websocket closed").unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Sends `msg` and expects it echoed.
pub async fn echo(ws: &mut Ws, msg: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(msg.to_string())).await.unwrap();
    loop {
        match ws.next().await.expect("websocket closed").unwrap() {
            Message::Text(t) => {
                assert_eq!(t.as_str(), msg);
                return;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}
