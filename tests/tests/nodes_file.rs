//! The control plane beside a separate proxy process: `kanmon serve --driver local
//! --nodes-file F` and `kanmon-proxy` with file discovery on `F`. Node states reach the proxy
//! through the atomically rewritten nodes file: requests are routed to the deployment's
//! nodes, and during a rolling reboot the file shows the node being replaced as draining.

use std::time::Duration;

use kanmon_control::{cli::Client, runtime::Settings, up::issue_certs};
use kanmon_tests::{client_config, free_port, http_get, node_program, serve, tls_connect};
use serde_json::json;

const HOST: &str = "alpha.us-east1.kanmon.test";

async fn wait_op(api: &Client, id: u64) -> serde_json::Value {
    serve::wait_op(api, id, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_publishes_through_the_nodes_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let ca = issue_certs(&d.join("certs"), &Settings::default()).expect("certs");
    let nodes = d.join("nodes.toml");
    std::fs::write(&nodes, "").expect("nodes file");

    let node_program = node_program();
    let (logs, certs) = (d.join("logs"), d.join("certs"));
    let (serve, api) = serve::start_serve(
        d,
        &[
            "--driver",
            "local",
            "--grace",
            "3s",
            "--node-program",
            node_program.to_str().expect("utf-8 path"),
            "--log-dir",
            logs.to_str().expect("utf-8 path"),
            "--nodes-file",
            nodes.to_str().expect("utf-8 path"),
            "--cert-dir",
            certs.to_str().expect("utf-8 path"),
        ],
    );

    let (tls_addr, admin_addr) = (free_port(), free_port());
    let config = format!(
        "[listen]\ntls = \"{tls_addr}\"\nadmin = \"{admin_addr}\"\n[tls]\ncert_dir = \"{}\"\n\
         [discovery]\nkind = \"file\"\npath = \"{}\"\n[shutdown]\nupgrade_sock = \"{}\"\n",
        d.join("certs").display(),
        nodes.display(),
        d.join("upgrade.sock").display()
    );
    let proxy = serve::start_proxy(d, &config);

    let created = api
        .post(
            "/v1/deployments",
            &json!({ "instance": "alpha", "zone": "us-east1", "type": "production",
                     "version": "3.37.0", "node_cpus": 2 }),
        )
        .await
        .expect("create");
    let first = created["operation"]["id"].as_u64().unwrap_or(1);
    let op = wait_op(&api, first).await;
    assert_eq!(op["status"], "completed", "{op}");
    // A drain that lasts (the deployment's own grace; unset it would not wait at all).
    let set = api
        .post(
            "/v1/deployments/alpha/operations",
            &json!({ "kind": "set-config", "config": { "shutdown_grace_sec": "2" } }),
        )
        .await
        .expect("set-config");
    let set = wait_op(&api, set["id"].as_u64().expect("id")).await;
    assert_eq!(set["status"], "completed", "{set}");

    // The proxy routes to the nodes the file lists (bounded wait for its watcher).
    let tls = client_config(&ca);
    let mut served = None;
    for _ in 0..200 {
        if let Ok(s) = tls_connect(tls_addr, HOST, tls.clone()).await {
            if let Ok((200, body)) = http_get(s, HOST, "/healthcheck").await {
                served = Some(body);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = served.expect("the proxy never served the deployment");
    assert!(body.contains("alpha-"), "{body}");

    // A rolling reboot: the file shows a node draining while it runs.
    let op = api
        .post(
            "/v1/deployments/alpha/operations",
            &json!({ "kind": "reboot" }),
        )
        .await
        .expect("reboot");
    let id = op["id"].as_u64().expect("id");
    let mut saw_draining = false;
    for _ in 0..1000 {
        let text = std::fs::read_to_string(&nodes).unwrap_or_default();
        saw_draining |= text.contains("\"draining\"");
        let op = api.get(&format!("/v1/operations/{id}")).await.expect("op");
        if op["status"] != "pending" && op["status"] != "in_progress" {
            assert_eq!(op["status"], "completed", "{op}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_draining, "the nodes file never showed a draining node");
    let text = std::fs::read_to_string(&nodes).expect("nodes file");
    assert_eq!(text.matches("\"ready\"").count(), 2, "{text}");
    drop(proxy);
    drop(serve);
}
