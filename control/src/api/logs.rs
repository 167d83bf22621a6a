//! `GET /v1/deployments/{instance}/logs`: search a deployment's node logs, or export them.
//!
//! The answer is JSON `{"lines": [record, …]}` (oldest first, the newest `limit`), or with
//! `format=ndjson` a download of the records, one per line, for a log tool or an archive.

use std::time::SystemTime;

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    answers::Logs,
    error::{ApiError, ErrorBody},
    App,
};
use crate::{
    domain::Permission,
    driver::{
        log_query::{search, LogQuery},
        node_log::Record,
    },
};

/// The query string of the logs route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogParams {
    /// Substring the line contains.
    q: Option<String>,
    /// Minimum severity: debug, info, warn, error.
    severity: Option<String>,
    /// RFC 3339 time or a duration ago (`10m`).
    since: Option<String>,
    /// RFC 3339 time or a duration ago.
    until: Option<String>,
    /// Newest lines returned (default 100, at most 100000).
    limit: Option<usize>,
    /// `json` (default) or `ndjson` (a download of the records).
    format: Option<String>,
}

/// Node log lines, oldest first: the newest `limit` that match.
///
/// With `format=ndjson` a download of the records, one JSON object a line. Needs `view`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/logs", tag = "deployments",
    params(("instance" = String, Path, description = "Instance name"), LogParams),
    responses(
        (status = 200, description = "The lines", content(
            (Logs = "application/json"),
            (Record = "application/x-ndjson"),
        )),
        (status = 400, description = "Bad query (JSON), or a query parameter of the wrong type (plain text, from the router)", content((ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such deployment, or the driver keeps no node logs", body = ErrorBody),
        (status = 500, description = "The log files could not be read", body = ErrorBody),
    ))]

pub(super) async fn logs(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
    let (dir, query, ndjson) = app.handle(&headers, "logs.read", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let ndjson = match params.format.as_deref() {
            None | Some("json") => false,
            Some("ndjson") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "format: {other:?} is not one of json, ndjson"
                )))
            }
        };
        let query = LogQuery::parse(
            params.q.as_deref(),
            params.severity.as_deref(),
            params.since.as_deref(),
            params.until.as_deref(),
            params.limit,
            SystemTime::now(),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let Some(root) = cx.app.rt.settings().node_logs.clone() else {
            return Err(ApiError::not_found(
                "this control plane's driver keeps no node logs (Kubernetes: kubectl logs)",
            ));
        };
        if ndjson {
            cx.note("export".to_string());
        }
        Ok((root.join(&instance), query, ndjson))
    })?;
    // Reading up to a few hundred MiB of files: off the async workers.
    let records = tokio::task::spawn_blocking(move || search(&dir, &query))
        .await
        .map_err(|e| internal(format!("log search: {e}")))?
        .map_err(|e| internal(format!("reading node logs: {e}")))?;
    if !ndjson {
        return Ok(Json(Logs { lines: records }).into_response());
    }
    let mut body = Vec::new();
    for r in &records {
        body.extend(r.to_line());
    }
    let headers = [
        (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{instance}-logs.ndjson\""),
        ),
    ];
    Ok((headers, body).into_response())
}

/// A 500 for a search that failed after the request was accepted.
fn internal(message: String) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        message,
        missing: None,
        audit_detail: None,
    }
}
