//! `kanmon console`: a deployment's console hostname and its allow-list.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{Client, ClientError};

/// `kanmon console show|allow|close`
#[derive(Debug, Subcommand)]
pub enum ConsoleCmd {
    /// Show the console's hostname and the client networks allowed to reach it.
    Show {
        /// Deployment instance name.
        instance: String,
    },
    /// Replace the console's allow-list (needs the edit permission; audited). Clients outside
    /// every listed network get 403 from the edge.
    Allow {
        /// Deployment instance name.
        instance: String,
        /// Client networks as CIDRs (`203.0.113.0/24`, `2001:db8::/32`) or single addresses.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Close the console to every client (empty allow-list; the default of a new deployment).
    Close {
        /// Deployment instance name.
        instance: String,
    },
}

/// Runs one `kanmon console` subcommand.
pub async fn run(c: &Client, cmd: ConsoleCmd, json_out: bool) -> Result<String, ClientError> {
    let path = |i: &str| format!("/v1/deployments/{i}/console");
    let v = match cmd {
        ConsoleCmd::Show { instance } => c.get(&path(&instance)).await?,
        ConsoleCmd::Allow { instance, networks } => {
            c.put(&path(&instance), &json!({ "allow": networks }))
                .await?
        }
        ConsoleCmd::Close { instance } => c.put(&path(&instance), &json!({ "allow": [] })).await?,
    };
    if json_out {
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(render(&v))
}

fn render(v: &Value) -> String {
    let allow: Vec<&str> = v["allow"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let allow = if allow.is_empty() {
        "(none: the console is closed)".to_string()
    } else {
        allow.join(", ")
    };
    format!(
        "hostname  {}\nallow     {allow}",
        v["hostname"].as_str().unwrap_or("")
    )
}
