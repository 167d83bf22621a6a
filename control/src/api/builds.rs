//! Builder and build routes: create, list and delete a deployment's builders (`edit`), list its
//! builds and read a build's log (`view`). A build itself is queued as an operation
//! (`POST .../operations` with `{"kind": "build", "builder": NAME}`, `deploy` permission).

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    deployments::Limit,
    error::{ApiError, ErrorBody},
    App, Body,
};
use crate::{
    domain::{
        build::{BuildError, Builder},
        Permission, Timestamp,
    },
    runtime::now,
    store::{BuildRecord, BuildStatus, StoredBuilder},
};

/// Body of `POST /v1/deployments/{instance}/builders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BuilderBody {
    /// 1–40 of `a-z0-9-`, starting with a letter; unique in the deployment.
    name: String,
    /// An absolute directory, or a git URL (`file`, `https`, `http`, `ssh`, `git`) without
    /// credentials.
    source: String,
    /// The Nakama version to compile against (a supported one of the catalog).
    version: String,
}

/// A builder of a deployment.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BuilderView {
    name: String,
    source: String,
    version: String,
    created_by: String,
    created_at: Timestamp,
}

/// `GET /v1/deployments/{instance}/builders`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Builders {
    builders: Vec<BuilderView>,
}

/// A build (its id is its `build` operation's).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BuildView {
    id: u64,
    builder: String,
    version: String,
    status: BuildStatus,
    /// On success: the image reference to give `deploy`.
    image: Option<String>,
    /// On success: the artifact's SHA-256 (hex).
    digest: Option<String>,
    /// On failure: why.
    error: Option<String>,
    started_at: Timestamp,
    finished_at: Option<Timestamp>,
    /// The build's output (bounded); only in `GET .../builds/{id}/log`.
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
}

/// `GET /v1/deployments/{instance}/builds`, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Builds {
    builds: Vec<BuildView>,
}

impl From<BuildError> for ApiError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Version(d) => ApiError::from(d),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

fn builder_view(b: &StoredBuilder) -> BuilderView {
    BuilderView {
        name: b.builder.name.clone(),
        source: b.builder.source.as_text(),
        version: b.builder.version.to_string(),
        created_by: b.created_by.clone(),
        created_at: b.created_at,
    }
}

fn build_view(b: &BuildRecord) -> BuildView {
    BuildView {
        id: b.id,
        builder: b.builder.clone(),
        version: b.version.clone(),
        status: b.status,
        image: b.image.clone(),
        digest: b.digest.clone(),
        error: b.error.clone(),
        started_at: b.started_at,
        finished_at: b.finished_at,
        log: None,
    }
}

/// Create a builder: a source and the version to compile against.
///
/// Needs `edit`.
#[utoipa::path(post, path = "/v1/deployments/{instance}/builders", tag = "builds",
    params(("instance" = String, Path, description = "Instance name")), request_body = BuilderBody,
    responses(
        (status = 201, description = "The builder", body = BuilderView),
        (status = 400, description = "Bad body, name, source or version", body = ErrorBody),
        (status = 403, description = "Missing `edit`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "The deployment has a builder of that name", body = ErrorBody),
        (status = 422, description = "The version is not supported", body = ErrorBody),
    ))]
pub(super) async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<BuilderBody>,
) -> Result<(StatusCode, Json<BuilderView>), ApiError> {
    app.handle(&headers, "builders.create", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Edit, &dep)?;
        let body = super::body(body)?;
        let version = body
            .version
            .parse()
            .map_err(|e| ApiError::bad_request(format!("version: {e}")))?;
        let builder = Builder::new(
            &body.name,
            &body.source,
            version,
            &cx.app.rt.settings().catalog,
        )?;
        cx.note(format!(
            "builder {}; version {}",
            builder.name, builder.version
        ));
        let stored = StoredBuilder {
            instance: instance.clone(),
            builder,
            created_by: cx.user.name.clone(),
            created_at: now(),
        };
        cx.app.rt.store().insert_builder(&stored)?;
        Ok((StatusCode::CREATED, Json(builder_view(&stored))))
    })
}

/// The deployment's builders.
///
/// Needs `view`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/builders", tag = "builds", operation_id = "list_builders",
    params(("instance" = String, Path, description = "Instance name")),
    responses(
        (status = 200, description = "The builders", body = Builders),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<Builders>, ApiError> {
    app.handle(&headers, "builders.list", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let builders = cx
            .app
            .rt
            .store()
            .builders(&instance)?
            .iter()
            .map(builder_view)
            .collect();
        Ok(Json(Builders { builders }))
    })
}

/// Delete a builder (its builds' records stay).
///
/// Needs `edit`.
#[utoipa::path(delete, path = "/v1/deployments/{instance}/builders/{name}", tag = "builds", operation_id = "delete_builder",
    params(("instance" = String, Path, description = "Instance name"), ("name" = String, Path, description = "Builder name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Missing `edit`", body = ErrorBody),
        (status = 404, description = "No such deployment or builder", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path((instance, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.handle(&headers, "builders.delete", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Edit, &dep)?;
        cx.note(format!(
            "builder {}",
            name.chars().take(60).collect::<String>()
        ));
        if !cx.app.rt.store().delete_builder(&instance, &name)? {
            return Err(ApiError::not_found(format!("builder {name:?} not found")));
        }
        Ok(StatusCode::NO_CONTENT)
    })
}

/// The deployment's builds, newest first.
///
/// Needs `view`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/builds", tag = "builds", operation_id = "list_builds",
    params(("instance" = String, Path, description = "Instance name"), Limit),
    responses(
        (status = 200, description = "The builds", body = Builds),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn builds(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Builds>, ApiError> {
    app.handle(&headers, "builds.list", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let builds = cx
            .app
            .rt
            .store()
            .builds(&instance, limit.get())?
            .iter()
            .map(build_view)
            .collect();
        Ok(Json(Builds { builds }))
    })
}

/// One build with its log.
///
/// Needs `view`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/builds/{id}/log", tag = "builds", operation_id = "build_log",
    params(("instance" = String, Path, description = "Instance name"), ("id" = u64, Path, description = "Build id")),
    responses(
        (status = 200, description = "The build and its log", body = BuildView),
        (status = 400, description = "A path parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such deployment or build", body = ErrorBody),
    ))]
pub(super) async fn log(
    State(app): State<App>,
    headers: HeaderMap,
    Path((instance, id)): Path<(String, u64)>,
) -> Result<Json<BuildView>, ApiError> {
    app.handle(&headers, "builds.log", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let b = cx
            .app
            .rt
            .store()
            .build(&instance, id)?
            .ok_or_else(|| ApiError::not_found(format!("build {id} not found")))?;
        let mut view = build_view(&b);
        view.log = Some(b.log);
        Ok(Json(view))
    })
}

/// Fills a queued build's version from its builder (the version is the builder's, never the
/// caller's), refusing a builder the deployment does not have.
pub(super) fn resolve_build(
    app: &App,
    instance: &str,
    kind: &mut crate::domain::OpKind,
) -> Result<(), ApiError> {
    if let crate::domain::OpKind::Build { builder, version } = kind {
        let stored = app
            .rt
            .store()
            .builder(instance, builder)?
            .ok_or_else(|| ApiError::not_found(format!("builder {builder:?} not found")))?;
        stored.builder.check_build(&app.rt.settings().catalog)?;
        *version = stored.builder.version;
    }
    Ok(())
}
