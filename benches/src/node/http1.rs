//! HTTP/1.1 side of the node: `/healthcheck`, the catch-all route and the `/ws` upgrade.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{room, ws, Shared};

/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Surface {
    /// The HTTP API and `/ws`.
    Api,
    /// The console (Nakama's 7351).
    Console,
}

pub(super) async fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    surface: Surface,
) {
    match tls {
        None => serve_io(stream, shared, surface).await,
        Some(acceptor) => {
            // Handshake failures are the client's business (the load harness counts them).
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            if let Ok(Ok(tls_stream)) = handshake.await {
                serve_io(tls_stream, shared, surface).await;
            }
        }
    }
}

async fn serve_io<IO>(io: IO, shared: Arc<Shared>, surface: Surface)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move {
            Ok::<_, Infallible>(match surface {
                Surface::Api => handle(req, &shared),
                Surface::Console => console(&req, &shared),
            })
        }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        // Connection errors (resets, half-open clients) are normal under load; nothing to do.
        _res = conn.as_mut() => {}
        () = shared.stopping() => {
            conn.as_mut().graceful_shutdown();
            let _finished_or_reset = conn.await;
        }
    }
}

fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/ws" {
        if !shared.received.allows(req.headers(), req.uri()) {
            // Nakama answers a missing or wrong server key with 401 before any upgrade.
            return plain(
                StatusCode::UNAUTHORIZED,
                "server key required (HTTP Basic username or ?server_key=)\n",
                shared,
            );
        }
        return match ws::accept_key(&req) {
            Some(accept) => match room::requested(req.uri().query()) {
                None => upgrade(req, accept, None, shared),
                Some(name) => match shared.rooms.join(name) {
                    Ok(member) => upgrade(req, accept, Some(member), shared),
                    Err(e @ room::JoinError::BadName) => {
                        plain_owned(StatusCode::BAD_REQUEST, e, shared)
                    }
                    Err(e) => plain_owned(StatusCode::SERVICE_UNAVAILABLE, e, shared),
                },
            },
            None => plain(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket upgrade\n",
                shared,
            ),
        };
    }
    shared.stats.http_requests.fetch_add(1, Ordering::Relaxed);
    if req.uri().path() == "/kanmon/received" && req.method() == Method::GET {
        let body = serde_json::json!({ "node": shared.id, "received": shared.received.report });
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert("x-node-id", shared.id_header.clone());
        return resp;
    }
    if req.uri().path() == "/healthcheck" && req.method() == Method::GET {
        let mut resp = Response::new(Full::new(shared.health_body.clone()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert("x-node-id", shared.id_header.clone());
        return resp;
    }
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(shared.id.as_bytes())));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp.headers_mut()
        .insert("x-node-id", shared.id_header.clone());
    resp
}

/// The demo console: one small page naming the node and the path asked for.
fn console(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    shared
        .stats
        .console_requests
        .fetch_add(1, Ordering::Relaxed);
    let body = serde_json::json!({
        "console": true,
        "node": shared.id,
        "path": req.uri().path(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-node-id", shared.id_header.clone());
    h.insert("x-console", HeaderValue::from_static("1"));
    resp
}

fn plain(status: StatusCode, body: &'static str, shared: &Shared) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("x-node-id", shared.id_header.clone());
    resp
}

/// A plain-text error answer naming why (`JoinError` texts hold no client input).
fn plain_owned(status: StatusCode, why: room::JoinError, shared: &Shared) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{why}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("x-node-id", shared.id_header.clone());
    resp
}

fn upgrade(
    req: Request<Incoming>,
    accept: String,
    member: Option<room::Membership>,
    shared: &Arc<Shared>,
) -> Response<Full<Bytes>> {
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return plain(StatusCode::BAD_REQUEST, "bad key\n", shared);
    };
    let shared_ws = shared.clone();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => ws::run(TokioIo::new(upgraded), member, shared_ws).await,
            Err(e) => tracing::warn!(error = %e, "upgrade failed"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    h.insert("x-node-id", shared.id_header.clone());
    resp
}
