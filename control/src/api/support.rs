//! Support-team routes (platform admins): allow one downgrade for one deployment, enable
//! on-request zones for an organization. Each is audited with what was allowed.

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    Json,
};
use kanmon_router::Version;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    answers::{OrgZoneEntry, OrgZones, ZoneDisabled},
    error::{ApiError, ErrorBody},
    views::{self, DeploymentView},
    App, Body,
};
use crate::store::ZoneGrant;

/// Body of `POST /v1/deployments/{instance}/downgrade-allowance`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AllowanceBody {
    /// An older supported version than the running one.
    version: String,
}

/// Allow one deploy to an older supported version (the support team's intervention, audited).
///
/// Used up by the deploy that completes to it; a new allowance replaces an unused one. Needs
/// `admin`.
#[utoipa::path(post, path = "/v1/deployments/{instance}/downgrade-allowance", tag = "support",
    params(("instance" = String, Path, description = "Instance name")), request_body = AllowanceBody,
    responses(
        (status = 200, description = "The deployment, with its `downgrade_allowance`", body = DeploymentView),
        (status = 400, description = "Bad body or version", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "Not a downgrade, or the deployment is deleted", body = ErrorBody),
        (status = 422, description = "The version is not supported", body = ErrorBody),
    ))]
pub(super) async fn allow_downgrade(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<AllowanceBody>,
) -> Result<Json<DeploymentView>, ApiError> {
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

/// The zone catalog as one organization sees it.
///
/// Any valid token.
#[utoipa::path(get, path = "/v1/orgs/{org}/zones", tag = "support",
    params(("org" = String, Path, description = "Organization")),
    responses(
        (status = 200, description = "The zones", body = OrgZones),
        (status = 400, description = "Bad organization name", body = ErrorBody),
    ))]
pub(super) async fn org_zones(
    State(app): State<App>,
    headers: HeaderMap,
    Path(org): Path<String>,
) -> Result<Json<OrgZones>, ApiError> {
    app.handle(&headers, "zones.list", None, |cx| {
        check_org(&org)?;
        let store = cx.app.rt.store();
        let grants = store.zone_grants(&org)?;
        let offered = cx.app.rt.zones_for(&org)?;
        let settings = cx.app.rt.settings();
        let zones = settings
            .zones
            .iter()
            .zip(offered)
            .map(|((zone, on_request), (_, still_on_request))| {
                let grant = grants.iter().find(|g| g.zone == zone.as_str());
                OrgZoneEntry {
                    zone: zone.as_str().to_string(),
                    on_request: *on_request,
                    available: !still_on_request,
                    enabled_by: grant.map(|g| g.enabled_by.clone()),
                    enabled_at: grant.map(|g| g.enabled_at),
                }
            })
            .collect();
        Ok(Json(OrgZones {
            org: org.clone(),
            zones,
        }))
    })
}

/// Enable an on-request zone for an organization (audited).
///
/// Needs `admin`.
#[utoipa::path(put, path = "/v1/orgs/{org}/zones/{zone}", tag = "support",
    params(("org" = String, Path, description = "Organization"), ("zone" = String, Path, description = "An on-request zone")),
    responses(
        (status = 200, description = "The zone grant", body = ZoneGrant),
        (status = 400, description = "Bad organization name", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "Not a zone of the catalog, or not on request", body = ErrorBody),
    ))]
pub(super) async fn enable_zone(
    State(app): State<App>,
    headers: HeaderMap,
    Path((org, zone)): Path<(String, String)>,
) -> Result<Json<ZoneGrant>, ApiError> {
    app.handle(&headers, "zones.enable", None, |cx| {
        cx.require_admin()?;
        check_org(&org)?;
        let grant = cx.app.rt.enable_zone(&org, &zone, &cx.user.name)?;
        cx.note(format!("zone {} enabled for org {}", grant.zone, grant.org));
        Ok(Json(grant))
    })
}

/// Take an on-request zone back from an organization (its deployments there stay).
///
/// Needs `admin`.
#[utoipa::path(delete, path = "/v1/orgs/{org}/zones/{zone}", tag = "support",
    params(("org" = String, Path, description = "Organization"), ("zone" = String, Path, description = "An on-request zone")),
    responses(
        (status = 200, description = "Disabled", body = ZoneDisabled),
        (status = 400, description = "Bad organization name", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "The zone is not enabled for the organization", body = ErrorBody),
        (status = 422, description = "Not a zone of the catalog, or not on request", body = ErrorBody),
    ))]
pub(super) async fn disable_zone(
    State(app): State<App>,
    headers: HeaderMap,
    Path((org, zone)): Path<(String, String)>,
) -> Result<Json<ZoneDisabled>, ApiError> {
    app.handle(&headers, "zones.disable", None, |cx| {
        cx.require_admin()?;
        check_org(&org)?;
        if !cx.app.rt.disable_zone(&org, &zone)? {
            return Err(ApiError::not_found(format!(
                "zone {zone} is not enabled for org {org}"
            )));
        }
        cx.note(format!("zone {zone} disabled for org {org}"));
        Ok(Json(ZoneDisabled {
            org: org.clone(),
            zone: zone.clone(),
            enabled: false,
        }))
    })
}
