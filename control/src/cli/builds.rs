//! `kanmon builders ...`, `kanmon build` and `kanmon builds ...`: a deployment's builders, a
//! build queued as an operation, and the builds' records and logs.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::{
    segment,
    table::{cell, table, time},
    Client, ClientError,
};

/// `kanmon builders ...`
#[derive(Debug, Subcommand)]
pub enum BuildersCmd {
    /// Add a builder to a deployment (needs edit): where the code comes from and the Nakama
    /// version to compile against (refused when that version is not supported).
    Create {
        /// Deployment instance name.
        instance: String,
        /// Builder name (a-z, 0-9 and -, starting with a letter; unique in the deployment).
        name: String,
        /// The source: an absolute directory on the control plane's machine, or a git URL
        /// (file://, https://, http://, ssh://, git://), cloned at depth 1 for each build.
        #[arg(long)]
        source: String,
        /// The Nakama version to compile against (see `kanmon versions`).
        #[arg(long)]
        version: String,
    },
    /// List a deployment's builders.
    List {
        /// Deployment instance name.
        instance: String,
    },
    /// Remove a builder (needs edit); its past builds and their images stay.
    Delete {
        /// Deployment instance name.
        instance: String,
        /// Builder name.
        name: String,
    },
}

/// `kanmon builds ...`
#[derive(Debug, Subcommand)]
pub enum BuildsCmd {
    /// List a deployment's builds, newest first: status, image reference, digest.
    List {
        /// Deployment instance name.
        instance: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Print a build's log (its output, the last 256 KiB kept).
    Log {
        /// Deployment instance name.
        instance: String,
        /// The build's id (the id of its operation, shown by `kanmon build` and `builds list`).
        id: u64,
    },
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn builders_path(instance: &str) -> String {
    format!("/v1/deployments/{}/builders", segment(instance))
}

/// Runs a `builders` subcommand.
pub(super) async fn builders(
    c: &Client,
    cmd: BuildersCmd,
    json_out: bool,
) -> Result<String, ClientError> {
    match cmd {
        BuildersCmd::Create {
            instance,
            name,
            source,
            version,
        } => {
            let body = json!({ "name": name, "source": source, "version": version });
            let v = c.post(&builders_path(&instance), &body).await?;
            Ok(if json_out {
                pretty(&v)
            } else {
                format!(
                    "created builder {name} of {instance} (version {})",
                    cell(&v["version"])
                )
            })
        }
        BuildersCmd::List { instance } => {
            let v = c.get(&builders_path(&instance)).await?;
            if json_out {
                return Ok(pretty(&v));
            }
            let rows: Vec<Vec<String>> = list(&v, "builders")
                .iter()
                .map(|b| {
                    ["name", "version", "source", "created_by"]
                        .iter()
                        .map(|k| cell(&b[*k]))
                        .collect()
                })
                .collect();
            Ok(table(&["name", "version", "source", "created_by"], &rows))
        }
        BuildersCmd::Delete { instance, name } => {
            let path = format!("{}/{}", builders_path(&instance), segment(&name));
            c.call(Method::DELETE, &path, None).await?;
            Ok(format!("deleted builder {name} of {instance}"))
        }
    }
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map_or(&[], Vec::as_slice)
}

/// `kanmon build`: the body of the build operation, naming `builder` or, when none is given,
/// the deployment's only builder.
pub(super) async fn build_body(
    c: &Client,
    instance: &str,
    builder: Option<String>,
) -> Result<Value, ClientError> {
    let builder = match builder {
        Some(b) => b,
        None => {
            let v = c.get(&builders_path(instance)).await?;
            match list(&v, "builders") {
                [one] => cell(&one["name"]),
                [] => {
                    return Err(ClientError::Usage(format!(
                        "{instance} has no builder: create one with `kanmon builders create`"
                    )))
                }
                _ => {
                    return Err(ClientError::Usage(format!(
                        "{instance} has several builders: name one with --builder"
                    )))
                }
            }
        }
    };
    Ok(json!({ "kind": "build", "builder": builder }))
}

/// Runs a `builds` subcommand.
pub(super) async fn builds(
    c: &Client,
    cmd: BuildsCmd,
    json_out: bool,
) -> Result<String, ClientError> {
    match cmd {
        BuildsCmd::List { instance, limit } => {
            let path = format!(
                "/v1/deployments/{}/builds?limit={limit}",
                segment(&instance)
            );
            let v = c.get(&path).await?;
            if json_out {
                return Ok(pretty(&v));
            }
            let keys = ["id", "builder", "version", "status", "image", "error"];
            let rows: Vec<Vec<String>> = list(&v, "builds")
                .iter()
                .map(|b| {
                    keys.iter()
                        .map(|k| cell(&b[*k]))
                        .chain([time(&b["started_at"])])
                        .collect()
                })
                .collect();
            let mut headers = keys.to_vec();
            headers.push("started");
            Ok(table(&headers, &rows))
        }
        BuildsCmd::Log { instance, id } => {
            let path = format!("/v1/deployments/{}/builds/{id}/log", segment(&instance));
            let v = c.get(&path).await?;
            Ok(if json_out {
                pretty(&v)
            } else {
                v["log"].as_str().unwrap_or_default().to_string()
            })
        }
    }
}
