//! The pingora `ProxyHttp` application: SNI → deployment → ready node.
//!
//! Per request: check `Host` against the connection's SNI (421), look the deployment up (404),
//! pick a ready node with the router (503 + Retry-After), and hold the router's connection
//! guard in the request context, so it lives exactly as long as the request — or, for a
//! WebSocket, as long as the upgraded connection.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use kanmon_router::{split_host, ConnectionGuard, Deployment, HealthTable, PickError};
use pingora::{
    http::ResponseHeader,
    prelude::HttpPeer,
    proxy::{ProxyHttp, Session},
    Error, Result,
};

use crate::{
    clock::Clock, inflight::Inflight, metrics::Metrics, responses::Refusal, settings::Settings,
    tls::SniTarget, tunnel, wsframe::FrameBoundary,
};
use tokio::{io::AsyncWriteExt, sync::watch};

/// The proxy application.
pub struct KanmonProxy {
    connections: Inflight,
    /// Turns true near the end of a graceful shutdown: tunnels then send 1001 Close frames.
    going_away: watch::Receiver<bool>,
    table: Arc<HealthTable>,
    metrics: Metrics,
    settings: Arc<Settings>,
    clock: Clock,
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    guard: Option<ConnectionGuard>,
    retried: bool,
    websocket: bool,
    grpc: bool,
    refused: Option<Refusal>,
    /// Status of a response the proxy relayed itself (WebSocket tunnels).
    relayed: Option<u16>,
    /// The deployment the request went to (kept for metric labels after a WebSocket's guard
    /// moved into its tunnel task).
    deployment: Option<Arc<Deployment>>,
}

impl KanmonProxy {
    /// The application over `table`.
    pub fn new(
        table: Arc<HealthTable>,
        metrics: Metrics,
        settings: Arc<Settings>,
        connections: Inflight,
        going_away: watch::Receiver<bool>,
    ) -> Self {
        Self {
            connections,
            going_away,
            table,
            metrics,
            settings,
            clock: Clock::new(),
        }
    }

    /// Labels for a request: known deployments by name, everything else as "unknown".
    fn labels<'a>(&self, ctx: &'a RequestCtx) -> (&'a str, &'a str) {
        match &ctx.deployment {
            Some(d) => (d.instance().as_str(), d.zone().as_str()),
            None => ("unknown", "unknown"),
        }
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        r: Refusal,
    ) -> Result<bool> {
        ctx.refused = Some(r);
        self.metrics.rejected.with_label_values(&[r.reason()]).inc();
        tracing::debug!(status = r.status(), reason = r.reason(), "request refused");
        r.send(session).await?;
        Ok(true)
    }

    /// Counts a failed connect to the picked node, ejects it for a while and, on the first
    /// failure, moves the request to another ready node. Returns whether to retry.
    fn connect_failed(&self, ctx: &mut RequestCtx, error: &dyn std::fmt::Display) -> bool {
        let Some(guard) = &ctx.guard else {
            return false;
        };
        let node = guard.node();
        let dep = guard.deployment();
        self.metrics
            .upstream_failures
            .with_label_values(&[dep.instance().as_str(), dep.zone().as_str(), node.id()])
            .inc();
        guard.eject(self.clock.now_ms(), self.settings.eject_for_ms);
        tracing::info!(node = node.id(), error = %error, "upstream connect failed; node ejected for a while");
        if ctx.retried {
            return false;
        }
        ctx.retried = true;
        let failed = node.id().to_string();
        let dep = Arc::clone(guard.deployment());
        match self.pick(dep.instance().as_str(), dep.zone().as_str(), Some(&failed)) {
            Ok(next) if next.node().id() != failed => {
                ctx.guard = Some(next);
                true
            }
            _ => false,
        }
    }

    /// Proxies a WebSocket upgrade through our own tunnel (see `tunnel`).
    async fn websocket(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let client = session.client_addr().and_then(|a| a.as_inet()).copied();
        let head = tunnel::request_head(session.req_header(), client);
        let (mut node, addr) = loop {
            let Some(addr) = ctx.guard.as_ref().map(ConnectionGuard::addr) else {
                return self.refuse(session, ctx, Refusal::BadGateway).await;
            };
            match tunnel::connect(addr, self.settings.connect_timeout).await {
                Ok(stream) => break (stream, addr),
                Err(e) => {
                    if !self.connect_failed(ctx, &e) {
                        return self.refuse(session, ctx, Refusal::BadGateway).await;
                    }
                }
            }
        };
        let response = async {
            node.write_all(&head)
                .await
                .map_err(|e| tunnel::TunnelError::Upstream {
                    addr,
                    reason: e.to_string(),
                })?;
            tunnel::read_response_head(&mut node, addr, self.settings.request_read_timeout).await
        };
        let response = match response.await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "websocket upgrade failed at the node");
                return self.refuse(session, ctx, Refusal::BadGateway).await;
            }
        };
        let Ok(mut downstream) = tunnel::take_downstream(session) else {
            return self.refuse(session, ctx, Refusal::BadGateway).await;
        };
        ctx.relayed = Some(response.status);
        if response.status != 101 {
            if let Err(e) = tunnel::relay_refusal(
                &mut downstream,
                &mut node,
                &response,
                self.settings.request_read_timeout,
            )
            .await
            {
                tracing::debug!(error = %e, "client left during a refused upgrade");
            }
            return Ok(true);
        }
        if downstream.write_all(&response.bytes).await.is_err() || downstream.flush().await.is_err()
        {
            return Ok(true);
        }
        // The tunnel runs as a task of its own, holding only the two streams, its buffers,
        // the router's guard and a connection count: the pingora session (and its placeholder
        // stream) ends now instead of living as long as the WebSocket.
        let Some(guard) = ctx.guard.take() else {
            return Ok(true);
        };
        let gauge = self
            .metrics
            .websockets
            .with_label_values(&self.ws_labels(&guard));
        let connection = self.connections.enter();
        let idle = self.settings.websocket_idle_timeout;
        // Bytes after the node's response head are already WebSocket frames.
        let mut frames = FrameBoundary::default();
        frames.feed(&response.bytes[response.head_len..]);
        let going_away = self.going_away.clone();
        tokio::spawn(async move {
            gauge.inc();
            let end = tunnel::relay(downstream, node, idle, frames, going_away).await;
            gauge.dec();
            tracing::debug!(?end, node = guard.node().id(), "websocket ended");
            drop((guard, connection));
        });
        Ok(true)
    }

    fn ws_labels<'a>(&self, guard: &'a ConnectionGuard) -> [&'a str; 3] {
        let dep = guard.deployment();
        [
            dep.instance().as_str(),
            dep.zone().as_str(),
            guard.node().id(),
        ]
    }

    /// Decides where a request goes, or why it is refused.
    fn route(&self, session: &Session) -> Result<ConnectionGuard, Refusal> {
        if header_bytes(session) > self.settings.max_header_bytes {
            return Err(Refusal::HeadersTooLarge);
        }
        let target = sni_target(session).ok_or(Refusal::UnknownHost)?;
        if let Some(host) = request_host(session) {
            let same = split_host(host, &self.settings.base_domain).is_some_and(|(i, z)| {
                i.eq_ignore_ascii_case(&target.instance) && z.eq_ignore_ascii_case(&target.zone)
            });
            if !same {
                return Err(Refusal::Misdirected);
            }
        }
        self.pick(&target.instance, &target.zone, None)
            .map_err(|e| match e {
                PickError::UnknownDeployment => Refusal::UnknownHost,
                PickError::NoReadyNode => Refusal::NoReadyNode,
                PickError::AtCapacity => Refusal::AtCapacity,
            })
    }

    fn pick(
        &self,
        instance: &str,
        zone: &str,
        exclude: Option<&str>,
    ) -> Result<ConnectionGuard, PickError> {
        self.table
            .pick_excluding(instance, zone, self.clock.now_ms(), exclude)
    }
}

/// The deployment named by the connection's SNI (set by the TLS callbacks), borrowed: no
/// allocation per request.
fn sni_target(session: &Session) -> Option<&SniTarget> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<SniTarget>()
}

/// The request's host: `:authority` for HTTP/2, else the `Host` header; port stripped.
fn request_host(session: &Session) -> Option<&str> {
    let req = session.req_header();
    let raw = match req.uri.authority() {
        Some(a) => a.host(),
        None => req.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    if raw.starts_with('[') {
        return Some(raw); // An IPv6 literal never names a deployment.
    }
    Some(match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    })
}

/// Status codes as label strings, formatted once: no allocation per request.
fn status_label(status: u16) -> &'static str {
    static LABELS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..600).map(|c| c.to_string()).collect());
    LABELS.get(status as usize).map_or("0", String::as_str)
}

fn header_bytes(session: &Session) -> usize {
    let req = session.req_header();
    let uri = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    uri + req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

#[async_trait]
impl ProxyHttp for KanmonProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            start: Instant::now(),
            guard: None,
            retried: false,
            websocket: false,
            grpc: false,
            refused: None,
            relayed: None,
            deployment: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The header has arrived: from here the read timeout guards the body.
        session.set_read_timeout(Some(self.settings.request_read_timeout));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let guard = match self.route(session) {
            Ok(guard) => guard,
            Err(refusal) => return self.refuse(session, ctx, refusal).await,
        };
        ctx.grpc = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        ctx.deployment = Some(Arc::clone(guard.deployment()));
        ctx.guard = Some(guard);
        if tunnel::is_websocket_upgrade(session.req_header()) {
            return self.websocket(session, ctx).await;
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(guard) = &ctx.guard else {
            return Error::e_explain(pingora::ErrorType::InternalError, "no node picked");
        };
        let node = guard.node();
        let grpc = if ctx.grpc { node.grpc() } else { None };
        let addr = grpc.unwrap_or(node.addr());
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.settings.connect_timeout);
        peer.options.idle_timeout = Some(self.settings.pool_idle_timeout);
        if grpc.is_some() {
            // gRPC nodes speak h2 in clear text (prior knowledge).
            peer.options.set_http_version(2, 2);
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if self.connect_failed(ctx, &e) {
            e.set_retry(true);
        }
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if resp.status.as_u16() == 101 {
            ctx.websocket = true;
            // Upgraded: the request read timeout no longer applies; the WebSocket idle policy does.
            session.set_read_timeout(Some(self.settings.websocket_idle_timeout));
            self.metrics
                .websockets
                .with_label_values(
                    &ctx.guard
                        .as_ref()
                        .map_or(["unknown"; 3], |g| self.ws_labels(g)),
                )
                .inc();
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = match (ctx.relayed, session.response_written(), ctx.refused) {
            (Some(s), ..) => s,
            (None, Some(r), _) => r.status.as_u16(),
            (None, None, Some(r)) => r.status(),
            (None, None, None) => match e.map(|e| e.etype()) {
                Some(pingora::ErrorType::HTTPStatus(code)) => *code,
                Some(_) => 502,
                None => 0,
            },
        };
        let (instance, zone) = self.labels(ctx);
        let status_label = status_label(status);
        self.metrics
            .requests
            .with_label_values(&[instance, zone, status_label])
            .inc();
        self.metrics
            .observe(instance, zone, ctx.start.elapsed().as_secs_f64());
        if ctx.websocket {
            self.metrics
                .websockets
                .with_label_values(
                    &ctx.guard
                        .as_ref()
                        .map_or(["unknown"; 3], |g| self.ws_labels(g)),
                )
                .dec();
        }
        match e {
            // A node failing a request is the operator's business.
            Some(e) if e.esource() == &pingora::ErrorSource::Upstream => {
                tracing::warn!(instance, zone, status, error = %e, "request failed at the node");
            }
            // Client-caused ends (resets, timeouts) are routine for game clients.
            Some(e) => tracing::debug!(status, error = %e, "request ended with error"),
            None => {}
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        // A client that disconnects or sends garbage is routine for game traffic: counted in
        // metrics and logged at debug in `logging`, never as an error.
        error.esource() == &pingora::ErrorSource::Downstream
    }

    fn request_summary(&self, session: &Session, _ctx: &Self::CTX) -> String {
        // Never the query string: Nakama clients put session tokens there.
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }
}
