//! `kanmon zones ...` and `kanmon deployments allow-downgrade`: the zone catalog, and the
//! support team's interventions (on-request zones per organization, one allowed downgrade).

use reqwest::Method;
use serde_json::{json, Value};

use super::{
    args::{ZonesArgs, ZonesCmd},
    segment,
    table::{cell, table},
    Client, ClientError,
};

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Runs `kanmon zones`.
pub(super) async fn zones(
    c: &Client,
    args: ZonesArgs,
    json_out: bool,
) -> Result<String, ClientError> {
    let (org, zone, enable) = match args.cmd {
        None => return list(c, args.org.as_deref(), json_out).await,
        Some(ZonesCmd::Enable { zone, org }) => (org, zone, true),
        Some(ZonesCmd::Disable { zone, org }) => (org, zone, false),
    };
    let path = format!("/v1/orgs/{}/zones/{}", segment(&org), segment(&zone));
    let method = if enable { Method::PUT } else { Method::DELETE };
    let v = c.call(method, &path, None).await?;
    Ok(if json_out {
        pretty(&v)
    } else if enable {
        format!("zone {zone} enabled for org {org}")
    } else {
        format!("zone {zone} disabled for org {org}")
    })
}

async fn list(c: &Client, org: Option<&str>, json_out: bool) -> Result<String, ClientError> {
    let v = match org {
        Some(org) => c.get(&format!("/v1/orgs/{}/zones", segment(org))).await?,
        None => c.get("/v1/zones").await?,
    };
    if json_out {
        return Ok(pretty(&v));
    }
    let availability = |z: &Value| match (z["on_request"] == true, &z["available"]) {
        (false, _) => "offered".to_string(),
        (true, Value::Bool(true)) => format!("on request, enabled by {}", cell(&z["enabled_by"])),
        (true, Value::Bool(false)) => "on request (ask a platform admin)".to_string(),
        (true, _) => "on request".to_string(),
    };
    let rows: Vec<Vec<String>> = v["zones"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|z| vec![cell(&z["zone"]), availability(z)])
                .collect()
        })
        .unwrap_or_default();
    Ok(table(&["zone", "availability"], &rows))
}

/// Runs `kanmon deployments allow-downgrade`.
pub(super) async fn allow_downgrade(
    c: &Client,
    instance: &str,
    version: &str,
    json_out: bool,
) -> Result<String, ClientError> {
    let path = format!("/v1/deployments/{}/downgrade-allowance", segment(instance));
    let d = c.post(&path, &json!({ "version": version })).await?;
    Ok(if json_out {
        pretty(&d)
    } else {
        format!(
            "{instance}: the next deploy may downgrade {} to {version} (once)",
            cell(&d["version"])
        )
    })
}
