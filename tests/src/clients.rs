//! Reconnecting WebSocket clients through the proxy, recording which node answered each
//! connection and when: the load of the rolling-reboot tests (the local platform's and the one
//! on the Kubernetes fixture).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::{tls_connect, Ws};

/// Where clients connect: the proxy's TLS address and a deployment's hostname.
#[derive(Clone)]
pub struct WsTarget {
    /// The proxy's TLS listener.
    pub addr: SocketAddr,
    /// The deployment's hostname (SNI and `Host`).
    pub host: String,
    /// Trusts the proxy's CA (the clients share its TLS session cache).
    pub tls: Arc<ClientConfig>,
    /// The deployment's server key, for nodes that demand it (those kanmon starts).
    pub server_key: Option<String>,
}

impl WsTarget {
    /// A WebSocket to the deployment's `/ws`.
    pub async fn ws(&self) -> Result<Ws, String> {
        let tls = tls_connect(self.addr, &self.host, self.tls.clone())
            .await
            .map_err(|e| e.to_string())?;
        let ws = match &self.server_key {
            Some(key) => crate::ws_with_key(tls, &self.host, key).await,
            None => {
                let url = format!("wss://{}/ws", self.host);
                tokio_tungstenite::client_async(url, tls)
                    .await
                    .map(|(ws, _)| ws)
            }
        };
        ws.map_err(|e| e.to_string())
    }
}

/// One connection a client made: which node answered `whoami`, and the window in which the
/// proxy picked it (from before the TCP connect to after the reply).
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client's number.
    pub client: usize,
    /// The node's `whoami` answer.
    pub node: String,
    /// Before the TCP connect.
    pub from: Instant,
    /// After the reply.
    pub to: Instant,
    /// The TLS handshake resumed an earlier session (the clients share one session cache).
    pub resumed: bool,
}

/// What the clients share with the test.
#[derive(Default)]
pub struct Shared {
    /// Every connection made, in order.
    pub conns: Mutex<Vec<Conn>>,
    /// Clients connected right now.
    pub connected: AtomicUsize,
    /// Ends every client.
    pub stop: AtomicBool,
    /// While set, clients hang up after a short hold and reconnect.
    pub churn: AtomicBool,
    /// Failed connection attempts.
    pub failures: AtomicUsize,
    /// The last failure's text.
    pub last_error: Mutex<String>,
}

impl Shared {
    /// The connections so far.
    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why clients are not connected, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{} connected, {} failures, last: {}",
            self.connected.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
            self.last_error.lock().unwrap_or_else(|p| p.into_inner())
        )
    }
}

/// Connects, asks `whoami`, records the node, then holds the connection (answering nothing)
/// until it drops, and reconnects. Bounded: at most 500 attempts per client.
pub async fn client(id: usize, target: WsTarget, shared: Arc<Shared>) {
    for _ in 0..500 {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let from = Instant::now();
        let mut ws = match target.ws().await {
            Ok(ws) => ws,
            Err(e) => {
                shared.failures.fetch_add(1, Ordering::Relaxed);
                *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let resumed =
            ws.get_ref().get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        if ws.send(Message::text("whoami")).await.is_err() {
            continue;
        }
        let node = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => break Some(t.to_string()),
                Ok(Some(Ok(_))) => continue,
                _ => break None,
            }
        };
        let Some(node) = node else { continue };
        let to = Instant::now();
        shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Conn {
                client: id,
                node,
                from,
                to,
                resumed,
            });
        shared.connected.fetch_add(1, Ordering::SeqCst);
        // Hold until the connection drops (the node closes it with 1001 when it stops), the
        // churn hold ends, or the test ends.
        let hold_until = Instant::now() + Duration::from_millis(300 + (id as u64 * 37) % 1200);
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                let _ = ws.close(None).await;
                shared.connected.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            if shared.churn.load(Ordering::SeqCst) && Instant::now() >= hold_until {
                let _ = ws.close(None).await;
                break;
            }
            match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => break,
                Ok(Some(Ok(_))) => continue,
            }
        }
        shared.connected.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts `n` clients on `target`.
pub fn spawn_clients(
    n: usize,
    target: &WsTarget,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| tokio::spawn(client(i, target.clone(), shared.clone())))
        .collect()
}

/// Ends the clients (each closes its WebSocket), waiting a bounded time for each.
pub async fn stop_clients(shared: &Shared, tasks: Vec<tokio::task::JoinHandle<()>>) {
    shared.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
}

/// Waits (bounded by `limit`) until at least `n` clients are connected.
pub async fn wait_connected(shared: &Shared, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if shared.connected.load(Ordering::SeqCst) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
