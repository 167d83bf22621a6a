//! Operation routes: queue, list, show.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use serde_json::{json, Value};

use super::{deployments::Limit, error::ApiError, views, App};
use crate::domain::{OpKind, Permission};

pub(super) async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Json(kind): Json<OpKind>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let action = format!("operations.{}", kind.name());
    app.handle(&headers, &action, Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(kind.permission(), &dep)?;
        if let OpKind::SetConfig { secret_config, .. } = &kind {
            if !secret_config.is_empty() {
                cx.require(Permission::Secrets, &dep)?;
            }
        }
        // An export also dumps the deployment's database when there is one (`kanmon up`).
        let attachment = if kind == OpKind::Export {
            blocking(|| cx.app.rt.export_database(&instance))
        } else {
            None
        };
        let op = cx
            .app
            .rt
            .submit_with(&instance, kind, &cx.user.name, attachment)?;
        let secrets = cx.has(Permission::Secrets, &dep);
        Ok((StatusCode::ACCEPTED, Json(views::operation(&op, secrets))))
    })
}

/// Runs blocking work (a `pg_dump`) without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `GET /v1/downloads/{token}`: a database dump behind an expiring link. The random token is
/// the credential (no bearer token needed), so the link can be handed to `curl` or a browser.
pub(super) async fn download(
    State(app): State<App>,
    Path(token): Path<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let Some((instance, path)) = app.rt.downloads().resolve(&token) else {
        return Err(ApiError::not_found(
            "no such download, or its link has expired".to_string(),
        ));
    };
    let body = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::not_found(format!("export file is gone: {e}")))?;
    tracing::info!(instance, bytes = body.len(), "database export downloaded");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export.sql".into());
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/sql".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    ))
}

pub(super) async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "operations.list", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let secrets = cx.has(Permission::Secrets, &dep);
        let ops: Vec<Value> = cx
            .app
            .rt
            .store()
            .ops(&instance, limit.get())?
            .iter()
            .map(|o| views::operation(o, secrets))
            .collect();
        Ok(Json(json!({ "operations": ops })))
    })
}

pub(super) async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "operations.show", None, |cx| {
        let op = cx
            .app
            .rt
            .store()
            .op(id)?
            .ok_or_else(|| ApiError::not_found(format!("operation {id} not found")))?;
        let dep = cx.deployment(&op.instance)?;
        cx.require(Permission::View, &dep)?;
        Ok(Json(views::operation(
            &op,
            cx.has(Permission::Secrets, &dep),
        )))
    })
}
