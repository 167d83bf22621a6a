//! `kanmon notify ...`: subscriptions to the end of operations (webhook or e-mail), and each
//! subscription's delivery log.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{
    table::{cell, table, time},
    Client, ClientError,
};

/// Where a subscription listens: an organization or one deployment.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Where {
    /// Every deployment of this organization (needs an organization-level grant).
    #[arg(long)]
    pub org: Option<String>,
    /// This deployment only.
    #[arg(long)]
    pub deployment: Option<String>,
}

/// The `notify` subcommands.
#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Subscribe a webhook or an e-mail address to operations that end (needs `edit`; the
    /// webhook's signing secret is printed once, to holders of `secrets`).
    #[command(
        after_help = "Examples:\n  kanmon notify add --org acme --webhook https://hooks.example/kanmon\n  \
        kanmon notify add --deployment alpha --email ops@example.com --event operation.failed"
    )]
    Add {
        /// Where.
        #[command(flatten)]
        at: Where,
        /// Receiver URL (http or https): gets a signed JSON POST per event.
        #[arg(long, conflicts_with = "email", required_unless_present = "email")]
        webhook: Option<String>,
        /// Recipient address (needs an SMTP server in the control plane's configuration).
        #[arg(long)]
        email: Option<String>,
        /// Event to hear (repeat): operation.completed, operation.failed,
        /// operation.superseded (default: all three).
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// List the subscriptions of an organization or a deployment.
    List {
        /// Where.
        #[command(flatten)]
        at: Where,
    },
    /// Remove a subscription with its delivery log.
    Remove {
        /// Subscription id.
        id: u64,
    },
    /// Show a subscription's deliveries, newest first, with every try (status, error, time).
    Deliveries {
        /// Subscription id.
        id: u64,
        /// Show at most this many deliveries.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

fn base(at: &Where) -> Result<String, ClientError> {
    match (&at.org, &at.deployment) {
        (Some(org), _) => Ok(format!("/v1/orgs/{}/subscriptions", super::segment(org))),
        (None, Some(i)) => Ok(format!(
            "/v1/deployments/{}/subscriptions",
            super::segment(i)
        )),
        (None, None) => Err(ClientError::Usage("give --org or --deployment".into())),
    }
}

fn channel(s: &Value) -> String {
    let c = &s["channel"];
    match c["kind"].as_str() {
        Some("webhook") => format!("webhook {}", cell(&c["url"])),
        Some("email") => format!("email {}", cell(&c["to"])),
        _ => cell(c),
    }
}

fn scope(s: &Value) -> String {
    let sc = &s["scope"];
    match sc["level"].as_str() {
        Some("organization") => format!("org {}", cell(&sc["org"])),
        _ => format!("deployment {}", cell(&sc["instance"])),
    }
}

fn events(s: &Value) -> String {
    s["events"]
        .as_array()
        .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// Runs a `notify` subcommand.
pub(super) async fn run(c: &Client, cmd: NotifyCmd, json_out: bool) -> Result<String, ClientError> {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match cmd {
        NotifyCmd::Add {
            at,
            webhook,
            email,
            events: evs,
        } => {
            let mut body = json!({ "webhook": webhook, "email": email });
            if !evs.is_empty() {
                body["events"] = json!(evs);
            }
            let v = c.post(&base(&at)?, &body).await?;
            if json_out {
                return Ok(pretty(&v));
            }
            let mut out = format!(
                "subscription {}: {} hears {} of {}",
                cell(&v["id"]),
                channel(&v),
                events(&v),
                scope(&v)
            );
            if let Some(secret) = v["secret"].as_str() {
                out.push_str(&format!(
                    "\nsigning secret (shown once; verify Kanmon-Signature with it): {secret}"
                ));
            } else if let Some(note) = v["secret_note"].as_str() {
                out.push_str(&format!("\n{note}"));
            }
            Ok(out)
        }
        NotifyCmd::List { at } => {
            let v = c.get(&base(&at)?).await?;
            if json_out {
                return Ok(pretty(&v));
            }
            let rows: Vec<Vec<String>> = v["subscriptions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| {
                            vec![
                                cell(&s["id"]),
                                scope(s),
                                channel(s),
                                events(s),
                                cell(&s["created_by"]),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(table(
                &["id", "scope", "channel", "events", "created_by"],
                &rows,
            ))
        }
        NotifyCmd::Remove { id } => {
            c.call(
                reqwest::Method::DELETE,
                &format!("/v1/subscriptions/{id}"),
                None,
            )
            .await?;
            Ok(if json_out {
                pretty(&json!({ "removed": id }))
            } else {
                format!("removed subscription {id}")
            })
        }
        NotifyCmd::Deliveries { id, limit } => {
            let v = c
                .get(&format!("/v1/subscriptions/{id}/deliveries?limit={limit}"))
                .await?;
            if json_out {
                return Ok(pretty(&v));
            }
            let mut rows = Vec::new();
            for d in v["deliveries"].as_array().into_iter().flatten() {
                let tries = d["tries"].as_array().cloned().unwrap_or_default();
                if tries.is_empty() {
                    rows.push(vec![
                        cell(&d["id"]),
                        cell(&d["operation"]),
                        cell(&d["event"]),
                        cell(&d["state"]),
                        "-".into(),
                        "-".into(),
                        String::new(),
                        time(&d["next_at"]),
                    ]);
                }
                for t in &tries {
                    rows.push(vec![
                        cell(&d["id"]),
                        cell(&d["operation"]),
                        cell(&d["event"]),
                        cell(&d["state"]),
                        cell(&t["attempt"]),
                        cell(&t["status"]),
                        cell(&t["error"]),
                        time(&t["at"]),
                    ]);
                }
            }
            Ok(table(
                &[
                    "delivery", "op", "event", "state", "try", "status", "error", "at",
                ],
                &rows,
            ))
        }
    }
}
