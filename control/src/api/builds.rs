//! Builder and build routes: create, list and delete a deployment's builders (`edit`), list its
//! builds and read a build's log (`view`). A build itself is queued as an operation
//! (`POST .../operations` with `{"kind": "build", "builder": NAME}`, `deploy` permission).

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{deployments::Limit, error::ApiError, App, Body};
use crate::{
    domain::{
        build::{BuildError, Builder},
        Permission,
    },
    runtime::now,
    store::{BuildRecord, StoredBuilder},
};

/// Body of `POST /v1/deployments/{instance}/builders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BuilderBody {
    name: String,
    source: String,
    version: String,
}

impl From<BuildError> for ApiError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Version(d) => ApiError::from(d),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

fn builder_view(b: &StoredBuilder) -> Value {
    json!({
        "name": b.builder.name,
        "source": b.builder.source.as_text(),
        "version": b.builder.version.to_string(),
        "created_by": b.created_by,
        "created_at": b.created_at,
    })
}

fn build_view(b: &BuildRecord) -> Value {
    json!({
        "id": b.id,
        "builder": b.builder,
        "version": b.version,
        "status": b.status,
        "image": b.image,
        "digest": b.digest,
        "error": b.error,
        "started_at": b.started_at,
        "finished_at": b.finished_at,
    })
}

pub(super) async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<BuilderBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

pub(super) async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "builders.list", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let all: Vec<Value> = cx
            .app
            .rt
            .store()
            .builders(&instance)?
            .iter()
            .map(builder_view)
            .collect();
        Ok(Json(json!({ "builders": all })))
    })
}

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

pub(super) async fn builds(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "builds.list", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        let all: Vec<Value> = cx
            .app
            .rt
            .store()
            .builds(&instance, limit.get())?
            .iter()
            .map(build_view)
            .collect();
        Ok(Json(json!({ "builds": all })))
    })
}

pub(super) async fn log(
    State(app): State<App>,
    headers: HeaderMap,
    Path((instance, id)): Path<(String, u64)>,
) -> Result<Json<Value>, ApiError> {
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
        view["log"] = Value::String(b.log);
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
