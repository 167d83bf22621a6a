//! Billing through a real `kanmon serve`: samples every second, the day in progress charged its
//! highest sample across a scale-up and a scale-down, behind the `billing` permission, through
//! the API and `kanmon usage`.

mod common;

use std::{process::Command, time::Duration};

use common::Server;
use serde_json::{json, Value};

/// Polls the usage until `pred` holds for the day in progress (bounded).
async fn wait_usage(s: &Server, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (status, v) = s.get("/v1/deployments/alpha/usage", &s.admin).await;
        assert_eq!(status, 200, "{v}");
        if pred(&v["in_progress"]) {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("usage never reached the expected state: {last}");
}

async fn scale(s: &Server, node_cpus: u32, db_cpus: u32) {
    let body = json!({ "kind": "scale", "node_cpus": node_cpus, "db_cpus": db_cpus });
    let (status, op) = s
        .post("/v1/deployments/alpha/operations", &s.admin, body)
        .await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        s.wait_op(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
}

#[tokio::test]
async fn the_day_in_progress_is_charged_its_highest_sample() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let s = Server::start(&db, &["--grace", "100ms", "--billing-interval", "1s"]);
    s.create("alpha", "production", 1).await;
    wait_usage(&s, |d| d["node_cpus"] == 1 && d["db_cpus"] == 2).await;

    scale(&s, 3, 3).await;
    wait_usage(&s, |d| d["node_cpus"] == 3 && d["db_cpus"] == 3).await;
    scale(&s, 1, 3).await;
    // A sample taken after the scale-down: the day still costs its maximum.
    let (_, before) = s.get("/v1/deployments/alpha/usage", &s.admin).await;
    let n = before["in_progress"]["samples"].as_u64().unwrap();
    let v = wait_usage(&s, |d| d["samples"].as_u64().unwrap() > n).await;
    assert_eq!(v["in_progress"]["node_cpus"], 3, "{v}");
    assert_eq!(v["in_progress"]["db_cpus"], 3, "{v}");
    assert_eq!(v["days"], json!([]), "no day has ended yet: {v}");

    // The range excludes today: nothing.
    let (status, v) = s
        .get(
            "/v1/deployments/alpha/usage?from=2020-01-01&to=2020-01-31",
            &s.admin,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["in_progress"], Value::Null, "{v}");
    let (status, _) = s
        .get(
            "/v1/deployments/alpha/usage?from=2020-02-01&to=2020-01-01",
            &s.admin,
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = s
        .get("/v1/deployments/alpha/usage?from=last-week", &s.admin)
        .await;
    assert_eq!(status, 400);

    // `billing`, not `view`, opens it.
    let org = json!({ "level": "organization", "org": "acme" });
    let viewer = s.user("viewer", &[(org.clone(), &["view", "scale"])]).await;
    let (status, body) = s.get("/v1/deployments/alpha/usage", &viewer).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["missing_permission"], "billing", "{body}");
    let accountant = s.user("accountant", &[(org, &["view", "billing"])]).await;
    let file = dir.path().join("accountant-token");
    std::fs::write(&file, &accountant).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args(["usage", "alpha"])
        .env("KANMON_SERVER", &s.url)
        .env("KANMON_TOKEN_FILE", &file)
        .env_remove("KANMON_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.ends_with("in progress"))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..3], ["3", "3"], "{text}");
}
