//! Support-team routes (platform admins): allow one downgrade for one deployment, enable
//! on-request zones for an organization. Each is audited with what was allowed.

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    Json,
};
use kanmon_router::Version;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error::ApiError, views, App, Body};

/// Body of `POST /v1/deployments/{instance}/downgrade-allowance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllowanceBody {
    version: String,
}

pub(super) async fn allow_downgrade(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<AllowanceBody>,
) -> Result<Json<Value>, ApiError> {
    app.handle(
        &headers,
        "deployments.allow_downgrade",
        Some(&instance),
        |cx| {
            cx.require_admin()?;
            cx.deployment(&instance)?;
            let body = super::body(body)?;
            let to: Version = body
                .version
                .parse()
                .map_err(|e| ApiError::bad_request(format!("version: {e}")))?;
            let dep = cx.app.rt.allow_downgrade(&instance, to, &cx.user.name)?;
            cx.note(format!(
                "one deploy may downgrade {} to {to}",
                dep.spec.version
            ));
            Ok(Json(views::deployment(&dep, false)))
        },
    )
}

/// An organization name as grants and deployments use it.
pub(super) fn check_org(org: &str) -> Result<(), ApiError> {
    if org.is_empty() || org.len() > 64 {
        return Err(ApiError::bad_request("org must be 1-64 characters"));
    }
    Ok(())
}

pub(super) async fn org_zones(
    State(app): State<App>,
    headers: HeaderMap,
    Path(org): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "zones.list", None, |cx| {
        check_org(&org)?;
        let store = cx.app.rt.store();
        let grants = store.zone_grants(&org)?;
        let offered = cx.app.rt.zones_for(&org)?;
        let settings = cx.app.rt.settings();
        let zones: Vec<Value> = settings
            .zones
            .iter()
            .zip(offered)
            .map(|((zone, on_request), (_, still_on_request))| {
                let grant = grants.iter().find(|g| g.zone == zone.as_str());
                json!({
                    "zone": zone.as_str(),
                    "on_request": on_request,
                    "available": !still_on_request,
                    "enabled_by": grant.map(|g| g.enabled_by.clone()),
                    "enabled_at": grant.map(|g| g.enabled_at),
                })
            })
            .collect();
        Ok(Json(json!({ "org": org, "zones": zones })))
    })
}

pub(super) async fn enable_zone(
    State(app): State<App>,
    headers: HeaderMap,
    Path((org, zone)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "zones.enable", None, |cx| {
        cx.require_admin()?;
        check_org(&org)?;
        let grant = cx.app.rt.enable_zone(&org, &zone, &cx.user.name)?;
        cx.note(format!("zone {} enabled for org {}", grant.zone, grant.org));
        Ok(Json(json!(grant)))
    })
}

pub(super) async fn disable_zone(
    State(app): State<App>,
    headers: HeaderMap,
    Path((org, zone)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "zones.disable", None, |cx| {
        cx.require_admin()?;
        check_org(&org)?;
        if !cx.app.rt.disable_zone(&org, &zone)? {
            return Err(ApiError::not_found(format!(
                "zone {zone} is not enabled for org {org}"
            )));
        }
        cx.note(format!("zone {zone} disabled for org {org}"));
        Ok(Json(json!({ "org": org, "zone": zone, "enabled": false })))
    })
}
