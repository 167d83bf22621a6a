//! The `kanmon` CLI client: subcommands that call the HTTP API and print tables or JSON.

pub mod args;
mod builds;
pub mod client;
pub mod console;
mod export;
pub mod kube_args;
pub mod logs;
pub mod notify;
mod support;
mod table;
mod users;

use std::time::Duration;

use serde_json::{json, Value};

pub use args::{Cli, Command, Connection, ServeArgs};
pub use client::{Client, ClientError};

use args::{DeploymentsCmd, GrantArgs, GrantsCmd, Kind, Wait};
use table::{cell, deployment_row, grant_row, op_row, table, time, DEPLOYMENT_HEADERS, OP_HEADERS};

/// How often `--wait` polls an operation.
const POLL: Duration = Duration::from_millis(500);

/// The token from `--token` / `KANMON_TOKEN`, else from `--token-file`.
pub fn token(conn: &Connection) -> Result<String, ClientError> {
    if let Some(t) = &conn.token {
        return Ok(t.clone());
    }
    let path = conn.token_file.as_ref().ok_or(ClientError::NoToken)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Usage(format!("reading {}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

/// `s` percent-encoded as one URL path segment. User names may hold `/`, `?`, `#` or spaces,
/// which would otherwise change the route the request reaches.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn pairs(items: &[String]) -> Result<Value, ClientError> {
    let mut map = serde_json::Map::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| ClientError::Usage(format!("expected KEY=VALUE, got {item:?}")))?;
        map.insert(k.to_string(), json!(v));
    }
    Ok(Value::Object(map))
}

/// Runs a client command and returns what to print.
pub async fn run(conn: &Connection, command: Command) -> Result<String, ClientError> {
    let c = Client::with_ca(&conn.server, token(conn)?, conn.ca.as_deref())?;
    let json_out = conn.json;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let op_path = |i: &str| format!("/v1/deployments/{i}/operations");
    match command {
        Command::Serve(_) | Command::Up(_) | Command::DemoNode { .. } => {
            Err(ClientError::Usage("not a client command".into()))
        }
        Command::Deployments(cmd) => deployments(&c, cmd, json_out).await,
        Command::Deploy {
            instance,
            version,
            image,
            wait,
        } => {
            let body = json!({ "kind": "deploy", "version": version, "image": image });
            queue(&c, &op_path(&instance), body, &wait, json_out).await
        }
        Command::Reboot { instance, wait } => {
            queue(
                &c,
                &op_path(&instance),
                json!({ "kind": "reboot" }),
                &wait,
                json_out,
            )
            .await
        }
        Command::Scale {
            instance,
            node_cpus,
            db_cpus,
            wait,
        } => {
            let body = json!({ "kind": "scale", "node_cpus": node_cpus, "db_cpus": db_cpus });
            queue(&c, &op_path(&instance), body, &wait, json_out).await
        }
        Command::Vars {
            instance,
            vars,
            wait,
        } => {
            let body = json!({ "kind": "set-vars", "vars": pairs(&vars)? });
            queue(&c, &op_path(&instance), body, &wait, json_out).await
        }
        Command::Config {
            instance,
            config,
            secret,
            unset,
            unset_secret,
            wait,
        } => {
            let body = json!({
                "kind": "set-config", "config": pairs(&config)?, "secret_config": pairs(&secret)?,
                "remove_config": unset, "remove_secret_config": unset_secret,
            });
            queue(&c, &op_path(&instance), body, &wait, json_out).await
        }
        Command::Export { instance, output } => {
            export::run(&c, &conn.server, &op_path(&instance), output.as_deref()).await
        }
        Command::Ops {
            instance,
            id,
            limit,
        } => {
            let ops = match (id, instance) {
                (Some(id), _) => vec![c.get(&format!("/v1/operations/{id}")).await?],
                (None, Some(i)) => {
                    let v = c.get(&format!("{}?limit={limit}", op_path(&i))).await?;
                    v["operations"].as_array().cloned().unwrap_or_default()
                }
                (None, None) => return Err(ClientError::Usage("give an instance or --id".into())),
            };
            if json_out {
                return Ok(pretty(&json!(ops)));
            }
            Ok(table(
                &OP_HEADERS,
                &ops.iter().map(op_row).collect::<Vec<_>>(),
            ))
        }
        Command::Audit { instance, limit } => {
            let path = match instance {
                Some(i) => format!("/v1/deployments/{i}/audit?limit={limit}"),
                None => format!("/v1/audit?limit={limit}"),
            };
            let v = c.get(&path).await?;
            if json_out {
                return Ok(pretty(&v));
            }
            let rows: Vec<Vec<String>> = v["audit"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            ["id", "who", "action", "instance", "outcome", "detail"]
                                .iter()
                                .map(|k| cell(&e[*k]))
                                .chain([time(&e["at"])])
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(table(
                &["id", "who", "action", "instance", "outcome", "detail", "at"],
                &rows,
            ))
        }
        Command::Logs(args) => logs::run(&c, &args, json_out).await,
        Command::Keys {
            instance,
            rotate: Some(key),
            wait,
        } => {
            let key = match key {
                args::RotateKey::Server => "server",
                args::RotateKey::Runtime => "runtime",
            };
            queue(
                &c,
                &op_path(&instance),
                json!({ "kind": "rotate-key", "key": key }),
                &wait,
                json_out,
            )
            .await
        }
        Command::Keys { instance, .. } => {
            let v = c.get(&format!("/v1/deployments/{instance}/keys")).await?;
            if json_out {
                return Ok(pretty(&v));
            }
            Ok(format!(
                "server_key   {}\nruntime_key  {}",
                cell(&v["server_key"]),
                cell(&v["runtime_key"])
            ))
        }
        Command::Versions => {
            let v = c.get("/v1/versions").await?;
            if json_out {
                return Ok(pretty(&v));
            }
            let rows: Vec<Vec<String>> = v["versions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            vec![
                                cell(&x["version"]),
                                cell(&x["support"]),
                                if x["latest"] == true {
                                    "latest".into()
                                } else {
                                    String::new()
                                },
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(table(&["version", "support", ""], &rows))
        }
        Command::Usage { instance, from, to } => {
            support::usage(&c, &instance, from.as_deref(), to.as_deref(), json_out).await
        }
        Command::Zones(args) => support::zones(&c, args, json_out).await,
        Command::Console(cmd) => console::run(&c, cmd, json_out).await,
        Command::Whoami => Ok(pretty(&c.get("/v1/whoami").await?)),
        Command::Users(cmd) => users::run(&c, cmd, json_out).await,
        Command::Notify(cmd) => notify::run(&c, cmd, json_out).await,
        Command::Builders(cmd) => builds::builders(&c, cmd, json_out).await,
        Command::Build {
            instance,
            builder,
            wait,
        } => {
            let body = builds::build_body(&c, &instance, builder).await?;
            queue(&c, &op_path(&instance), body, &wait, json_out).await
        }
        Command::Builds(cmd) => builds::builds(&c, cmd, json_out).await,
        Command::Grant(g) => grant(&c, g, json_out).await,
        Command::Grants(cmd) => grants(&c, cmd, json_out).await,
    }
}

async fn grants(c: &Client, cmd: GrantsCmd, json_out: bool) -> Result<String, ClientError> {
    match cmd {
        GrantsCmd::List { user } => {
            let v = c
                .get(&format!("/v1/users/{}/grants", segment(&user)))
                .await?;
            if json_out {
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            let rows: Vec<Vec<String>> = v["grants"]
                .as_array()
                .map(|a| a.iter().map(grant_row).collect())
                .unwrap_or_default();
            Ok(table(&["id", "level", "scope", "permissions"], &rows))
        }
        GrantsCmd::Revoke { id } => {
            c.call(reqwest::Method::DELETE, &format!("/v1/grants/{id}"), None)
                .await?;
            // The API answers 204 without a body; give scripts something to parse.
            Ok(if json_out {
                serde_json::to_string_pretty(&json!({ "revoked": id })).unwrap_or_default()
            } else {
                format!("revoked grant {id}")
            })
        }
    }
}

async fn deployments(
    c: &Client,
    cmd: DeploymentsCmd,
    json_out: bool,
) -> Result<String, ClientError> {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match cmd {
        DeploymentsCmd::Create {
            instance,
            zone,
            kind,
            version,
            org,
            title,
            node_cpus,
            db_cpus,
            no_delete_protection,
            wait,
        } => {
            let mut body = json!({
                "instance": instance, "zone": zone, "version": version, "org": org, "title": title,
                "type": match kind { Kind::Development => "development", Kind::Production => "production" },
                "node_cpus": node_cpus, "db_cpus": db_cpus,
            });
            if no_delete_protection {
                body["delete_protection"] = json!(false);
            }
            let v = c.post("/v1/deployments", &body).await?;
            let mut out = if json_out {
                pretty(&v)
            } else {
                format!(
                    "created {} ({}); first deploy is operation {}",
                    cell(&v["deployment"]["instance"]),
                    cell(&v["deployment"]["hostname"]),
                    cell(&v["operation"]["id"])
                )
            };
            if wait.wait {
                let op = follow(c, &v["operation"], &wait, json_out).await?;
                out.push('\n');
                out.push_str(&summary(&op, json_out));
            }
            Ok(out)
        }
        DeploymentsCmd::List => {
            let v = c.get("/v1/deployments").await?;
            if json_out {
                return Ok(pretty(&v));
            }
            let rows: Vec<Vec<String>> = v["deployments"]
                .as_array()
                .map(|a| a.iter().map(deployment_row).collect())
                .unwrap_or_default();
            Ok(table(&DEPLOYMENT_HEADERS, &rows))
        }
        DeploymentsCmd::Show { instance } => {
            let d = c.get(&format!("/v1/deployments/{instance}")).await?;
            if json_out {
                return Ok(pretty(&d));
            }
            let mut out = table(&DEPLOYMENT_HEADERS, &[deployment_row(&d)]);
            out.push_str(&format!(
                "\n\nnode_cpus {}  db_cpus {}  delete_protection {}  generation {}\n\n",
                d["spec"]["node_cpus"],
                d["spec"]["db_cpus"],
                d["delete_protection"],
                d["generation"]
            ));
            let nodes: Vec<Vec<String>> = d["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|n| {
                            ["id", "state", "addr", "generation"]
                                .iter()
                                .map(|k| cell(&n[*k]))
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&table(&["node", "state", "addr", "generation"], &nodes));
            let queue: Vec<Vec<String>> = d["queue"]
                .as_array()
                .map(|a| a.iter().map(op_row).collect())
                .unwrap_or_default();
            if !queue.is_empty() {
                out.push_str("\n\n");
                out.push_str(&table(&OP_HEADERS, &queue));
            }
            Ok(out)
        }
        DeploymentsCmd::Protect { instance, state } => {
            let body = json!({ "delete_protection": state == "on" });
            let d = c
                .call(
                    reqwest::Method::PATCH,
                    &format!("/v1/deployments/{instance}"),
                    Some(&body),
                )
                .await?;
            Ok(if json_out {
                pretty(&d)
            } else {
                format!("{instance}: delete protection {state}")
            })
        }
        DeploymentsCmd::AllowDowngrade { instance, version } => {
            support::allow_downgrade(c, &instance, &version, json_out).await
        }
        DeploymentsCmd::Delete { instance, wait } => {
            let op = c
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/deployments/{instance}"),
                    None,
                )
                .await?;
            if wait.wait {
                let op = follow(c, &op, &wait, json_out).await?;
                return Ok(summary(&op, json_out));
            }
            Ok(summary(&op, json_out))
        }
    }
}

async fn grant(c: &Client, g: GrantArgs, json_out: bool) -> Result<String, ClientError> {
    let scope = match (g.deployment, g.org, g.title) {
        (Some(i), _, _) => json!({ "level": "deployment", "instance": i }),
        (None, Some(org), Some(title)) => json!({ "level": "title", "org": org, "title": title }),
        (None, Some(org), None) => json!({ "level": "organization", "org": org }),
        (None, None, _) => {
            return Err(ClientError::Usage(
                "give --org, --org and --title, or --deployment".into(),
            ))
        }
    };
    let v = c
        .post(
            "/v1/grants",
            &json!({ "user": g.user, "scope": scope, "permissions": g.permissions }),
        )
        .await?;
    Ok(if json_out {
        serde_json::to_string_pretty(&v).unwrap_or_default()
    } else {
        format!("granted {} to {}", g.permissions.join(","), g.user)
    })
}

async fn queue(
    c: &Client,
    path: &str,
    body: Value,
    wait: &Wait,
    json_out: bool,
) -> Result<String, ClientError> {
    let op = submit_and_wait(c, path, body, wait, json_out).await?;
    Ok(summary(&op, json_out))
}

async fn submit_and_wait(
    c: &Client,
    path: &str,
    body: Value,
    wait: &Wait,
    quiet: bool,
) -> Result<Value, ClientError> {
    let op = c.post(path, &body).await?;
    if wait.wait {
        return follow(c, &op, wait, quiet).await;
    }
    Ok(op)
}

fn summary(op: &Value, json_out: bool) -> String {
    if json_out {
        return serde_json::to_string_pretty(op).unwrap_or_default();
    }
    table(&OP_HEADERS, &[op_row(op)])
}

/// Polls an operation until it finishes, printing a line whenever its progress changes
/// ("node n of N (alpha-0): draining").
async fn follow(c: &Client, op: &Value, wait: &Wait, quiet: bool) -> Result<Value, ClientError> {
    let id = op["id"]
        .as_u64()
        .ok_or_else(|| ClientError::Usage("no operation id in answer".into()))?;
    let rounds = (wait.wait_limit.as_millis() / POLL.as_millis()).max(1);
    let mut last = String::new();
    for _ in 0..rounds {
        let op = c.get(&format!("/v1/operations/{id}")).await?;
        let row = op_row(&op);
        let line = format!("operation {id} {}: {}", row[2], row[6]);
        if !quiet && line != last {
            eprintln!("{line}");
            last = line;
        }
        match op["status"].as_str() {
            Some("completed") => return Ok(op),
            Some("failed") => return Err(ClientError::OperationFailed(id, cell(&op["error"]))),
            _ => tokio::time::sleep(POLL).await,
        }
    }
    Err(ClientError::WaitTimeout(id))
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn user_names_stay_one_path_segment() {
        assert_eq!(segment("ci-bot_2.x~"), "ci-bot_2.x~");
        assert_eq!(segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(segment("ü"), "%C3%BC");
    }
}
