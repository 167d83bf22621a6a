//! `kanmon serve --driver kubernetes` (the binary) against the wire-level API fixture and its
//! simulated cluster: a deployment created through the API runs as Ready pods in its
//! namespace, a reboot completes, deleting a deployment deletes its namespace,
//! `--nodes-file` is refused under this driver, and a build runs as a Job of the cluster.

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

/// Build pods exit at once with a log and an image reference as their termination message.
#[derive(Debug)]
struct Builds;

impl kanmon_testkit::k8s::jobs::JobScript for Builds {
    fn step(&self, pod: &serde_json::Value) -> Option<kanmon_testkit::k8s::jobs::JobStep> {
        (pod["metadata"]["labels"]["kanmon.dev/component"] == "build").then(|| {
            kanmon_testkit::k8s::jobs::JobStep::Exit {
                code: 0,
                logs: vec![("build".into(), "built in the cluster\n".into())],
                message: "registry.example/alpha/game:b1".into(),
            }
        })
    }
}

/// Under `--driver kubernetes` a build runs as a Job of the cluster, not on this machine: the
/// builder's git URL is never cloned here, and the image is the Job's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_builds_as_cluster_jobs() {
    let api = std::sync::Arc::new(ApiFixture::start().await);
    let _sim = kanmon_testkit::k8s::sim::SimCluster::start(
        &api,
        kanmon_testkit::k8s::sim::SimOpts {
            grace: Duration::from_millis(300),
            jobs: Some(std::sync::Arc::new(Builds)),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kanmon.toml");
    std::fs::write(
        &config,
        format!(
            "[builds]\ncommand = \"make push\"\ndir = {:?}\nimage = \"reg.example/builder:{{version}}\"\n",
            dir.path().join("builds")
        ),
    )
    .unwrap();
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
                "--config",
                config.to_str().unwrap(),
            ],
        )
    })
    .await
    .unwrap();
    s.create("alpha", "development", 1).await;
    let body =
        json!({ "name": "main", "source": "https://git.example/game.git", "version": "3.37.0" });
    let (status, v) = s
        .post("/v1/deployments/alpha/builders", &s.admin, body)
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, op) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "build", "builder": "main" }),
        )
        .await;
    assert_eq!(status, 202, "{op}");
    let id = op["id"].as_u64().unwrap();
    let op = s.wait_op(id).await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["result"]["image"], "registry.example/alpha/game:b1");
    let job = api
        .get(Kind::Job, "kanmon-alpha", &format!("alpha-build-{id}"))
        .expect("the build Job");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        "reg.example/builder:3.37.0"
    );
    let (_, b) = s
        .get(&format!("/v1/deployments/alpha/builds/{id}/log"), &s.admin)
        .await;
    assert!(
        b["log"].as_str().unwrap().contains("built in the cluster"),
        "{b}"
    );
    assert!(
        !dir.path().join("builds/alpha/work").exists(),
        "cloned locally"
    );
}
