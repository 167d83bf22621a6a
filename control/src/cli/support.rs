//! `kanmon zones ...`, `kanmon deployments allow-downgrade` and `kanmon usage`: the zone
//! catalog, the support team's interventions (on-request zones per organization, one allowed
//! downgrade) and what is billed.

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

/// Runs `kanmon usage`.
pub(super) async fn usage(
    c: &Client,
    instance: &str,
    from: Option<&str>,
    to: Option<&str>,
    json_out: bool,
) -> Result<String, ClientError> {
    let mut path = format!("/v1/deployments/{}/usage", segment(instance));
    let query: Vec<String> = [("from", from), ("to", to)]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", segment(v))))
        .collect();
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let v = c.get(&path).await?;
    if json_out {
        return Ok(pretty(&v));
    }
    let row = |d: &Value, note: &str| {
        vec![
            cell(&d["date"]),
            cell(&d["node_cpus"]),
            cell(&d["db_cpus"]),
            cell(&d["samples"]),
            note.to_string(),
        ]
    };
    let mut rows: Vec<Vec<String>> = v["days"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| row(d, if d["carried"] == true { "carried" } else { "" }))
                .collect()
        })
        .unwrap_or_default();
    if v["in_progress"].is_object() {
        rows.push(row(&v["in_progress"], "in progress"));
    }
    Ok(table(
        &["date", "node_cpus", "db_cpus", "samples", ""],
        &rows,
    ))
}
