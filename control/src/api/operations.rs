//! Operation routes: queue, list, show.

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use super::{deployments::Limit, error::ApiError, views, App, Body};
use crate::domain::{OpKind, Permission};

pub(super) async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    kind: Body<OpKind>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let action = match &kind {
        Ok(Json(k)) => format!("operations.{}", k.name()),
        Err(_) => "operations.submit".to_string(),
    };
    app.handle(&headers, &action, Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        let mut kind = super::body(kind)?;
        for p in kind.permissions() {
            cx.require(p, &dep)?;
        }
        super::builds::resolve_build(cx.app, &instance, &mut kind)?;
        let op = cx.app.rt.submit(&instance, kind, &cx.user.name)?;
        Ok((
            StatusCode::ACCEPTED,
            Json(views::operation(&op, &cx.sight(&dep))),
        ))
    })
}

/// `GET /v1/operations/{id}/download`: the database dump of export operation `id`, streamed
/// from its file, to a caller holding `export` on the deployment; audited like every action.
pub(super) async fn download(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let (file, bytes, instance) = app.handle(&headers, "exports.download", None, |cx| {
        let op = cx
            .app
            .rt
            .store()
            .op(id)?
            .ok_or_else(|| ApiError::not_found(format!("operation {id} not found")))?;
        cx.about(&op.instance);
        let dep = cx.deployment(&op.instance)?;
        cx.require(Permission::View, &dep)?;
        cx.require(Permission::Export, &dep)?;
        let Some((_, path)) = cx.app.rt.downloads().resolve(id) else {
            return Err(ApiError::not_found(format!(
                "operation {id} has no database dump, or its link has expired"
            )));
        };
        let file = std::fs::File::open(&path)
            .map_err(|_| ApiError::not_found(format!("the dump of operation {id} is gone")))?;
        let bytes = file.metadata().map_or(0, |m| m.len());
        cx.note(format!("operation {id}; {bytes} bytes"));
        Ok((file, bytes, op.instance))
    })?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let name = format!("{instance}-export-{id}.sql");
    let headers = [
        (header::CONTENT_TYPE, "application/sql".to_string()),
        (header::CONTENT_LENGTH, bytes.to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ),
    ];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
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
        let sight = cx.sight(&dep);
        let ops: Vec<Value> = cx
            .app
            .rt
            .store()
            .ops(&instance, limit.get())?
            .iter()
            .map(|o| views::operation(o, &sight))
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
        cx.about(&op.instance);
        let dep = cx.deployment(&op.instance)?;
        cx.require(Permission::View, &dep)?;
        Ok(Json(views::operation(&op, &cx.sight(&dep))))
    })
}
