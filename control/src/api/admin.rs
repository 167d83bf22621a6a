//! Platform routes: identity, catalogs, grants, the global audit log (users: [`super::users`]).

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use kanmon_router::Support;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    answers::{Audit, Grants, VersionEntry, Versions, Whoami, ZoneEntry, Zones},
    deployments::Limit,
    error::{ApiError, ErrorBody},
    App, Body,
};
use crate::domain::{Grant, PermissionSet, Scope};

/// The caller and its grants.
///
/// Any valid token.
#[utoipa::path(get, path = "/v1/whoami", tag = "platform",
    responses((status = 200, description = "The caller", body = Whoami)))]
pub(super) async fn whoami(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Whoami>, ApiError> {
    app.handle(&headers, "whoami", None, |cx| {
        let grants = cx.app.rt.store().grants(&cx.user.name)?;
        Ok(Json(Whoami {
            user: cx.user.clone(),
            grants,
        }))
    })
}

/// Released versions with their support status, newest first.
///
/// Any valid token.
#[utoipa::path(get, path = "/v1/versions", tag = "platform",
    responses((status = 200, description = "The version catalog", body = Versions)))]
pub(super) async fn versions(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Versions>, ApiError> {
    app.handle(&headers, "versions.list", None, |cx| {
        let catalog = &cx.app.rt.settings().catalog;
        let latest = catalog.latest().copied();
        let versions = catalog
            .versions()
            .iter()
            .rev()
            .map(|v| {
                let support = match catalog.support(v) {
                    Support::Supported => "supported",
                    Support::Unsupported => "unsupported",
                    Support::Unknown => "unknown",
                };
                VersionEntry {
                    version: v.to_string(),
                    support,
                    latest: Some(*v) == latest,
                }
            })
            .collect();
        Ok(Json(Versions { versions }))
    })
}

/// The zone catalog (on-request zones are offered only to the organizations they are enabled
/// for: see `GET /v1/orgs/{org}/zones`).
///
/// Any valid token.
#[utoipa::path(get, path = "/v1/zones", tag = "platform",
    responses((status = 200, description = "The zone catalog", body = Zones)))]
pub(super) async fn zones(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Zones>, ApiError> {
    app.handle(&headers, "zones.list", None, |cx| {
        let zones = cx
            .app
            .rt
            .settings()
            .zones
            .iter()
            .map(|(z, on_request)| ZoneEntry {
                zone: z.as_str().to_string(),
                on_request: *on_request,
            })
            .collect();
        Ok(Json(Zones { zones }))
    })
}

/// Body of `POST /v1/grants`.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct GrantBody {
    /// An existing user.
    user: String,
    /// Organization (`org` `*` = every organization), title or deployment.
    scope: Scope,
    #[schema(value_type = Vec<crate::domain::Permission>)]
    permissions: PermissionSet,
}

/// Grant permissions at organization, title or deployment level.
///
/// Needs `admin`.
#[utoipa::path(post, path = "/v1/grants", tag = "users", request_body = GrantBody,
    responses(
        (status = 201, description = "The grant", body = Grant),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub(super) async fn create_grant(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body<GrantBody>,
) -> Result<(StatusCode, Json<Grant>), ApiError> {
    app.handle(&headers, "grants.create", None, |cx| {
        cx.require_admin()?;
        let body = super::body(body)?;
        if !cx.app.rt.store().user_exists(&body.user)? {
            return Err(ApiError::not_found(format!(
                "user {:?} not found",
                body.user
            )));
        }
        let grant = Grant {
            user: body.user.clone(),
            scope: body.scope.clone(),
            permissions: body.permissions,
        };
        cx.app.rt.store().add_grant(&grant)?;
        Ok((StatusCode::CREATED, Json(grant)))
    })
}

/// The user's grants with their ids (what `DELETE /v1/grants/{id}` takes).
///
/// Needs `admin`, or the user itself.
#[utoipa::path(get, path = "/v1/users/{name}/grants", tag = "users",
    params(("name" = String, Path, description = "User name")),
    responses(
        (status = 200, description = "The grants", body = Grants),
        (status = 403, description = "Neither admin nor the user", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub(super) async fn list_grants(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Grants>, ApiError> {
    app.handle(&headers, "grants.list", None, |cx| {
        // Permission before existence, so non-admins cannot probe which users exist.
        cx.require_admin_or_self(&name)?;
        let store = cx.app.rt.store();
        if !store.user_exists(&name)? {
            return Err(ApiError::not_found(format!("user {name:?} not found")));
        }
        cx.note(format!("user {name}"));
        Ok(Json(Grants {
            grants: store.grants_with_ids(&name)?,
        }))
    })
}

/// Revoke a grant; it stops working from the user's next request on.
///
/// Needs `admin`.
#[utoipa::path(delete, path = "/v1/grants/{id}", tag = "users",
    params(("id" = u64, Path, description = "Grant id (from `GET /v1/users/{name}/grants`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such grant", body = ErrorBody),
    ))]
pub(super) async fn revoke_grant(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    app.handle(&headers, "grants.revoke", None, |cx| {
        cx.require_admin()?;
        if !cx.app.rt.store().revoke_grant(id)? {
            return Err(ApiError::not_found(format!("grant {id} not found")));
        }
        cx.note(format!("grant {id}"));
        Ok(StatusCode::NO_CONTENT)
    })
}

/// The platform's audit log, newest first.
///
/// Needs `admin`.
#[utoipa::path(get, path = "/v1/audit", tag = "platform", params(Limit),
    responses(
        (status = 200, description = "Audit records", body = Audit),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub(super) async fn audit_all(
    State(app): State<App>,
    headers: HeaderMap,
    Query(limit): Query<Limit>,
) -> Result<Json<Audit>, ApiError> {
    app.handle(&headers, "audit.read", None, |cx| {
        cx.require_admin()?;
        Ok(Json(Audit {
            audit: cx.app.rt.store().audit_log(None, limit.get())?,
        }))
    })
}
