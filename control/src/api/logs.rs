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
use serde_json::json;

use super::{error::ApiError, App};
use crate::{
    domain::Permission,
    driver::log_query::{search, LogQuery},
};

/// The query string of the logs route.
#[derive(Debug, Deserialize)]
pub(super) struct LogParams {
    q: Option<String>,
    severity: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    format: Option<String>,
}

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
        return Ok(Json(json!({ "lines": records })).into_response());
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
