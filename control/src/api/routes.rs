//! The routing table: the one list of the API's routes. The router and the OpenAPI document are
//! both made from it (`utoipa_axum`), so a route is served exactly when it is documented.
//!
//! Adding an endpoint: put `#[utoipa::path(method, path = "...", responses(...))]` on the
//! handler and add one `.routes(routes!(module::handler))` line below (handlers of one path may
//! share a line; handlers of different paths must not). Never `.route(...)`: such a route
//! would be served undocumented, and `tests/api.rs` (`every_route_is_documented`) refuses it.

use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    admin, builds, console, deployments, logs, notify, openapi, operations, support, usage, users,
    App,
};

/// Liveness: the API answers (no token needed).
#[utoipa::path(get, path = "/healthz", tag = "platform", security(()),
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Every route of the API, with its documentation.
pub(super) fn table() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(openapi::document))
        .routes(routes!(admin::whoami))
        .routes(routes!(admin::versions))
        .routes(routes!(admin::zones))
        .routes(routes!(support::org_zones))
        .routes(routes!(support::enable_zone, support::disable_zone))
        .routes(routes!(users::create_user))
        .routes(routes!(admin::list_grants))
        .routes(routes!(users::rotate_token))
        .routes(routes!(users::disable_user))
        .routes(routes!(users::enable_user))
        .routes(routes!(admin::create_grant))
        .routes(routes!(admin::revoke_grant))
        .routes(routes!(admin::audit_all))
        .routes(routes!(deployments::list, deployments::create))
        .routes(routes!(
            deployments::show,
            deployments::edit,
            deployments::delete
        ))
        .routes(routes!(deployments::keys))
        .routes(routes!(deployments::audit))
        .routes(routes!(support::allow_downgrade))
        .routes(routes!(logs::logs))
        .routes(routes!(usage::usage))
        .routes(routes!(operations::list, operations::submit))
        .routes(routes!(operations::show))
        .routes(routes!(operations::download))
        .routes(routes!(builds::list, builds::create))
        .routes(routes!(builds::delete))
        .routes(routes!(builds::builds))
        .routes(routes!(builds::log))
        .routes(routes!(console::show, console::set_allow))
        .routes(routes!(notify::org_list, notify::org_create))
        .routes(routes!(notify::dep_list, notify::dep_create))
        .routes(routes!(notify::show, notify::remove))
        .routes(routes!(notify::deliveries))
}
