//! `kanmon serve --driver local`: nodes as real child processes (the hidden demo node), a
//! rolling reboot, and the proxy nodes file kept in step.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn rolling_reboot_with_process_nodes_and_nodes_file() {
    let dir = tempfile::tempdir().unwrap();
    let nodes_file = dir.path().join("nodes.toml");
    let logs = dir.path().join("logs");
    let s = Server::start(
        &dir.path().join("k.db"),
        &[
            "--grace",
            "1s",
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
            "--nodes-file",
            nodes_file.to_str().unwrap(),
        ],
    );
    s.create("alpha", "production", 2).await;
    let before = std::fs::read_to_string(&nodes_file).unwrap();
    assert_eq!(before.matches("state = \"ready\"").count(), 2, "{before}");
    let (_, d) = s.get("/v1/deployments/alpha", &s.admin).await;
    let old_addr = d["nodes"][0]["addr"].as_str().unwrap().to_string();
    assert!(before.contains(&old_addr));

    let (status, op) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "reboot" }),
        )
        .await;
    assert_eq!(status, 202);
    let op = s.wait_op(op["id"].as_u64().unwrap()).await;
    assert_eq!(op["status"], "completed", "{op}");
    let (_, d) = s.get("/v1/deployments/alpha", &s.admin).await;
    let new_addr = d["nodes"][0]["addr"].as_str().unwrap();
    assert_ne!(new_addr, old_addr, "node 0 is a new process on a new port");
    let after = std::fs::read_to_string(&nodes_file).unwrap();
    assert!(
        after.contains(new_addr) && !after.contains(&old_addr),
        "{after}"
    );
    assert!(logs.join("alpha/alpha-1.log").exists());
}
