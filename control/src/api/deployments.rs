//! Deployment routes: create, list, show, edit, delete, keys, audit.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use kanmon_router::{InstanceName, Zone};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    answers::{Audit, Created, Deployments, Keys},
    error::{ApiError, ErrorBody},
    views::{self, DeploymentView},
    App, Body,
};
use crate::domain::{CreateDeployment, DeploymentEdit, DeploymentType, OpKind, Permission};

/// Body of `POST /v1/deployments`.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct CreateBody {
    /// Permanent: a DNS label, unique on the platform.
    #[schema(pattern = "^[a-z][a-z0-9-]{1,61}[a-z0-9]$")]
    instance: String,
    /// Permanent: a zone of the catalog.
    #[schema(min_length = 1)]
    zone: String,
    /// Permanent.
    #[serde(rename = "type")]
    kind: DeploymentType,
    /// A supported version.
    #[schema(min_length = 1)]
    version: String,
    /// Organization (permission scope); default `default`.
    #[serde(default = "default_scope")]
    org: String,
    /// Title within the organization (permission scope); default `default`.
    #[serde(default = "default_scope")]
    title: String,
    /// Node CPUs (production: one node per CPU); default 1.
    #[serde(default = "one")]
    #[schema(minimum = 1)]
    node_cpus: u32,
    /// Database CPUs; default 1.
    #[serde(default = "one")]
    #[schema(minimum = 1)]
    db_cpus: u32,
    /// Default: on for production.
    delete_protection: Option<bool>,
}

fn default_scope() -> String {
    "default".into()
}

fn one() -> u32 {
    1
}

/// `?limit=` of the audit and operations lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Limit {
    /// Newest records returned (default 50, at most 1000).
    limit: Option<u32>,
}

impl Limit {
    pub(super) fn get(&self) -> u32 {
        self.limit.unwrap_or(50).min(1000)
    }
}

/// Create a deployment and queue its first deploy.
///
/// Needs `edit` on the title.
#[utoipa::path(post, path = "/v1/deployments", tag = "deployments", operation_id = "create_deployment", request_body = CreateBody,
    responses(
        (status = 201, description = "The deployment and its queued deploy", body = Created),
        (status = 400, description = "Bad body, name, zone or version", body = ErrorBody),
        (status = 403, description = "Missing `edit` on the title", body = ErrorBody),
        (status = 409, description = "The instance name is taken", body = ErrorBody),
        (status = 422, description = "A rule refused it (unsupported version, zone not available, CPUs out of range)", body = ErrorBody),
    ))]
pub(super) async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body<CreateBody>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
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
            Json(Created {
                deployment: views::deployment(&dep, secrets),
                operation: views::operation(&op, &cx.sight(&dep)),
            }),
        ))
    })
}

/// The deployments the caller may view.
///
/// `view`, per deployment (the others are left out).
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments", operation_id = "list_deployments",
    responses((status = 200, description = "Deployments", body = Deployments)))]
pub(super) async fn list(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Deployments>, ApiError> {
    app.handle(&headers, "deployments.list", None, |cx| {
        let visible = cx
            .app
            .rt
            .deployments()
            .iter()
            .filter(|d| !d.deleted && cx.has(Permission::View, d))
            .map(|d| views::deployment(d, cx.has(Permission::Secrets, d)))
            .collect();
        Ok(Json(Deployments {
            deployments: visible,
        }))
    })
}

/// A deployment with its nodes and its queue of unfinished operations.
///
/// Needs `view`; secret config values need `secrets`.
#[utoipa::path(get, path = "/v1/deployments/{instance}", tag = "deployments", operation_id = "show_deployment",
    params(("instance" = String, Path, description = "Instance name")),
    responses(
        (status = 200, description = "The deployment, with `queue`", body = DeploymentView),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    app.handle(&headers, "deployments.show", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let mut view = views::deployment(&dep, cx.has(Permission::Secrets, &dep));
        let queue = cx
            .app
            .rt
            .store()
            .unfinished_ops(&instance)?
            .iter()
            .map(|o| views::operation(o, &cx.sight(&dep)))
            .collect();
        view.queue = Some(queue);
        Ok(Json(view))
    })
}

/// Change delete protection or `fallback_to_draining`.
///
/// The permanent choices (type, zone, instance) and the version (changed only by `deploy`) are
/// refused with 409 unless unchanged. Needs `edit`.
#[utoipa::path(patch, path = "/v1/deployments/{instance}", tag = "deployments", operation_id = "edit_deployment",
    params(("instance" = String, Path, description = "Instance name")), request_body = DeploymentEdit,
    responses(
        (status = 200, description = "The deployment", body = DeploymentView),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 403, description = "Missing `edit`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "A permanent choice cannot change", body = ErrorBody),
    ))]
pub(super) async fn edit(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<DeploymentEdit>,
) -> Result<Json<DeploymentView>, ApiError> {
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

/// Queue a delete operation (refused while delete protection is on).
///
/// Needs `delete`.
#[utoipa::path(delete, path = "/v1/deployments/{instance}", tag = "deployments", operation_id = "delete_deployment",
    params(("instance" = String, Path, description = "Instance name")),
    responses(
        (status = 202, description = "The queued delete operation", body = crate::domain::Operation),
        (status = 403, description = "Missing `delete`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "Delete protection is on, or already deleted", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<(StatusCode, Json<crate::domain::Operation>), ApiError> {
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

/// The deployment's server key and runtime key (secrets).
///
/// Needs `secrets`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/keys", tag = "deployments", operation_id = "deployment_keys",
    params(("instance" = String, Path, description = "Instance name")),
    responses(
        (status = 200, description = "The keys", body = Keys),
        (status = 403, description = "Missing `secrets`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn keys(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<Keys>, ApiError> {
    app.handle(&headers, "keys.read", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Secrets, &dep)?;
        Ok(Json(Keys {
            server_key: dep.keys.server_key.clone(),
            runtime_key: dep.keys.runtime_key.clone(),
        }))
    })
}

/// The deployment's audit log, newest first.
///
/// Needs `view`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/audit", tag = "deployments", operation_id = "deployment_audit",
    params(("instance" = String, Path, description = "Instance name"), Limit),
    responses(
        (status = 200, description = "Audit records", body = Audit),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn audit(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Audit>, ApiError> {
    app.handle(&headers, "audit.read", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let entries = cx.app.rt.store().audit_log(Some(&instance), limit.get())?;
        Ok(Json(Audit { audit: entries }))
    })
}
