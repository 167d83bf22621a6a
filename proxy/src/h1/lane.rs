//! The HTTP/1.1 connection loop: requests in, through the router to a node over a pooled
//! keep-alive connection, responses out; WebSocket upgrades handed to the tunnel.
//!
//! Per request this does what a proxy must and nothing more: the head is parsed in place,
//! the head for the node is written into a buffer the connection keeps, bodies are forwarded
//! as they arrive with their framing followed (never re-encoded), and the response head plus
//! the first body bytes leave in one write. No allocation per request once the connection's
//! buffers exist, no task spawned per request, no lock taken for the upstream pool.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use kanmon_router::ConnectionGuard;
use pingora::{protocols::Stream, server::ShutdownWatch};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::timeout,
};

use crate::bufpool::Lent;

use super::{
    head::{self, Framing, HeadError, RequestHead},
    write::{write_within, WriteFail},
};
use crate::{
    client_limits::ClientSlot, inflight::Inflight, policy::RequestAccount, responses::Refusal,
    routing::Routes, tls::SniTarget, tunnel,
};

/// Client read buffer of a connection (a request head fits; it grows up to
/// `max_header_bytes` for larger ones).
pub(super) const READ_BUF: usize = 4096;

/// Status counted when the client went away before any response: nginx's convention.
pub(super) const CLIENT_CLOSED: u16 = 499;

/// The HTTP/1.1 side of the proxy.
pub struct Lane {
    pub(super) routes: Routes,
    pub(super) connections: Inflight,
    pub(super) going_away: watch::Receiver<bool>,
}

/// What the connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    KeepAlive,
    Close,
}

impl Lane {
    /// The lane over `routes`; tunnels count themselves in `connections` and watch
    /// `going_away` for the end of a graceful shutdown.
    pub fn new(routes: Routes, connections: Inflight, going_away: watch::Receiver<bool>) -> Self {
        Self {
            routes,
            connections,
            going_away,
        }
    }

    /// Serves one client connection (TLS already terminated) until it closes; `slot` (the
    /// connection's place under its client address's limit) is held as long as the
    /// connection lives, by a WebSocket tunnel too.
    pub async fn serve(&self, mut client: Stream, shutdown: &ShutdownWatch, slot: ClientSlot) {
        let digest = client.get_ssl_digest();
        let sni = digest.as_ref().and_then(|d| d.extension.get::<SniTarget>());
        let client_ip = client
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // Bytes read from the client not yet forwarded: a head, body bytes, a pipelined head.
        // The only buffer a kept-alive connection holds between requests; the others are
        // lent per exchange (`bufpool`).
        let mut buf = Vec::with_capacity(READ_BUF);
        let mut shutdown = shutdown.clone();
        let mut counted = RequestAccount::default();
        // Whether the proxy ends the connection on a client that may still be sending.
        let mut refused = false;
        loop {
            let head = match self.read_head(&mut client, &mut buf, &mut shutdown).await {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "bad request head");
                    let refusal = match e {
                        HeadError::TooLarge => Refusal::HeadersTooLarge,
                        HeadError::Malformed(_) => Refusal::BadRequest,
                    };
                    let dep = self.routes.named_deployment(sni);
                    counted.record(self.routes.metrics(), dep.as_ref(), refusal.status(), 0.0);
                    self.send_refusal(&mut client, refusal, true).await;
                    refused = true;
                    break;
                }
            };
            let host = head
                .host
                .clone()
                .and_then(|r| std::str::from_utf8(&buf[r]).ok());
            let guard = match self.routes.route(sni, host, head.header_bytes, client_ip) {
                Ok(guard) => guard,
                Err(refusal) => {
                    // A refused request's body is not read: the connection cannot go on.
                    let close = !head.keep_alive || head.body != Framing::Empty;
                    let dep = self.routes.named_deployment(sni);
                    counted.record(self.routes.metrics(), dep.as_ref(), refusal.status(), 0.0);
                    let sent = self.send_refusal(&mut client, refusal, close).await;
                    if !sent || close || refusal.closes() {
                        refused = sent;
                        break;
                    }
                    buf.drain(..head.len);
                    continue;
                }
            };
            if head.websocket {
                self.websocket(client, buf, &head, guard, client_ip, slot)
                    .await;
                return;
            }
            let start = Instant::now();
            let dep = Arc::clone(guard.deployment());
            let closing = *shutdown.borrow();
            let (status, next) = self
                .exchange(&mut client, &mut buf, &head, guard, client_ip, closing)
                .await;
            counted.record(
                self.routes.metrics(),
                Some(&dep),
                status,
                start.elapsed().as_secs_f64(),
            );
            if next == Next::Close {
                refused = matches!(status, 400 | 408);
                break;
            }
            if buf.is_empty() && buf.capacity() > READ_BUF {
                // A large head or body grew it: idle connections go back to the small size.
                buf = Vec::with_capacity(READ_BUF);
            }
        }
        // A client that stopped reading cannot hold the close either.
        let limit = self.routes.settings().write_timeout;
        let _closing_anyway = timeout(limit, AsyncWriteExt::shutdown(&mut client)).await;
        if refused {
            linger(&mut client).await;
        }
        drop(slot);
    }

    /// Reads until `buf` starts with a whole request head, within `request_read_timeout`.
    /// `Ok(None)`: the client closed, did not send a whole head in time, or the proxy is
    /// shutting down while it was idle.
    async fn read_head(
        &self,
        client: &mut Stream,
        buf: &mut Vec<u8>,
        shutdown: &mut ShutdownWatch,
    ) -> Result<Option<RequestHead>, HeadError> {
        let settings = self.routes.settings();
        // One deadline for the whole head, not one per read: a client trickling a byte at a
        // time cannot stretch it.
        let deadline = tokio::time::Instant::now() + settings.request_read_timeout;
        loop {
            if !buf.is_empty() {
                if let Some(head) = head::parse_request(buf, settings.max_header_bytes)? {
                    return Ok(Some(head));
                }
            }
            let idle = buf.is_empty();
            if idle && *shutdown.borrow() {
                return Ok(None);
            }
            if buf.capacity() - buf.len() < READ_BUF / 4 {
                buf.reserve(READ_BUF);
            }
            let read = tokio::time::timeout_at(deadline, client.read_buf(buf));
            let read = if idle {
                // Between requests a graceful shutdown closes the connection right away.
                tokio::select! {
                    r = read => r,
                    () = shutdown_begins(shutdown) => return Ok(None),
                }
            } else {
                read.await
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                // Stalled inside a head: cut (an idle keep-alive connection is not counted).
                Err(_) if !idle => {
                    self.cut("slow_head");
                    return Ok(None);
                }
                // Closed, reset or stalled: nothing to answer (a half head is not a request).
                _ => return Ok(None),
            }
        }
    }

    /// Counts and writes a refusal; returns whether it went out.
    pub(super) async fn send_refusal(
        &self,
        client: &mut Stream,
        refusal: Refusal,
        close: bool,
    ) -> bool {
        self.routes.refused(refusal);
        let mut out = Lent::take();
        refusal.write_h1(close, &mut out);
        self.to_client(client, &out).await
    }

    /// Writes and flushes `bytes` to the client within `write_timeout`; returns whether they
    /// went out. A client that stopped reading is cut and counted.
    pub(super) async fn to_client(&self, client: &mut Stream, bytes: &[u8]) -> bool {
        match write_within(client, bytes, self.routes.settings().write_timeout).await {
            Ok(()) => true,
            Err(WriteFail::Closed(_)) => false,
            Err(WriteFail::TimedOut) => {
                self.cut("client_write_timeout");
                false
            }
        }
    }

    /// Writes `bytes` to a node within `write_timeout` (a node that stopped reading is
    /// counted as cut).
    pub(super) async fn to_node(
        &self,
        node: &mut TcpStream,
        bytes: &[u8],
    ) -> Result<(), WriteFail> {
        let written = write_within(node, bytes, self.routes.settings().write_timeout).await;
        if let Err(WriteFail::TimedOut) = written {
            self.cut("node_write_timeout");
        }
        written
    }

    /// Counts a connection cut for a peer that was too slow.
    pub(super) fn cut(&self, reason: &'static str) {
        let metrics = self.routes.metrics();
        metrics.cut_connections.with_label_values(&[reason]).inc();
        tracing::debug!(reason, "connection cut: the peer was too slow");
    }

    /// Connects to the picked node; when that fails, counts it, ejects the node and (once per
    /// request) moves `guard` to another ready node and tries that one. `None`: no node could
    /// be reached.
    pub(super) async fn connect_picked(
        &self,
        guard: &mut Option<ConnectionGuard>,
        retried: &mut bool,
    ) -> Option<(TcpStream, SocketAddr)> {
        tunnel::connect_picked(&self.routes, guard, retried).await
    }

    /// Answers with `refusal` and closes (used once the exchange broke).
    pub(super) async fn fail(&self, client: &mut Stream, refusal: Refusal) -> (u16, Next) {
        // The client may be gone already; the exchange ends either way.
        let _sent = self.send_refusal(client, refusal, true).await;
        (refusal.status(), Next::Close)
    }
}

/// After answering a client that may still be sending (a refused head, a cut body), reads
/// and drops what it sends for a moment before closing (RFC 9112 §9.6): closing on unread
/// bytes resets the connection, and a reset can destroy the answer before the client reads it.
async fn linger(client: &mut Stream) {
    /// Long enough for bytes in flight, short enough to cost nothing.
    const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
    const MOST: usize = 64 * 1024;
    let drain = async {
        let mut buf = [0u8; 1024];
        let mut dropped = 0;
        while dropped < MOST {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    };
    let _bounded = timeout(LINGER, drain).await;
}

/// Resolves once a graceful shutdown has begun (never, if nobody can signal one any more).
async fn shutdown_begins(shutdown: &mut ShutdownWatch) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
