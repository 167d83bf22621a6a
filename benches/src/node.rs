//! The demo game node: a stand-in for a Nakama node behind the proxy.
//!
//! It speaks what the proxy must forward — HTTP/1.1 (`/healthcheck`, anything else), WebSocket
//! on `/ws` (echo, `whoami`) and, on a second port, gRPC-style h2c — and every reply names the
//! node, so a test can tell which node the proxy picked. [`spawn_node`] starts one in-process on
//! an OS-chosen loopback port; the `kanmon-bench node` subcommand runs the same code standalone.

mod config;
mod grpc;
mod http1;
mod room;
mod settings;
mod ws;

pub use room::JoinError;

pub use config::{read_config, ConfigError};
pub use settings::{Received, SERVER_KEY_PARAM};

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long a stopping node waits for its connections to finish before it gives up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// HTTP/1.1 + WebSocket listener (port 0 lets the OS pick).
    pub listen: SocketAddr,
    /// Optional h2c gRPC-style listener.
    pub grpc_listen: Option<SocketAddr>,
    /// Optional console listener (Nakama's 7351): plain HTTP/1.1, every reply names the node
    /// and says it is the console, so a test can tell the console from the API.
    pub console_listen: Option<SocketAddr>,
    /// Reported in every reply (`x-node-id`, `/healthcheck`, `whoami`).
    pub node_id: String,
    /// Serve TLS on `listen` (the "direct" floor of the comparison); plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Print `ws-connect node=ID` for each WebSocket (end-to-end tests count these lines).
    pub log_connections: bool,
    /// Keep the instant of every WebSocket accepted ([`NodeStats::ws_accepted_at`]), for
    /// tests that check when connections arrived (off by default: a load test would grow it).
    pub record_accepts: bool,
    /// What kanmon gave the node: the server key `/ws` demands, the `/kanmon/received`
    /// report (default: no key, an empty report).
    pub received: Arc<Received>,
}

impl NodeConfig {
    /// A plain-HTTP node on `127.0.0.1:0` with a gRPC listener on `127.0.0.1:0`.
    pub fn loopback(node_id: &str) -> Self {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self {
            listen: any,
            grpc_listen: Some(any),
            console_listen: Some(any),
            node_id: node_id.to_owned(),
            tls: None,
            log_connections: true,
            record_accepts: false,
            received: Arc::default(),
        }
    }
}

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Binding a listener failed.
    #[error("binding {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The node id cannot be sent as the `x-node-id` header value.
    #[error("node id {0:?} is not a valid header value")]
    InvalidId(String),
    /// The node's task panicked or was cancelled.
    #[error("node task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Counters a test can read to see what reached the node.
#[derive(Debug, Default)]
pub struct NodeStats {
    ws_total: AtomicU64,
    ws_active: AtomicU64,
    http_requests: AtomicU64,
    grpc_requests: AtomicU64,
    /// When each WebSocket was accepted (only with [`NodeConfig::record_accepts`]).
    ws_accepted: std::sync::Mutex<Vec<std::time::Instant>>,
    console_requests: AtomicU64,
}

impl NodeStats {
    /// WebSocket upgrades accepted since start.
    pub fn ws_connections(&self) -> u64 {
        self.ws_total.load(Ordering::Relaxed)
    }
    /// When each WebSocket upgrade was accepted, in order (empty unless the node was started
    /// with [`NodeConfig::record_accepts`]).
    pub fn ws_accepted_at(&self) -> Vec<std::time::Instant> {
        self.ws_accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// WebSockets open right now.
    pub fn ws_active(&self) -> u64 {
        self.ws_active.load(Ordering::Relaxed)
    }
    /// Plain HTTP requests answered (upgrades excluded).
    pub fn http_requests(&self) -> u64 {
        self.http_requests.load(Ordering::Relaxed)
    }
    /// gRPC requests answered.
    pub fn grpc_requests(&self) -> u64 {
        self.grpc_requests.load(Ordering::Relaxed)
    }
    /// Console requests answered.
    pub fn console_requests(&self) -> u64 {
        self.console_requests.load(Ordering::Relaxed)
    }
}

/// State shared by all connections of one node.
struct Shared {
    id: String,
    health_body: bytes::Bytes,
    id_header: http::HeaderValue,
    log_connections: bool,
    record_accepts: bool,
    received: Arc<Received>,
    stats: Arc<NodeStats>,
    /// Rooms of the broadcast mode (`/ws?room=NAME`).
    rooms: room::Rooms,
    shutdown: watch::Receiver<bool>,
    /// Each connection task holds a clone; the node is drained when all are dropped.
    alive: mpsc::Sender<()>,
}

impl Shared {
    /// Resolves once shutdown was asked for (or the handle was dropped).
    async fn stopping(&self) {
        let mut rx = self.shutdown.clone();
        // An Err means the sender (the handle) is gone: stop as well.
        let _closed_or_set = rx.wait_for(|stop| *stop).await;
    }
}

/// A running node. Dropping it stops the node as well (without waiting).
#[derive(Debug)]
pub struct NodeHandle {
    id: String,
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    console_addr: Option<SocketAddr>,
    stats: Arc<NodeStats>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl NodeHandle {
    /// The HTTP/WebSocket address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The gRPC address actually bound, if a gRPC listener was configured.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }
    /// The console address actually bound, if a console listener was configured.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_addr
    }
    /// The node id it reports.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Live counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }
    /// The same counters, to keep reading after the node is shut down.
    pub fn stats_handle(&self) -> Arc<NodeStats> {
        self.stats.clone()
    }
    /// Stops accepting, closes WebSockets with 1001 (going away), lets HTTP connections finish
    /// their current request, and waits (bounded) until every connection is gone.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.shutdown.send_replace(true);
        self.task.await?;
        Ok(())
    }
}

/// Starts a plain-HTTP node on `127.0.0.1:0` with a gRPC listener on another `127.0.0.1:0`
/// port: what an integration test needs to put a node behind the proxy.
pub async fn spawn_node(id: &str) -> Result<NodeHandle, NodeError> {
    start_node(NodeConfig::loopback(id)).await
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, NodeError> {
    l.local_addr().map_err(|source| NodeError::Bind {
        addr: asked,
        source,
    })
}

/// Binds the listeners of `cfg` and serves them on background tasks.
pub async fn start_node(cfg: NodeConfig) -> Result<NodeHandle, NodeError> {
    let id_header = http::HeaderValue::from_str(&cfg.node_id)
        .map_err(|_| NodeError::InvalidId(cfg.node_id.clone()))?;
    let http = bind(cfg.listen).await?;
    let addr = local_addr(&http, cfg.listen)?;
    let grpc = match cfg.grpc_listen {
        Some(g) => {
            let l = bind(g).await?;
            let a = local_addr(&l, g)?;
            Some((l, a))
        }
        None => None,
    };
    let grpc_addr = grpc.as_ref().map(|(_, a)| *a);
    let console = match cfg.console_listen {
        Some(c) => {
            let l = bind(c).await?;
            let a = local_addr(&l, c)?;
            Some((l, a))
        }
        None => None,
    };
    let console_addr = console.as_ref().map(|(_, a)| *a);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let stats = Arc::new(NodeStats::default());
    let shared = Arc::new(Shared {
        id: cfg.node_id.clone(),
        health_body: bytes::Bytes::from(serde_json::json!({ "node": cfg.node_id }).to_string()),
        id_header,
        log_connections: cfg.log_connections,
        record_accepts: cfg.record_accepts,
        received: cfg.received.clone(),
        stats: stats.clone(),
        rooms: room::Rooms::default(),
        shutdown: stop_rx,
        alive: alive_tx,
    });
    let tls = cfg.tls.map(tokio_rustls::TlsAcceptor::from);
    let http_task = {
        let shared = shared.clone();
        accept_loop(http, shared.clone(), move |stream| {
            http1::serve(stream, shared.clone(), tls.clone(), http1::Surface::Api)
        })
    };
    let console_task = console.map(|(listener, _)| {
        let shared = shared.clone();
        accept_loop(listener, shared.clone(), move |stream| {
            http1::serve(stream, shared.clone(), None, http1::Surface::Console)
        })
    });
    let grpc_task = grpc.map(|(listener, _)| {
        let shared = shared.clone();
        accept_loop(listener, shared.clone(), move |stream| {
            grpc::serve(stream, shared.clone())
        })
    });
    let task = tokio::spawn(async move {
        let (http_done, grpc_done, console_done) = tokio::join!(
            http_task,
            async move {
                if let Some(t) = grpc_task {
                    t.await;
                }
            },
            async move {
                if let Some(t) = console_task {
                    t.await;
                }
            }
        );
        let ((), (), ()) = (http_done, grpc_done, console_done);
        drop(shared);
        // Every connection task holds an `alive` sender: recv() yields None once all are done.
        if tokio::time::timeout(DRAIN_TIMEOUT, alive_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open, exiting anyway");
        }
    });
    Ok(NodeHandle {
        id: cfg.node_id,
        addr,
        grpc_addr,
        console_addr,
        stats,
        shutdown: stop_tx,
        task,
    })
}

/// Accepts until shutdown, spawning `serve(stream)` per connection.
async fn accept_loop<F, Fut>(listener: TcpListener, shared: Arc<Shared>, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            () = shared.stopping() => return,
            res = listener.accept() => match res {
                Ok((stream, _peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::warn!(error = %e, "set_nodelay failed");
                    }
                    let alive = shared.alive.clone();
                    let fut = serve(stream);
                    tokio::spawn(async move {
                        fut.await;
                        drop(alive);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
}

/// Runs a node until `stop` resolves, printing `listening on ADDR` (and `grpc listening on
/// ADDR`, `console listening on ADDR`) first so a parent process can read the bound ports.
pub async fn run_node(cfg: NodeConfig, stop: impl Future<Output = ()>) -> Result<(), NodeError> {
    let handle = start_node(cfg).await?;
    println!("listening on {}", handle.addr());
    if let Some(g) = handle.grpc_addr() {
        println!("grpc listening on {g}");
    }
    if let Some(c) = handle.console_addr() {
        println!("console listening on {c}");
    }
    stop.await;
    handle.shutdown().await
}
