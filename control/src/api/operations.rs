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
        let op = cx.app.rt.submit(&instance, kind, &cx.user.name)?;
        let secrets = cx.has(Permission::Secrets, &dep);
        Ok((StatusCode::ACCEPTED, Json(views::operation(&op, secrets))))
    })
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
