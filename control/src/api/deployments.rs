//! Deployment routes: create, list, show, edit, delete, keys, audit.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use kanmon_router::{InstanceName, Zone};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error::ApiError, views, App, Body};
use crate::domain::{CreateDeployment, DeploymentEdit, DeploymentType, OpKind, Permission};

/// Body of `POST /v1/deployments`.
#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    instance: String,
    zone: String,
    #[serde(rename = "type")]
    kind: DeploymentType,
    version: String,
    #[serde(default = "default_scope")]
    org: String,
    #[serde(default = "default_scope")]
    title: String,
    #[serde(default = "one")]
    node_cpus: u32,
    #[serde(default = "one")]
    db_cpus: u32,
    delete_protection: Option<bool>,
}

fn default_scope() -> String {
    "default".into()
}

fn one() -> u32 {
    1
}

/// `?limit=` for logs.
#[derive(Debug, Deserialize)]
pub(super) struct Limit {
    limit: Option<u32>,
}

impl Limit {
    pub(super) fn get(&self) -> u32 {
        self.limit.unwrap_or(50).min(1000)
    }
}

pub(super) async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let instance = body.as_ref().ok().map(|Json(b)| b.instance.clone());
    app.handle(&headers, "deployments.create", instance.as_deref(), |cx| {
        let body = super::body(body)?;
        cx.require_title(Permission::Edit, &body.org, &body.title)?;
        let req = CreateDeployment {
            instance: InstanceName::parse(&body.instance)
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
            zone: Zone::parse(&body.zone).map_err(|e| ApiError::bad_request(e.to_string()))?,
            kind: body.kind,
            version: body
                .version
                .parse()
                .map_err(|e: kanmon_router::VersionError| ApiError::bad_request(e.to_string()))?,
            org: body.org.clone(),
            title: body.title.clone(),
            node_cpus: body.node_cpus,
            db_cpus: body.db_cpus,
            delete_protection: body.delete_protection,
        };
        let (dep, op) = cx.app.rt.create(req, &cx.user.name)?;
        let secrets = cx.has(Permission::Secrets, &dep);
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "deployment": views::deployment(&dep, secrets),
                "operation": views::operation(&op, &cx.sight(&dep)),
            })),
        ))
    })
}

pub(super) async fn list(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "deployments.list", None, |cx| {
        let visible: Vec<Value> = cx
            .app
            .rt
            .deployments()
            .iter()
            .filter(|d| !d.deleted && cx.has(Permission::View, d))
            .map(|d| views::deployment(d, cx.has(Permission::Secrets, d)))
            .collect();
        Ok(Json(json!({ "deployments": visible })))
    })
}

pub(super) async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "deployments.show", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let mut view = views::deployment(&dep, cx.has(Permission::Secrets, &dep));
        let queue: Vec<Value> = cx
            .app
            .rt
            .store()
            .unfinished_ops(&instance)?
            .iter()
            .map(|o| views::operation(o, &cx.sight(&dep)))
            .collect();
        view["queue"] = json!(queue);
        Ok(Json(view))
    })
}

pub(super) async fn edit(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<DeploymentEdit>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "deployments.edit", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Edit, &dep)?;
        let body = super::body(body)?;
        let dep = cx.app.rt.edit(&instance, &body)?;
        Ok(Json(views::deployment(
            &dep,
            cx.has(Permission::Secrets, &dep),
        )))
    })
}

pub(super) async fn delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.handle(&headers, "operations.delete", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Delete, &dep)?;
        let op = cx.app.rt.submit(&instance, OpKind::Delete, &cx.user.name)?;
        Ok((
            StatusCode::ACCEPTED,
            Json(views::operation(&op, &Default::default())),
        ))
    })
}

pub(super) async fn keys(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "keys.read", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Secrets, &dep)?;
        Ok(Json(json!({
            "server_key": dep.keys.server_key,
            "runtime_key": dep.keys.runtime_key,
        })))
    })
}

pub(super) async fn audit(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "audit.read", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let entries = cx.app.rt.store().audit_log(Some(&instance), limit.get())?;
        Ok(Json(json!({ "audit": entries })))
    })
}
