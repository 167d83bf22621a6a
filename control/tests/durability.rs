//! Durability: kill `kanmon serve` (SIGKILL) in the middle of a rolling operation, start it
//! again on the same database, and check that the queue and states are consistent.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn interrupted_operation_is_failed_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    // A long grace period (the deployment's own, within the platform's cap) holds the
    // rollout in "draining" until we kill the server.
    let s = Server::start(&db, &["--grace", "10m"]);
    s.create("alpha", "production", 2).await;
    let (status, set) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "set-config", "config": { "shutdown_grace_sec": "600" } }),
        )
        .await;
    assert_eq!(status, 202, "{set}");
    let set = s.wait_op(set["id"].as_u64().unwrap()).await;
    assert_eq!(set["status"], "completed", "{set}");

    let (status, upgrade) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "deploy", "version": "3.37.0" }),
        )
        .await;
    assert_eq!(status, 202);
    let (status, export) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "export" }),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(export["status"], "pending");
    let upgrade_id = upgrade["id"].as_u64().unwrap();
    let d = s
        .wait_deployment("alpha", |d| d["nodes"][0]["state"] == "draining")
        .await;
    assert_eq!(d["queue"][0]["status"], "in_progress");
    assert_eq!(d["queue"][0]["progress"]["phase"], "draining");
    s.kill();

    let s = Server::start(&db, &["--grace", "1s"]);
    // The interrupted upgrade is failed (not resumed), the previous version is kept...
    let (_, op) = s
        .get(&format!("/v1/operations/{upgrade_id}"), &s.admin)
        .await;
    assert_eq!(op["status"], "failed", "{op}");
    assert!(op["error"].as_str().unwrap().contains("restart"));
    assert_eq!(op["requested_by"], "admin");
    // ... the operation queued behind it ran ...
    let export = s.wait_op(export["id"].as_u64().unwrap()).await;
    assert_eq!(export["status"], "completed");
    assert_eq!(export["result"]["version"], "3.35.0");
    // ... and the nodes come back ready on the applied version.
    let d = s
        .wait_deployment("alpha", |d| {
            d["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["state"] == "ready"))
        })
        .await;
    assert_eq!(d["version"], "3.35.0");
    assert!(d["queue"].as_array().unwrap().is_empty());
    // The admin token still works (no second bootstrap), ids keep growing, audit survived.
    let (status, again) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "deploy", "version": "3.37.0" }),
        )
        .await;
    assert_eq!(status, 202);
    assert!(again["id"].as_u64().unwrap() > export["id"].as_u64().unwrap());
    assert_eq!(
        s.wait_op(again["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
    let (_, audit) = s
        .get("/v1/deployments/alpha/audit?limit=500", &s.admin)
        .await;
    assert!(audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "deployments.create"));
}
