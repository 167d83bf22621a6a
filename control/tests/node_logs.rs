//! `GET /v1/deployments/{instance}/logs` over a real `kanmon serve --driver local`: what the
//! demo node printed is found by text, filtered by severity and time, behind `view`, and
//! exported as ndjson.

mod common;

use common::Server;
use serde_json::{json, Value};

fn start(dir: &std::path::Path) -> Server {
    let logs = dir.join("logs");
    Server::start(
        &dir.join("k.db"),
        &[
            "--driver",
            "local",
            "--node-program",
            env!("CARGO_BIN_EXE_kanmon"),
            "--node-arg",
            "demo-node",
            "--node-arg",
            "--listen",
            "--node-arg",
            "127.0.0.1:0",
            "--log-dir",
            logs.to_str().unwrap(),
        ],
    )
}

fn lines(v: &Value) -> Vec<Value> {
    v["lines"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn node_output_is_searchable_by_text_severity_and_time_behind_view() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    s.create("alpha", "development", 1).await;

    let (status, v) = s
        .get("/v1/deployments/alpha/logs?q=listening+on", &s.admin)
        .await;
    assert_eq!(status, 200, "{v}");
    let found = lines(&v);
    assert_eq!(found.len(), 1, "{v}");
    let record = &found[0];
    assert_eq!(record["node"], "alpha-0", "{v}");
    assert_eq!(record["stream"], "stdout", "{v}");
    assert_eq!(record["severity"], "info", "{v}");
    assert!(
        record["line"]
            .as_str()
            .unwrap()
            .starts_with("listening on 127.0.0.1:"),
        "{v}"
    );
    assert!(record["ts"].as_str().unwrap().ends_with('Z'), "{v}");

    // Filters that exclude it: a higher severity, a range ending an hour ago, other text.
    for query in [
        "severity=warn",
        "until=1h",
        "q=nothing+like+this",
        "since=2999-01-01T00:00:00Z",
    ] {
        let (status, v) = s
            .get(&format!("/v1/deployments/alpha/logs?{query}"), &s.admin)
            .await;
        assert_eq!(status, 200, "{query}: {v}");
        assert!(lines(&v).is_empty(), "{query}: {v}");
    }
    let (status, v) = s
        .get("/v1/deployments/alpha/logs?since=10m&limit=1", &s.admin)
        .await;
    assert_eq!((status, lines(&v).len()), (200, 1), "{v}");
    let (status, v) = s
        .get("/v1/deployments/alpha/logs?since=yesterday", &s.admin)
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("since"), "{v}");

    // `view` on the deployment is needed, and enough.
    let alpha = json!({ "level": "deployment", "instance": "alpha" });
    let bob = s.user("bob", &[(alpha, &["view"])]).await;
    let carol = s.user("carol", &[]).await;
    assert_eq!(s.get("/v1/deployments/alpha/logs", &bob).await.0, 200);
    let (status, v) = s.get("/v1/deployments/alpha/logs", &carol).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["missing_permission"], "view", "{v}");
}

#[tokio::test]
async fn logs_export_as_an_ndjson_download() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    s.create("alpha", "development", 1).await;
    let resp = s
        .http
        .get(format!("{}/v1/deployments/alpha/logs?format=ndjson", s.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("alpha-logs.ndjson"));
    let body = resp.text().await.unwrap();
    let records: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["line"].as_str().unwrap_or("").starts_with("listening on")),
        "{body}"
    );
}

#[tokio::test]
async fn kanmon_logs_prints_the_matching_lines() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    s.create("alpha", "development", 1).await;
    let cli = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kanmon"))
            .args(["--server", &s.url, "--token-file"])
            .arg(dir.path().join("k.db.admin-token"))
            .args(["logs", "alpha"])
            .args(extra)
            .env_remove("KANMON_TOKEN")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = cli(&["--grep", "listening on", "--since", "10m"]);
    let line = text.lines().next().unwrap_or_default();
    assert!(
        line.contains(" alpha-0 info  listening on 127.0.0.1:"),
        "{text}"
    );
    assert!(cli(&["--severity", "warn"]).trim().is_empty());
}
