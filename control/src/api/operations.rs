//! Operation routes: queue, list, show.

use super::{
    answers::Operations,
    deployments::Limit,
    error::{ApiError, ErrorBody},
    views, App, Body,
};
use crate::domain::{OpKind, Operation, Permission};
use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

/// Queue an operation.
///
/// Needs `deploy` (deploy, reboot; rotate-key with `secrets` too), `scale`, `edit` (set-vars,
/// set-config; plus `secrets` for setting or removing secret config), `export` or `delete`.
/// `certificate` operations are queued by the control plane only (400 here).
#[utoipa::path(post, path = "/v1/deployments/{instance}/operations", tag = "operations", operation_id = "submit_operation",
    params(("instance" = String, Path, description = "Instance name")), request_body = OpKind,
    responses(
        (status = 202, description = "The queued operation", body = Operation),
        (status = 400, description = "Bad body, or a `certificate` operation (only the control plane queues those)", body = ErrorBody),
        (status = 403, description = "Missing a permission the operation needs", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "Refused by a rule: downgrade, database CPUs lowered, delete protection, deleted", body = ErrorBody),
        (status = 422, description = "Refused by a rule: unsupported version, CPUs out of range, bad key", body = ErrorBody),
    ))]
pub(super) async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    kind: Body<OpKind>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    let action = match &kind {
        Ok(Json(k)) => format!("operations.{}", k.name()),
        Err(_) => "operations.submit".to_string(),
    };
    app.handle(&headers, &action, Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        let mut kind = super::body(kind)?;
        if kind == OpKind::Certificate {
            // Issuances draw on the one CA account every tenant shares (orders, duplicate
            // certificates per week): only the control plane queues them.
            return Err(ApiError::bad_request(
                "certificate operations are queued by the control plane (on create and for renewals)",
            ));
        }
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

/// The database dump of an export operation (`result.database.download`), streamed.
///
/// The file is deleted when its link expires (15 minutes). Needs `view` and `export` on the
/// deployment; audited like every action.
#[utoipa::path(get, path = "/v1/operations/{id}/download", tag = "operations", operation_id = "download_export",
    params(("id" = u64, Path, description = "Operation id")),
    responses(
        (status = 200, description = "The pg_dump SQL file", content_type = "application/sql", body = String),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Missing `view` or `export`", body = ErrorBody),
        (status = 404, description = "No such operation, no dump, or its link has expired", body = ErrorBody),
    ))]
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

/// The deployment's operations, newest first.
///
/// Needs `view`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/operations", tag = "operations", operation_id = "list_operations",
    params(("instance" = String, Path, description = "Instance name"), Limit),
    responses(
        (status = 200, description = "Operations", body = Operations),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Operations>, ApiError> {
    app.handle(&headers, "operations.list", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let sight = cx.sight(&dep);
        let operations = cx
            .app
            .rt
            .store()
            .ops(&instance, limit.get())?
            .iter()
            .map(|o| views::operation(o, &sight))
            .collect();
        Ok(Json(Operations { operations }))
    })
}

/// One operation with its status and progress.
///
/// Needs `view` on its deployment.
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", operation_id = "show_operation",
    params(("id" = u64, Path, description = "Operation id")),
    responses(
        (status = 200, description = "The operation", body = Operation),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such operation", body = ErrorBody),
    ))]
pub(super) async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Operation>, ApiError> {
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
