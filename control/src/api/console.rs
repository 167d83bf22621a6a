//! The console route: a deployment's console hostname and who may reach it.
//!
//! `GET /v1/deployments/{instance}/console` (permission `view`) shows the hostname and the
//! allow-list; `PUT` (permission `edit`, audited with the new list) replaces the list and
//! republishes the deployment to the edge at once. An empty list closes the console: an
//! administration interface is opened on purpose, never by default.

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    Json,
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    answers::Console,
    error::{ApiError, ErrorBody},
    App, Body,
};
use crate::domain::{Deployment, Permission};

/// Most networks one allow-list holds: a list longer than this is a mistake, not a policy.
pub const MAX_NETWORKS: usize = 64;

/// `PUT` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AllowBody {
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`; a bare address is one host); at most 64; empty
    /// closes the console.
    #[schema(max_items = 64)]
    allow: Vec<String>,
}

/// Parses an allow-list: CIDRs or single addresses, host bits cleared, duplicates dropped.
/// The error names the entry that is wrong.
pub fn parse_allow_list(entries: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    if entries.len() > MAX_NETWORKS {
        return Err(format!(
            "at most {MAX_NETWORKS} networks, got {}",
            entries.len()
        ));
    }
    let mut nets: Vec<ipnet::IpNet> = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let text = raw.trim();
        let net = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| format!("allow[{i}]: {raw:?} is not a CIDR such as 10.0.0.0/8"))?
            .trunc();
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

fn view(cx_app: &App, dep: &Deployment) -> Console {
    let s = cx_app.rt.settings();
    Console {
        instance: dep.instance.as_str().to_string(),
        hostname: s.console.hostname(&dep.instance, &dep.zone, &s.base_domain),
        allow: dep.console_allow.iter().map(ToString::to_string).collect(),
        open: !dep.console_allow.is_empty(),
    }
}

/// A deployment's console hostname and the client networks allowed to reach it.
///
/// Needs `view`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/console", tag = "deployments", operation_id = "show_console",
    params(("instance" = String, Path, description = "Instance name")),
    responses(
        (status = 200, description = "The console", body = Console),
        (status = 403, description = "Missing `view`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<Console>, ApiError> {
    app.handle(&headers, "console.show", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::View, &dep)?;
        Ok(Json(view(cx.app, &dep)))
    })
}

/// Replace the console's allow-list; the edge applies it at once. An empty list closes it.
///
/// Needs `edit`; audited with the new list.
#[utoipa::path(put, path = "/v1/deployments/{instance}/console", tag = "deployments", operation_id = "set_console_allow",
    params(("instance" = String, Path, description = "Instance name")), request_body = AllowBody,
    responses(
        (status = 200, description = "The console with its new allow-list", body = Console),
        (status = 400, description = "Bad body, a network that is not a CIDR, or more than 64", body = ErrorBody),
        (status = 403, description = "Missing `edit`", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "The deployment is deleted", body = ErrorBody),
    ))]
pub(super) async fn set_allow(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<AllowBody>,
) -> Result<Json<Console>, ApiError> {
    app.handle(&headers, "console.allow", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Edit, &dep)?;
        let body = super::body(body)?;
        let allow = parse_allow_list(&body.allow).map_err(ApiError::bad_request)?;
        let listed: Vec<String> = allow.iter().map(ToString::to_string).collect();
        cx.note(if listed.is_empty() {
            "console closed (empty allow-list)".to_string()
        } else {
            format!("console allow-list: {}", listed.join(", "))
        });
        let dep = cx.app.rt.set_console_allow(&instance, allow)?;
        Ok(Json(view(cx.app, &dep)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_are_parsed_strictly() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let nets =
            parse_allow_list(&s(&["10.1.2.3/8", " 192.0.2.7 ", "10.0.0.0/8", "::1"])).unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
        let err = parse_allow_list(&s(&["10.0.0.0/8", "nonsense"])).unwrap_err();
        assert!(err.contains("allow[1]"), "{err}");
        assert!(parse_allow_list(&s(&["10.0.0.0/33"])).is_err());
        assert!(parse_allow_list(&vec!["10.0.0.1".to_string(); MAX_NETWORKS + 1]).is_err());
        assert!(parse_allow_list(&[]).unwrap().is_empty());
    }
}
