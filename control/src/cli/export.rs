//! `kanmon export`: queue an export, wait for it, and optionally download the database dump.

use std::{path::Path, time::Duration};

use serde_json::json;

use super::{args::Wait, submit_and_wait, Client, ClientError};

/// Queues an export at `ops` (the deployment's operations path), waits for it and prints its
/// result; with `output`, streams the dump into that file (created 0600).
pub(super) async fn run(
    c: &Client,
    server: &str,
    ops: &str,
    output: Option<&Path>,
) -> Result<String, ClientError> {
    let wait = Wait {
        wait: true,
        wait_limit: Duration::from_secs(600),
    };
    let op = submit_and_wait(c, ops, json!({ "kind": "export" }), &wait, true).await?;
    let mut result = op["result"].clone();
    let link = result["database"]["download"].as_str().map(str::to_string);
    if let (Some(path), Some(out)) = (&link, output) {
        let bytes = c.download(path, out).await?;
        result["database"]["saved_to"] = json!(out.display().to_string());
        result["database"]["bytes"] = json!(bytes);
    }
    // The API gives the database dump's link as a path; print it as a full URL.
    if let Some(link) = result.pointer_mut("/database/download") {
        if let Some(path) = link.as_str() {
            *link = json!(format!("{}{path}", server.trim_end_matches('/')));
        }
    }
    Ok(serde_json::to_string_pretty(&result).unwrap_or_default())
}
