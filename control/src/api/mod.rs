//! The HTTP JSON API (`kanmon serve`). Bearer-token authentication on every route but
//! `/openapi.json` and `/healthz`; every authenticated request checked and audited, every
//! refused authentication counted (see [`context`], [`refusals`]).

mod admin;
mod builds;
pub mod context;
mod deployments;
pub mod error;
mod logs;
mod openapi;
mod operations;
pub mod refusals;
mod support;
pub mod tls;
mod usage;
mod views;

use std::sync::Arc;

use axum::{
    extract::rejection::JsonRejection,
    routing::{delete, get, post, put},
    Json, Router,
};

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

/// Every route of the API over `app` (whose counters the caller keeps a handle to).
pub fn router_for(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi::document))
        .route("/v1/whoami", get(admin::whoami))
        .route("/v1/versions", get(admin::versions))
        .route("/v1/zones", get(admin::zones))
        .route("/v1/orgs/{org}/zones", get(support::org_zones))
        .route(
            "/v1/orgs/{org}/zones/{zone}",
            put(support::enable_zone).delete(support::disable_zone),
        )
        .route("/v1/users", post(admin::create_user))
        .route("/v1/users/{name}/grants", get(admin::list_grants))
        .route("/v1/users/{name}/token", post(admin::rotate_token))
        .route("/v1/users/{name}/{state}", post(admin::set_disabled))
        .route("/v1/grants", post(admin::create_grant))
        .route("/v1/grants/{id}", delete(admin::revoke_grant))
        .route("/v1/audit", get(admin::audit_all))
        .route(
            "/v1/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/v1/deployments/{instance}",
            get(deployments::show)
                .patch(deployments::edit)
                .delete(deployments::delete),
        )
        .route("/v1/deployments/{instance}/keys", get(deployments::keys))
        .route("/v1/deployments/{instance}/audit", get(deployments::audit))
        .route(
            "/v1/deployments/{instance}/downgrade-allowance",
            post(support::allow_downgrade),
        )
        .route("/v1/deployments/{instance}/logs", get(logs::logs))
        .route("/v1/deployments/{instance}/usage", get(usage::usage))
        .route(
            "/v1/deployments/{instance}/builders",
            get(builds::list).post(builds::create),
        )
        .route(
            "/v1/deployments/{instance}/builders/{name}",
            delete(builds::delete),
        )
        .route("/v1/deployments/{instance}/builds", get(builds::builds))
        .route(
            "/v1/deployments/{instance}/builds/{id}/log",
            get(builds::log),
        )
        .route(
            "/v1/deployments/{instance}/operations",
            get(operations::list).post(operations::submit),
        )
        .route("/v1/operations/{id}", get(operations::show))
        .route("/v1/operations/{id}/download", get(operations::download))
        .with_state(app)
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
