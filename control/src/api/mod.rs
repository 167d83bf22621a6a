//! The HTTP JSON API (`kanmon serve`). Bearer-token authentication on every route but
//! `/openapi.json`, `/healthz` and `/v1/downloads/{token}` (the expiring token is the
//! credential); every request checked and audited (see [`context`]).

mod admin;
pub mod context;
mod deployments;
pub mod error;
mod openapi;
mod operations;
mod views;

use axum::{
    routing::{delete, get, post},
    Router,
};

pub use error::ApiError;

use crate::runtime::Runtime;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct App {
    /// The control plane.
    pub rt: Runtime,
}

/// Every route of the API.
pub fn router(rt: Runtime) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi::document))
        .route("/v1/whoami", get(admin::whoami))
        .route("/v1/versions", get(admin::versions))
        .route("/v1/zones", get(admin::zones))
        .route("/v1/users", post(admin::create_user))
        .route("/v1/users/{name}/grants", get(admin::list_grants))
        .route("/v1/users/{name}/token", post(admin::rotate_token))
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
            "/v1/deployments/{instance}/operations",
            get(operations::list).post(operations::submit),
        )
        .route("/v1/operations/{id}", get(operations::show))
        .route("/v1/downloads/{token}", get(operations::download))
        .with_state(App { rt })
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, rt: Runtime) -> std::io::Result<()> {
    axum::serve(listener, router(rt)).await
}
