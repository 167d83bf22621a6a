//! `kanmon serve --driver kubernetes` (the binary) against the wire-level API fixture and its
//! simulated cluster: a deployment created through the API runs as Ready pods in its
//! namespace, a reboot completes, deleting a deployment deletes its namespace, and
//! `--nodes-file` is refused under this driver.

mod common;

use std::time::Duration;

use common::{
    k8s::{cluster, eventually},
    Server,
};
use kanmon_testkit::k8s::{ApiFixture, Kind};
use serde_json::json;

fn ready_pods(api: &ApiFixture, ns: &str) -> usize {
    api.list(Kind::Pod)
        .into_iter()
        .filter(|p| {
            p["metadata"]["namespace"] == ns
                && p["metadata"]["labels"]["kanmon.dev/component"] == "node"
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_deployments_on_the_cluster() {
    let (api, _sim) = cluster(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig();
    let db = dir.path().join("k.db");
    let s = tokio::task::spawn_blocking(move || {
        Server::start(
            &db,
            &[
                "--grace",
                "200ms",
                "--driver",
                "kubernetes",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
            ],
        )
    })
    .await
    .unwrap();

    let d = s.create("alpha", "production", 2).await;
    assert_eq!(d["instance"], "alpha", "{d}");
    assert_eq!(ready_pods(&api, "kanmon-alpha"), 2);
    let (_, d) = s.get("/v1/deployments/alpha", &s.admin).await;
    assert!(
        d["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "ready"),
        "{d}"
    );

    let (status, op) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "reboot" }),
        )
        .await;
    assert_eq!(status, 202, "{op}");
    let op = s.wait_op(op["id"].as_u64().unwrap()).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(ready_pods(&api, "kanmon-alpha"), 2);

    // A development deployment (no delete protection) is deleted with its namespace.
    s.create("beta", "development", 1).await;
    assert!(api.get(Kind::Namespace, "", "kanmon-beta").is_some());
    let (status, op) = s
        .call(
            reqwest::Method::DELETE,
            "/v1/deployments/beta",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 202, "{op}");
    let op = s.wait_op(op["id"].as_u64().unwrap()).await;
    assert_eq!(op["status"], "completed", "{op}");
    eventually("namespace kanmon-beta deleted", || {
        api.get(Kind::Namespace, "", "kanmon-beta")
            .is_none_or(|n| !n["metadata"]["deletionTimestamp"].is_null())
    })
    .await;
    assert!(api.get(Kind::Namespace, "", "kanmon-alpha").is_some());
    drop(s);

    // The edge reads EndpointSlices under this driver: a nodes file is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args([
            "serve",
            "--driver",
            "kubernetes",
            "--nodes-file",
            "n.toml",
            "--db",
        ])
        .arg(dir.path().join("other.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nodes-file cannot be used"), "{err}");
}
