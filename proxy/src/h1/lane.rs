//! The HTTP/1.1 connection loop: requests in, through the router to a node over a pooled
//! keep-alive connection, responses out; WebSocket upgrades handed to the tunnel.
//!
//! Per request this does what a proxy must and nothing more: the head is parsed in place,
//! the head for the node is written into a buffer the connection keeps, bodies are forwarded
//! as they arrive with their framing followed (never re-encoded), and the response head plus
//! the first body bytes leave in one write. No allocation per request once the connection's
//! buffers exist, no task spawned per request, no lock taken for the upstream pool.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use kanmon_router::ConnectionGuard;
use pingora::{protocols::Stream, server::ShutdownWatch};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::timeout,
};

use crate::bufpool::{self, Lent};

use super::{
    body::Body,
    head::{self, Framing, HeadError, RequestHead, ResponseHead},
    pace::BodyPace,
    pool,
    write::{write_within, WriteFail},
};
use crate::{
    accounting::RequestAccount, client_limits::ClientSlot, inflight::Inflight, node_series,
    responses::Refusal, routing::Routes, tls::SniTarget, tunnel, wsframe::FrameBoundary,
};

/// Client read buffer of a connection (a request head fits; it grows up to
/// `max_header_bytes` for larger ones).
const READ_BUF: usize = 4096;

/// Largest response head accepted from a node.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Status counted when the client went away before any response: nginx's convention.
const CLIENT_CLOSED: u16 = 499;

/// The HTTP/1.1 side of the proxy.
pub struct Lane {
    routes: Routes,
    connections: Inflight,
    going_away: watch::Receiver<bool>,
}

/// What the connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// How waiting for a node's response head ended badly.
enum NodeFailure {
    /// Closed or reset before sending a byte (a reused connection may be retried).
    Closed,
    /// Nothing within `upstream.response_timeout`.
    Timeout,
    /// Something that is not a usable response.
    Broken,
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
            let guard = match self.routes.route(sni, host, head.header_bytes) {
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
    async fn send_refusal(&self, client: &mut Stream, refusal: Refusal, close: bool) -> bool {
        self.routes.refused(refusal);
        let mut out = Lent::take();
        refusal.write_h1(close, &mut out);
        self.to_client(client, &out).await
    }

    /// Writes and flushes `bytes` to the client within `write_timeout`; returns whether they
    /// went out. A client that stopped reading is cut and counted.
    async fn to_client(&self, client: &mut Stream, bytes: &[u8]) -> bool {
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
    async fn to_node(&self, node: &mut TcpStream, bytes: &[u8]) -> Result<(), WriteFail> {
        let written = write_within(node, bytes, self.routes.settings().write_timeout).await;
        if let Err(WriteFail::TimedOut) = written {
            self.cut("node_write_timeout");
        }
        written
    }

    /// Counts a connection cut for a peer that was too slow.
    fn cut(&self, reason: &'static str) {
        let metrics = self.routes.metrics();
        metrics.cut_connections.with_label_values(&[reason]).inc();
        tracing::debug!(reason, "connection cut: the peer was too slow");
    }

    /// One request and its response. Returns the status the client got and what next.
    async fn exchange(
        &self,
        client: &mut Stream,
        buf: &mut Vec<u8>,
        head: &RequestHead,
        guard: ConnectionGuard,
        client_ip: Option<IpAddr>,
        shutting_down: bool,
    ) -> (u16, Next) {
        let settings = self.routes.settings();
        let started = tokio::time::Instant::now();
        // Lent for this exchange only (see `bufpool`).
        let (mut out, mut node_buf) = (Lent::take(), Lent::take());
        // The request as the node gets it: the head plus the body bytes already read.
        head::write_upstream_request(buf, head, client_ip, &mut out);
        let mut body = Body::new(head.body, settings.max_header_bytes);
        let Ok(got) = body.take(&buf[head.len..]) else {
            return self.fail(client, Refusal::BadRequest).await;
        };
        out.extend_from_slice(&buf[head.len..head.len + got]);
        buf.drain(..head.len + got);
        let received = got as u64;
        // Whole request in hand: a kept-alive connection the node had closed can be retried.
        let whole = body.is_done();
        if head.expect_continue && !whole {
            // Answered here, so the client sends its body while the node is picked.
            if !self
                .to_client(client, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
            {
                return (CLIENT_CLOSED, Next::Close);
            }
        }

        let mut guard = Some(guard);
        let mut retried = false;
        let mut fresh_only = false;
        let (mut node, addr, response) = loop {
            let pooled = guard
                .as_ref()
                .map(ConnectionGuard::addr)
                .filter(|_| !fresh_only)
                .and_then(|addr| pool::take(addr, settings.pool_idle_timeout).map(|n| (n, addr)));
            let reused = pooled.is_some();
            let picked = match pooled {
                Some(pooled) => Some(pooled),
                None => self.connect_picked(&mut guard, &mut retried).await,
            };
            let Some((mut node, addr)) = picked else {
                return self.fail(client, Refusal::BadGateway).await;
            };
            match self.to_node(&mut node, &out).await {
                Ok(()) => {}
                Err(WriteFail::Closed(e)) if reused && whole => {
                    tracing::debug!(node = %addr, error = %e, "kept-alive connection closed by the node; retrying on a fresh one");
                    fresh_only = true;
                    continue;
                }
                Err(WriteFail::Closed(e)) => {
                    tracing::warn!(error = %e, "sending a request to the node failed");
                    return self.fail(client, Refusal::BadGateway).await;
                }
                Err(WriteFail::TimedOut) => {
                    return self.fail(client, Refusal::GatewayTimeout).await;
                }
            }
            if !body.is_done() {
                let pace = (started, received);
                match self
                    .forward_body(client, &mut node, buf, &mut body, pace)
                    .await
                {
                    Ok(()) => {}
                    Err(BodySide::Client) => return (CLIENT_CLOSED, Next::Close),
                    Err(BodySide::Malformed) => {
                        return self.fail(client, Refusal::BadRequest).await
                    }
                    Err(BodySide::TooSlow) => {
                        self.cut("slow_body");
                        return self.fail(client, Refusal::RequestTimeout).await;
                    }
                    Err(BodySide::NodeStalled) => {
                        return self.fail(client, Refusal::GatewayTimeout).await
                    }
                    Err(BodySide::Node) => return self.fail(client, Refusal::BadGateway).await,
                }
            }
            match self
                .response_head(client, &mut node, &mut node_buf, head)
                .await
            {
                Ok(response) => break (node, addr, response),
                Err(NodeFailure::Closed) if reused && whole => {
                    tracing::debug!(node = %addr, "kept-alive connection closed by the node; retrying on a fresh one");
                    fresh_only = true;
                }
                Err(NodeFailure::Timeout) => {
                    tracing::warn!(node = %addr, "node did not answer in time");
                    return self.fail(client, Refusal::GatewayTimeout).await;
                }
                Err(_) => {
                    tracing::warn!(node = %addr, "node broke the exchange before its response");
                    return self.fail(client, Refusal::BadGateway).await;
                }
            }
        };

        // The response: head and the body bytes already read leave in one write.
        let close = !head.keep_alive || shutting_down || response.body == Framing::UntilClose;
        let mut rbody = Body::new(response.body, MAX_RESPONSE_HEAD);
        out.clear();
        head::write_client_response(&node_buf, &response, close, &mut out);
        let after_head = &node_buf[response.len..];
        let Ok(used) = rbody.take(after_head) else {
            return self.fail(client, Refusal::BadGateway).await;
        };
        let mut in_step = used == after_head.len();
        out.extend_from_slice(&after_head[..used]);
        if !self.to_client(client, &out).await {
            return (response.status, Next::Close);
        }
        while !rbody.is_done() {
            node_buf.clear();
            let n = match timeout(settings.response_timeout, node.read_buf(&mut *node_buf)).await {
                Ok(Ok(n)) => n,
                // The head is out: all that is left is to cut the connection.
                _ => return (response.status, Next::Close),
            };
            if n == 0 {
                return (response.status, Next::Close);
            }
            let Ok(used) = rbody.take(&node_buf) else {
                return (response.status, Next::Close);
            };
            in_step = used == node_buf.len();
            if !self.to_client(client, &node_buf[..used]).await {
                return (response.status, Next::Close);
            }
        }
        if response.keep_alive && in_step {
            pool::put(addr, node, settings.pool_idle_timeout);
        }
        // The router's count for this node ends with the exchange.
        drop(guard);
        (
            response.status,
            if close { Next::Close } else { Next::KeepAlive },
        )
    }

    /// Connects to the picked node; when that fails, counts it, ejects the node and (once per
    /// request) moves `guard` to another ready node and tries that one. `None`: no node could
    /// be reached.
    async fn connect_picked(
        &self,
        guard: &mut Option<ConnectionGuard>,
        retried: &mut bool,
    ) -> Option<(TcpStream, SocketAddr)> {
        let limit = self.routes.settings().connect_timeout;
        loop {
            let addr = guard.as_ref().map(ConnectionGuard::addr)?;
            match tunnel::connect(addr, limit).await {
                Ok(node) => return Some((node, addr)),
                Err(e) => {
                    if !self.routes.connect_failed(guard, retried, &e) {
                        return None;
                    }
                }
            }
        }
    }

    /// Answers with `refusal` and closes (used once the exchange broke).
    async fn fail(&self, client: &mut Stream, refusal: Refusal) -> (u16, Next) {
        // The client may be gone already; the exchange ends either way.
        let _sent = self.send_refusal(client, refusal, true).await;
        (refusal.status(), Next::Close)
    }

    /// Forwards the rest of a request body as it arrives, at the pace `limits` asks of the
    /// whole body (`BodyPace`) from `started`, when `received` bytes of it were in.
    async fn forward_body(
        &self,
        client: &mut Stream,
        node: &mut TcpStream,
        buf: &mut Vec<u8>,
        body: &mut Body,
        (started, mut received): (tokio::time::Instant, u64),
    ) -> Result<(), BodySide> {
        let settings = self.routes.settings();
        let pace = BodyPace::new(settings.request_read_timeout, settings.min_body_rate);
        while !body.is_done() {
            if buf.capacity() - buf.len() < READ_BUF / 4 {
                buf.reserve(READ_BUF);
            }
            let due = started + pace.allowed(received);
            match tokio::time::timeout_at(due, client.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => received += n as u64,
                Ok(_) => return Err(BodySide::Client),
                Err(_) => return Err(BodySide::TooSlow),
            }
            let used = body.take(buf).map_err(|_| BodySide::Malformed)?;
            match self.to_node(node, &buf[..used]).await {
                Ok(()) => {}
                Err(WriteFail::Closed(_)) => return Err(BodySide::Node),
                Err(WriteFail::TimedOut) => return Err(BodySide::NodeStalled),
            }
            buf.drain(..used);
        }
        Ok(())
    }

    /// Reads the node's final response head into `buf`, passing interim (1xx) responses on.
    async fn response_head(
        &self,
        client: &mut Stream,
        node: &mut TcpStream,
        buf: &mut Vec<u8>,
        req: &RequestHead,
    ) -> Result<ResponseHead, NodeFailure> {
        let limit = self.routes.settings().response_timeout;
        buf.clear();
        let mut any = false;
        loop {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(bufpool::SIZE);
            }
            match timeout(limit, node.read_buf(buf)).await {
                Err(_) => return Err(NodeFailure::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) if !any && buf.is_empty() => {
                    return Err(NodeFailure::Closed)
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Err(NodeFailure::Broken),
                Ok(Ok(_)) => any = true,
            }
            loop {
                let response = match head::parse_response(buf, req.is_head, MAX_RESPONSE_HEAD) {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "bad response head");
                        return Err(NodeFailure::Broken);
                    }
                };
                match response.status {
                    101 => return Err(NodeFailure::Broken),
                    100..=199 => {
                        // 100 Continue was already sent by the proxy when the client asked.
                        let pass_on = !(response.status == 100 && req.expect_continue);
                        if pass_on && !self.to_client(client, &buf[..response.len]).await {
                            return Err(NodeFailure::Broken);
                        }
                        buf.drain(..response.len);
                    }
                    _ => return Ok(response),
                }
            }
        }
    }

    /// Proxies a WebSocket upgrade: the head to the node, its answer back, then the tunnel.
    async fn websocket(
        &self,
        mut client: Stream,
        buf: Vec<u8>,
        head: &RequestHead,
        guard: ConnectionGuard,
        client_ip: Option<IpAddr>,
        slot: ClientSlot,
    ) {
        let start = Instant::now();
        let settings = self.routes.settings();
        let mut out = Lent::take();
        head::write_upstream_request(&buf, head, client_ip, &mut out);
        // Anything the client sent after its request (early frames) waits for the node's 101:
        // a node that refuses the upgrade would parse those bytes as further requests, which
        // the edge never checked.
        let early = &buf[head.len..];
        let mut guard = Some(guard);
        let mut retried = false;
        let dep = guard.as_ref().map(|g| Arc::clone(g.deployment()));
        let count = |status: u16| {
            RequestAccount::default().record(
                self.routes.metrics(),
                dep.as_ref(),
                status,
                start.elapsed().as_secs_f64(),
            );
        };
        let Some((mut node, addr)) = self.connect_picked(&mut guard, &mut retried).await else {
            count(self.fail(&mut client, Refusal::BadGateway).await.0);
            return;
        };
        let answer = async {
            write_within(&mut node, &out, settings.write_timeout)
                .await
                .map_err(|e| tunnel::TunnelError::Upstream {
                    addr,
                    reason: e.to_string(),
                })?;
            tunnel::read_response_head(&mut node, addr, settings.response_timeout).await
        };
        let response = match answer.await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "websocket upgrade failed at the node");
                count(self.fail(&mut client, Refusal::BadGateway).await.0);
                return;
            }
        };
        drop(out);
        count(response.status);
        if response.status != 101 {
            if let Err(e) =
                tunnel::relay_refusal(&mut client, &mut node, &response, settings.response_timeout)
                    .await
            {
                tracing::debug!(error = %e, "client left during a refused upgrade");
            }
            return;
        }
        if !self.to_client(&mut client, &response.bytes).await {
            return;
        }
        if !early.is_empty() {
            if let Err(e) = write_within(&mut node, early, settings.write_timeout).await {
                tracing::debug!(error = %e, "node left right after its 101");
                return;
            }
        }
        drop(buf);
        let Some(guard) = guard.take() else {
            return;
        };
        let node_label = guard.node().id();
        let gauge = self.routes.metrics().websockets.with_label_values(&[
            guard.deployment().instance().as_str(),
            guard.deployment().zone().as_str(),
            node_label,
        ]);
        // Bytes after the node's response head are already WebSocket frames.
        let mut frames = FrameBoundary::default();
        frames.feed(&response.bytes[response.head_len..]);
        drop(response);
        let limits = tunnel::Limits {
            idle: settings.websocket_idle_timeout,
            write: settings.write_timeout,
        };
        let cuts = self.routes.metrics().cut_connections.clone();
        let going_away = self.going_away.clone();
        let connection = self.connections.enter();
        let routes = self.routes.clone();
        // The tunnel runs as a task of its own holding only the two streams, its small
        // buffers, the router's guard and a connection count: the connection task and its
        // buffers end now instead of living as long as the WebSocket.
        tokio::spawn(async move {
            gauge.inc();
            let end = tunnel::relay(client, node, limits, frames, going_away).await;
            gauge.dec();
            node_series::websocket_closed(
                routes.metrics(),
                routes.table(),
                guard.deployment(),
                guard.node().id(),
                &gauge,
            );
            tracing::debug!(?end, node = guard.node().id(), "websocket ended");
            let stalled = match end {
                tunnel::TunnelEnd::ClientStalled => Some("client_write_timeout"),
                tunnel::TunnelEnd::NodeStalled => Some("node_write_timeout"),
                _ => None,
            };
            if let Some(reason) = stalled {
                cuts.with_label_values(&[reason]).inc();
            }
            drop((guard, connection, slot));
        });
    }
}

/// Which side broke a request body in flight.
enum BodySide {
    Client,
    Node,
    Malformed,
    /// The client sent it slower than `limits.min_body_rate`.
    TooSlow,
    /// The node stopped reading it for `limits.write_timeout`.
    NodeStalled,
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
