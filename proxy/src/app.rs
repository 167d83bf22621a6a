//! The pingora `ProxyHttp` application for HTTP/2 connections (gRPC and RFC 8441 WebSockets
//! among them): SNI → deployment → ready node, under the same request policy as the HTTP/1.1
//! lane (`policy`: [`Routes`], forwarding headers, accounting).
//!
//! Per request: check `:authority` against the connection's SNI (421), look the deployment up
//! (404), pick a ready node with the router (503 + Retry-After), and hold the router's
//! connection guard in the request context, so it lives exactly as long as the request.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use kanmon_router::{ConnectionGuard, Deployment};
use pingora::{
    http::RequestHeader,
    prelude::HttpPeer,
    proxy::{ProxyHttp, Session},
    Error, Result,
};

use crate::{
    accounting::labels,
    h2ws::{self, Connect, Tunnels},
    policy::{self, RequestAccount, Routes},
    responses::Refusal,
    tls::SniTarget,
};

/// The proxy application.
pub struct KanmonProxy {
    routes: Routes,
    tunnels: Tunnels,
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    guard: Option<ConnectionGuard>,
    retried: bool,
    grpc: bool,
    refused: Option<Refusal>,
    /// The deployment the request went to (for metric labels).
    deployment: Option<Arc<Deployment>>,
    /// Already counted (an RFC 8441 WebSocket is, once its 200 is out).
    counted: bool,
}

impl KanmonProxy {
    /// The application deciding with `routes`; RFC 8441 WebSockets run under `tunnels`.
    pub fn new(routes: Routes, tunnels: Tunnels) -> Self {
        Self { routes, tunnels }
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        r: Refusal,
    ) -> Result<bool> {
        ctx.refused = Some(r);
        // Counted under the deployment the SNI names, if it is one (see `accounting`).
        ctx.deployment = self.routes.named_deployment(sni_target(session));
        self.routes.refused(r);
        r.send(session).await?;
        Ok(true)
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

/// The client's address as the policy sees it: the TCP peer's, which for a connection from a
/// trusted balancer is the one its PROXY protocol header carried (`edge` put it there).
fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The request's host: `:authority` for HTTP/2, else the `Host` header; port stripped.
fn request_host(session: &Session) -> Option<&str> {
    let req = session.req_header();
    let raw = match req.uri.authority() {
        Some(a) => a.host(),
        None => req.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    Some(crate::h1::head::strip_port(raw))
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
            grpc: false,
            refused: None,
            deployment: None,
            counted: false,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The header has arrived: from here the read timeout guards the body.
        session.set_read_timeout(Some(self.routes.settings().request_read_timeout));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let connect = h2ws::connect_kind(session.req_header());
        if connect == Connect::Other {
            // CONNECT is allowed through pingora only for RFC 8441 WebSockets. Counted under
            // the deployment the SNI names, like every refusal.
            ctx.deployment = self.routes.named_deployment(sni_target(session));
            return h2ws::not_allowed(session).await;
        }
        let guard = match self.routes.route(
            sni_target(session),
            request_host(session),
            header_bytes(session),
            client_ip(session),
        ) {
            Ok(guard) => guard,
            Err(refusal) => return self.refuse(session, ctx, refusal).await,
        };
        // The console speaks HTTP only: its requests go to the console address whatever
        // their content type.
        ctx.grpc = !guard.is_console()
            && session
                .req_header()
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        ctx.deployment = Some(Arc::clone(guard.deployment()));
        ctx.guard = Some(guard);
        if connect == Connect::WebSocket {
            let client = client_ip(session);
            let (metrics, start) = (self.routes.metrics(), ctx.start);
            let dep = ctx.deployment.clone();
            let counted = &mut ctx.counted;
            let answered = |status| {
                RequestAccount::default().record(
                    metrics,
                    dep.as_ref(),
                    status,
                    start.elapsed().as_secs_f64(),
                );
                *counted = true;
            };
            return h2ws::serve(
                &self.routes,
                &self.tunnels,
                session,
                &mut ctx.guard,
                client,
                answered,
            )
            .await;
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
        // `guard.addr()`: the console address on a console connection.
        let addr = grpc.unwrap_or(guard.addr());
        let mut peer = HttpPeer::new(addr, false, String::new());
        let settings = self.routes.settings();
        peer.options.connection_timeout = Some(settings.connect_timeout);
        peer.options.idle_timeout = Some(settings.pool_idle_timeout);
        if grpc.is_some() {
            // gRPC nodes speak h2 in clear text (prior knowledge).
            peer.options.set_http_version(2, 2);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The same rule as the HTTP/1.1 lane's (`policy`).
        for name in policy::not_forwarded(&upstream.headers, false) {
            upstream.remove_header(&name);
        }
        for (name, value) in policy::edge_forwarded(client_ip(session)) {
            upstream.insert_header(name, value.to_string())?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if self
            .routes
            .connect_failed(&mut ctx.guard, &mut ctx.retried, &e)
        {
            e.set_retry(true);
        }
        e
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = match (session.response_written(), ctx.refused) {
            (Some(r), _) => r.status.as_u16(),
            (None, Some(r)) => r.status(),
            (None, None) => match e.map(|e| e.etype()) {
                Some(pingora::ErrorType::HTTPStatus(code)) => *code,
                Some(_) => 502,
                None => 0,
            },
        };
        if !ctx.counted {
            RequestAccount::default().record(
                self.routes.metrics(),
                ctx.deployment.as_ref(),
                status,
                ctx.start.elapsed().as_secs_f64(),
            );
        }
        match e {
            // A node failing a request is the operator's business.
            Some(e) if e.esource() == &pingora::ErrorSource::Upstream => {
                let (deployment, zone) = labels(ctx.deployment.as_deref());
                tracing::warn!(deployment, zone, status, error = %e, "request failed at the node");
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
