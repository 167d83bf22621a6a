//! `kanmon users ...`: create users, rotate their tokens, disable and enable them.

use serde_json::json;

use super::{args::UsersCmd, segment, table::cell, Client, ClientError};

/// Runs a `users` subcommand.
pub(super) async fn run(c: &Client, cmd: UsersCmd, json_out: bool) -> Result<String, ClientError> {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match cmd {
        UsersCmd::Create {
            name,
            service,
            admin,
            expires_in,
        } => {
            let body = json!({
                "name": name, "service": service, "admin": admin, "expires_in": expires_in,
            });
            let v = c.post("/v1/users", &body).await?;
            if json_out {
                return Ok(pretty(&v));
            }
            Ok(format!(
                "created user {name}; token (shown once, expires {}): {}",
                expires(&v["expires_at"]),
                cell(&v["token"])
            ))
        }
        UsersCmd::RotateToken { name, expires_in } => {
            let mut path = format!("/v1/users/{}/token", segment(&name));
            if let Some(e) = &expires_in {
                path.push_str(&format!("?expires_in={}", segment(e)));
            }
            let v = c.post(&path, &json!({})).await?;
            if json_out {
                return Ok(pretty(&v));
            }
            Ok(format!(
                "rotated the token of {name}; old tokens no longer work; new token (shown once, expires {}): {}",
                expires(&v["expires_at"]),
                cell(&v["token"])
            ))
        }
        UsersCmd::Disable { name } => {
            c.post(&format!("/v1/users/{}/disable", segment(&name)), &json!({}))
                .await?;
            Ok(format!("disabled {name}: its tokens are refused"))
        }
        UsersCmd::Enable { name } => {
            c.post(&format!("/v1/users/{}/enable", segment(&name)), &json!({}))
                .await?;
            Ok(format!("enabled {name}"))
        }
    }
}

fn expires(at: &serde_json::Value) -> String {
    if at.is_null() {
        "never".into()
    } else {
        super::table::time(at)
    }
}
