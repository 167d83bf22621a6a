//! The HTTP JSON API (`kanmon serve`). Bearer-token authentication on every route but
//! `/openapi.json` and `/healthz`; every authenticated request checked and audited, every
//! refused authentication counted (see [`context`], [`refusals`]).

mod admin;
mod answers;
mod builds;
pub mod console;
pub mod context;
mod deployments;
pub mod error;
mod logs;
mod notify;
pub mod openapi;
mod operations;
pub mod refusals;
mod routes;
mod support;
pub mod tls;
mod usage;
mod users;
mod views;

use std::sync::Arc;

use axum::{extract::rejection::JsonRejection, Json, Router};

pub use error::ApiError;

use crate::runtime::Runtime;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct App {
    /// The control plane.
    pub rt: Runtime,
    /// Refused authentications (exported as [`refusals::AUTH_FAILURES_TOTAL`]).
    pub auth_failures: Arc<refusals::AuthFailures>,
}

impl App {
    /// The handlers' state over `rt`, with a fresh refusal counter.
    pub fn new(rt: Runtime) -> Self {
        Self {
            rt,
            auth_failures: Arc::default(),
        }
    }
}

/// A JSON body whose refusal is answered inside [`App::handle`], so that bad input from a
/// known caller is an audited refusal and an unknown caller still gets 401 first.
pub(crate) type Body<T> = Result<Json<T>, JsonRejection>;

/// The decoded body, or the 400 for it.
pub(crate) fn body<T>(b: Body<T>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| ApiError::bad_body(&e))
}

/// Every route of the API.
pub fn router(rt: Runtime) -> Router {
    router_for(App::new(rt))
}

/// Every route of the API over `app` (whose counters the caller keeps a handle to), from the
/// one routing table that also makes the OpenAPI document ([`routes`]).
pub fn router_for(app: App) -> Router {
    let (router, _) = routes::table().split_for_parts();
    router.with_state(app)
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, rt: Runtime) -> std::io::Result<()> {
    axum::serve(listener, router(rt)).await
}

/// Serves the API over TLS with `config` on `listener` until the process ends.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: App,
) -> std::io::Result<()> {
    axum::serve(tls::TlsListener::new(listener, config)?, router_for(app)).await
}

/// Why the API refuses to listen where it was asked to.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve the API in plain HTTP on {0}, which is not a loopback address: bearer \
     tokens would cross the network in clear. Give --tls-cert and --tls-key, or \
     --insecure-http if something else encrypts the traffic"
)]
pub struct PlainHttpRefused(pub std::net::SocketAddr);

/// Plain HTTP only on loopback, unless the operator explicitly accepts it (`--insecure-http`,
/// e.g. behind a TLS-terminating sidecar).
pub fn check_plain_http(addr: std::net::SocketAddr, allowed: bool) -> Result<(), PlainHttpRefused> {
    if addr.ip().is_loopback() || allowed {
        Ok(())
    } else {
        Err(PlainHttpRefused(addr))
    }
}
