//! Platform routes: identity, catalogs, users, grants, the global audit log.

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use kanmon_router::Support;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{deployments::Limit, error::ApiError, App};
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
}

pub(super) async fn create_user(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<UserBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.handle(&headers, "users.create", None, |cx| {
        cx.require_admin()?;
        if body.name.is_empty() || body.name.len() > 64 || body.name == "anonymous" {
            return Err(ApiError::bad_request(
                "user name must be 1-64 characters and not 'anonymous'",
            ));
        }
        let user = User {
            name: body.name.clone(),
            service: body.service,
            admin: body.admin,
            created_at: now(),
        };
        cx.app.rt.store().create_user(&user)?;
        let token = format!("kmn_{}", random_secret());
        cx.app
            .rt
            .store()
            .add_token(&user.name, &hash_token(&token))?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "user": user, "token": token })),
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
    Json(body): Json<GrantBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.handle(&headers, "grants.create", None, |cx| {
        cx.require_admin()?;
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
