//! User routes (platform admins, or the user itself): create a user with its first token,
//! rotate a user's tokens, disable and enable a user. Tokens are shown once; the store keeps
//! only their hashes.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    answers::{NewToken, NewUser},
    error::{ApiError, ErrorBody},
    App, Body,
};
use crate::{
    runtime::{now, random_secret},
    store::{hash_token, User},
};

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

/// A fresh bearer token: what the caller gets once; the store keeps only its hash.
fn new_token() -> String {
    format!("kmn_{}", random_secret())
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
