//! Platform routes: identity, catalogs, users, grants, the global audit log.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use kanmon_router::Support;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{deployments::Limit, error::ApiError, App, Body};
use crate::{
    domain::{Grant, PermissionSet, Scope},
    runtime::{now, random_secret},
    store::{hash_token, User},
};

pub(super) async fn whoami(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "whoami", None, |cx| {
        let grants = cx.app.rt.store().grants(&cx.user.name)?;
        Ok(Json(json!({ "user": cx.user, "grants": grants })))
    })
}

pub(super) async fn versions(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "versions.list", None, |cx| {
        let catalog = &cx.app.rt.settings().catalog;
        let latest = catalog.latest().copied();
        let versions: Vec<Value> = catalog
            .versions()
            .iter()
            .rev()
            .map(|v| {
                let support = match catalog.support(v) {
                    Support::Supported => "supported",
                    Support::Unsupported => "unsupported",
                    Support::Unknown => "unknown",
                };
                json!({ "version": v.to_string(), "support": support, "latest": Some(*v) == latest })
            })
            .collect();
        Ok(Json(json!({ "versions": versions })))
    })
}

pub(super) async fn zones(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "zones.list", None, |cx| {
        let zones: Vec<Value> = cx
            .app
            .rt
            .settings()
            .zones
            .iter()
            .map(|(z, on_request)| json!({ "zone": z.as_str(), "on_request": on_request }))
            .collect();
        Ok(Json(json!({ "zones": zones })))
    })
}

/// Body of `POST /v1/users`.
#[derive(Debug, Deserialize)]
pub(super) struct UserBody {
    name: String,
    #[serde(default)]
    service: bool,
    #[serde(default)]
    admin: bool,
    /// Token lifetime (`90d`, `12h`, or `never`); default [`DEFAULT_TOKEN_TTL`].
    expires_in: Option<String>,
}

/// `?expires_in=` of a token rotation.
#[derive(Debug, Deserialize)]
pub(super) struct Expiry {
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

pub(super) async fn create_user(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body<UserBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
            Json(json!({ "user": user, "token": token, "expires_at": expires_at })),
        ))
    })
}

/// Body of `POST /v1/grants`.
#[derive(Debug, Deserialize)]
pub(super) struct GrantBody {
    user: String,
    scope: Scope,
    permissions: PermissionSet,
}

pub(super) async fn create_grant(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body<GrantBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Ok((StatusCode::CREATED, Json(json!(grant))))
    })
}

/// A fresh bearer token: what the caller gets once; the store keeps only its hash.
fn new_token() -> String {
    format!("kmn_{}", random_secret())
}

/// `GET /v1/users/{name}/grants`: the ids are what `DELETE /v1/grants/{id}` needs.
pub(super) async fn list_grants(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "grants.list", None, |cx| {
        // Permission before existence, so non-admins cannot probe which users exist.
        cx.require_admin_or_self(&name)?;
        let store = cx.app.rt.store();
        if !store.user_exists(&name)? {
            return Err(ApiError::not_found(format!("user {name:?} not found")));
        }
        cx.note(format!("user {name}"));
        Ok(Json(json!({ "grants": store.grants_with_ids(&name)? })))
    })
}

/// `DELETE /v1/grants/{id}`.
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

/// `POST /v1/users/{name}/token`: replaces every token of the user with a new one, the way
/// out when a token leaked. Rotating one's own token ends the session that asked.
pub(super) async fn rotate_token(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(ttl): Query<Expiry>,
) -> Result<Json<Value>, ApiError> {
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
        Ok(Json(
            json!({ "user": name, "token": token, "expires_at": expires_at }),
        ))
    })
}

/// `POST /v1/users/{name}/disable` and `/enable` (admin): a disabled user's tokens are refused
/// from its next request on.
pub(super) async fn set_disabled(
    State(app): State<App>,
    headers: HeaderMap,
    Path((name, state)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let disabled = match state.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(ApiError::not_found(format!("no such route: {state}"))),
    };
    app.handle(&headers, &format!("users.{state}"), None, |cx| {
        cx.require_admin()?;
        if disabled && cx.user.name == name {
            return Err(ApiError::bad_request(
                "you cannot disable yourself (another admin can)",
            ));
        }
        cx.app.rt.store().set_disabled(&name, disabled)?;
        cx.note(format!("user {name}"));
        Ok(StatusCode::NO_CONTENT)
    })
}

pub(super) async fn audit_all(
    State(app): State<App>,
    headers: HeaderMap,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "audit.read", None, |cx| {
        cx.require_admin()?;
        Ok(Json(
            json!({ "audit": cx.app.rt.store().audit_log(None, limit.get())? }),
        ))
    })
}
