//! Platform routes: identity, catalogs, users, grants, the global audit log.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use kanmon_router::Support;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    answers::{Audit, Grants, NewToken, NewUser, VersionEntry, Versions, Whoami, ZoneEntry, Zones},
    deployments::Limit,
    error::{ApiError, ErrorBody},
    App, Body,
};
use crate::{
    domain::{Grant, PermissionSet, Scope},
    runtime::{now, random_secret},
    store::{hash_token, User},
};

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

/// Body of `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct UserBody {
    /// 1-64 characters, not `anonymous`.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    /// A service user (CI, bots) rather than a person.
    #[serde(default)]
    service: bool,
    /// May manage users and grants.
    #[serde(default)]
    admin: bool,
    /// Token lifetime (`90d`, `12h`, or `never`); default 90 days.
    expires_in: Option<String>,
}

/// `?expires_in=` of a token rotation.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Expiry {
    /// Lifetime of the new token (`90d`, `12h`, or `never`); default 90 days.
    expires_in: Option<String>,
}

/// How long a token works when the request does not say: long enough for a CI secret's
/// rotation cycle, short enough that a forgotten leaked token dies on its own.
pub(super) const DEFAULT_TOKEN_TTL: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

/// When a token issued now stops working: `None` for `never`.
fn expiry(expires_in: Option<&str>) -> Result<Option<crate::domain::Timestamp>, ApiError> {
    let ttl = match expires_in.map(str::trim) {
        None => DEFAULT_TOKEN_TTL,
        Some("never") => return Ok(None),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            ApiError::bad_request(format!("expires_in: {e} (use e.g. 90d, 12h or never)"))
        })?,
    };
    if ttl.is_zero() {
        return Err(ApiError::bad_request("expires_in must be longer than zero"));
    }
    Ok(Some(now().after(ttl)))
}

/// Create a user or service user; its token is returned once.
///
/// Needs `admin`.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = UserBody,
    responses(
        (status = 201, description = "The user and its token (secret, shown only here)", body = NewUser),
        (status = 400, description = "Bad body, name or expires_in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    ))]
pub(super) async fn create_user(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body<UserBody>,
) -> Result<(StatusCode, Json<NewUser>), ApiError> {
    app.handle(&headers, "users.create", None, |cx| {
        cx.require_admin()?;
        let body = super::body(body)?;
        if body.name.is_empty() || body.name.len() > 64 || body.name == "anonymous" {
            return Err(ApiError::bad_request(
                "user name must be 1-64 characters and not 'anonymous'",
            ));
        }
        let expires_at = expiry(body.expires_in.as_deref())?;
        let user = User {
            name: body.name.clone(),
            service: body.service,
            admin: body.admin,
            created_at: now(),
            disabled: false,
        };
        cx.app.rt.store().create_user(&user)?;
        let token = new_token();
        cx.app
            .rt
            .store()
            .add_token(&user.name, &hash_token(&token), expires_at)?;
        cx.note(format!("user {}", user.name));
        Ok((
            StatusCode::CREATED,
            Json(NewUser {
                user,
                token,
                expires_at,
            }),
        ))
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

/// A fresh bearer token: what the caller gets once; the store keeps only its hash.
fn new_token() -> String {
    format!("kmn_{}", random_secret())
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

/// Rotate: replace every token of the user with a new one, returned once.
///
/// The way out when a token leaked: the old tokens stop working at once (rotating one's own
/// token ends the session that asked). Needs `admin`, or the user itself.
#[utoipa::path(post, path = "/v1/users/{name}/token", tag = "users",
    params(("name" = String, Path, description = "User name"), Expiry),
    responses(
        (status = 200, description = "The new token (secret, shown only here)", body = NewToken),
        (status = 400, description = "Bad expires_in (JSON), or a query parameter of the wrong type (plain text, from the router)", content((ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 403, description = "Neither admin nor the user", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub(super) async fn rotate_token(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(ttl): Query<Expiry>,
) -> Result<Json<NewToken>, ApiError> {
    app.handle(&headers, "tokens.rotate", None, |cx| {
        cx.require_admin_or_self(&name)?;
        let expires_at = expiry(ttl.expires_in.as_deref())?;
        let token = new_token();
        let removed = cx
            .app
            .rt
            .store()
            .rotate_tokens(&name, &hash_token(&token), expires_at)?;
        cx.note(format!("user {name}; {removed} old token(s) revoked"));
        Ok(Json(NewToken {
            user: name.clone(),
            token,
            expires_at,
        }))
    })
}

/// Disable a user: its tokens are refused from its next request on.
///
/// Needs `admin` (and not oneself).
#[utoipa::path(post, path = "/v1/users/{name}/disable", tag = "users",
    params(("name" = String, Path, description = "User name")),
    responses(
        (status = 204, description = "Disabled"),
        (status = 400, description = "An admin disabling itself", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub(super) async fn disable_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_disabled(&app, &headers, &name, true)
}

/// Enable a disabled user again.
///
/// Needs `admin`.
#[utoipa::path(post, path = "/v1/users/{name}/enable", tag = "users",
    params(("name" = String, Path, description = "User name")),
    responses(
        (status = 204, description = "Enabled"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub(super) async fn enable_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_disabled(&app, &headers, &name, false)
}

/// Disables or enables `name` (admin; an admin cannot disable itself).
fn set_disabled(
    app: &App,
    headers: &HeaderMap,
    name: &str,
    disabled: bool,
) -> Result<StatusCode, ApiError> {
    let state = if disabled { "disable" } else { "enable" };
    app.handle(headers, &format!("users.{state}"), None, |cx| {
        cx.require_admin()?;
        if disabled && cx.user.name == name {
            return Err(ApiError::bad_request(
                "you cannot disable yourself (another admin can)",
            ));
        }
        cx.app.rt.store().set_disabled(name, disabled)?;
        cx.note(format!("user {name}"));
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
