//! The HTTP API through a real `kanmon serve` process on loopback.

mod common;

use common::Server;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn permissions_secrets_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("k.db"), &["--grace", "1s"]);

    // No token: 401, audited as anonymous.
    let (status, _) = s.call(Method::GET, "/v1/deployments", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = s
        .call(Method::GET, "/v1/deployments", Some("kmn_wrong"), None)
        .await;
    assert_eq!(status, 401);

    s.create("alpha", "production", 2).await;
    let cfg = json!({ "kind": "set-config", "config": { "mode": "pvp" }, "secret_config": { "db_password": "hunter2" } });
    let (status, op) = s
        .post("/v1/deployments/alpha/operations", &s.admin, cfg.clone())
        .await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        s.wait_op(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );

    // bob: everything in the organization, but only view on alpha (most specific wins).
    let bob = s
        .user(
            "bob",
            &[
                (
                    json!({ "level": "organization", "org": "acme" }),
                    &[
                        "view", "edit", "deploy", "delete", "export", "scale", "secrets",
                    ],
                ),
                (
                    json!({ "level": "deployment", "instance": "alpha" }),
                    &["view"],
                ),
            ],
        )
        .await;
    let (status, body) = s.get("/v1/deployments/alpha/keys", &bob).await;
    assert_eq!(status, 403);
    assert_eq!(body["missing_permission"], "secrets");
    let (status, body) = s
        .post(
            "/v1/deployments/alpha/operations",
            &bob,
            json!({ "kind": "reboot" }),
        )
        .await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("deploy"))
    );
    let (status, body) = s
        .post(
            "/v1/deployments/alpha/operations",
            &bob,
            json!({ "kind": "scale", "node_cpus": 3, "db_cpus": 2 }),
        )
        .await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("scale"))
    );
    let (status, body) = s
        .call(Method::DELETE, "/v1/deployments/alpha", Some(&bob), None)
        .await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("delete"))
    );

    // Secrets hidden from bob everywhere he can look; shown to admin.
    let (status, shown) = s.get("/v1/deployments/alpha", &bob).await;
    assert_eq!(status, 200);
    let text = shown.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("server_key"),
        "{text}"
    );
    assert_eq!(shown["spec"]["secret_config"]["db_password"], "<redacted>");
    assert_eq!(shown["spec"]["config"]["mode"], "pvp");
    let (_, ops) = s.get("/v1/deployments/alpha/operations", &bob).await;
    assert!(!ops.to_string().contains("hunter2"));
    let (_, shown) = s.get("/v1/deployments/alpha", &s.admin).await;
    assert_eq!(shown["spec"]["secret_config"]["db_password"], "hunter2");
    let (status, keys) = s.get("/v1/deployments/alpha/keys", &s.admin).await;
    assert_eq!(status, 200);
    assert_eq!(keys["server_key"].as_str().unwrap().len(), 64);

    // Organization-level rights still apply to other deployments of acme.
    let (status, body) = s.post("/v1/deployments", &bob, json!({
        "instance": "beta", "zone": "us-east1", "type": "development", "version": "3.35.0", "org": "acme", "title": "rpg"
    })).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = s.get("/v1/deployments/beta/keys", &bob).await;
    assert_eq!(status, 200);
    // ... but not to another organization.
    let (status, body) = s.post("/v1/deployments", &bob, json!({
        "instance": "gamma", "zone": "us-east1", "type": "development", "version": "3.35.0", "org": "other", "title": "x"
    })).await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("edit"))
    );
    // Only admins manage users.
    let (status, body) = s.post("/v1/users", &bob, json!({ "name": "eve" })).await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("admin"))
    );

    // The audit log has bob's refused and allowed actions with outcome.
    let (_, audit) = s
        .get("/v1/deployments/alpha/audit?limit=200", &s.admin)
        .await;
    let entries = audit["audit"].as_array().unwrap();
    let find = |who: &str, action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["who"] == who && e["action"] == action && e["outcome"] == outcome)
    };
    assert!(find("bob", "keys.read", "denied"));
    assert!(find("bob", "operations.reboot", "denied"));
    assert!(find("bob", "deployments.show", "allowed"));
    assert!(find("admin", "keys.read", "allowed"));
    assert!(find("admin", "operations.set-config", "allowed"));
    assert!(!audit.to_string().contains("hunter2"));
    let (_, all) = s.get("/v1/audit?limit=500", &s.admin).await;
    assert!(all["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["who"] == "anonymous" && e["outcome"] == "denied"));
}

#[tokio::test]
async fn lifecycle_rules_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("k.db"), &["--grace", "1s"]);
    s.create("alpha", "production", 2).await;

    // Permanent choices.
    let (status, body) = s
        .call(
            Method::PATCH,
            "/v1/deployments/alpha",
            Some(&s.admin),
            Some(json!({ "zone": "eu-west1" })),
        )
        .await;
    assert_eq!(status, 409);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("zone is a permanent choice"),
        "{body}"
    );
    // Downgrades and bad versions.
    let (status, body) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "deploy", "version": "3.34.0" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "deploy", "version": "3.32.0" }),
        )
        .await;
    assert_eq!(status, 422);
    // Duplicate instance names.
    let (status, _) = s
        .post(
            "/v1/deployments",
            &s.admin,
            json!({
                "instance": "alpha", "zone": "us-east1", "type": "development", "version": "3.35.0"
            }),
        )
        .await;
    assert_eq!(status, 409);

    // Upgrade rolls node by node and ends on the new version.
    let (status, op) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "deploy", "version": "3.37.0" }),
        )
        .await;
    assert_eq!(status, 202);
    let op = s.wait_op(op["id"].as_u64().unwrap()).await;
    assert_eq!(op["status"], "completed", "{op}");
    let (_, d) = s.get("/v1/deployments/alpha", &s.admin).await;
    assert_eq!(d["version"], "3.37.0");
    assert_eq!(d["nodes"].as_array().unwrap().len(), 2);

    // Delete protection, then delete.
    let (status, body) = s
        .call(
            Method::DELETE,
            "/v1/deployments/alpha",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = s
        .call(
            Method::PATCH,
            "/v1/deployments/alpha",
            Some(&s.admin),
            Some(json!({ "delete_protection": false })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, op) = s
        .call(
            Method::DELETE,
            "/v1/deployments/alpha",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        s.wait_op(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
    let (_, list) = s.get("/v1/deployments", &s.admin).await;
    assert!(list["deployments"].as_array().unwrap().is_empty());

    // The OpenAPI document is served.
    let (status, doc) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/deployments/{instance}/operations"]["post"].is_object());
}

#[tokio::test]
async fn cli_talks_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    // A long grace period holds a reboot in "draining", so its progress is observable.
    let s = Server::start(&db, &["--grace", "10m"]);
    let token_file = format!("{}.admin-token", db.display());
    let kanmon = |args: &[&str], token_file: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kanmon"))
            .args(args)
            .env("KANMON_SERVER", &s.url)
            .env("KANMON_TOKEN_FILE", token_file)
            .env_remove("KANMON_TOKEN")
            .output()
            .unwrap()
    };
    let out = kanmon(
        &[
            "deployments",
            "create",
            "alpha",
            "--zone",
            "us-east1",
            "--type",
            "production",
            "--version",
            "3.35.0",
            "--node-cpus",
            "2",
            "--wait",
        ],
        &token_file,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("operation 1 completed"), "{progress}");
    let out = kanmon(&["reboot", "alpha"], &token_file);
    assert!(out.status.success());
    let mut seen = String::new();
    for _ in 0..100 {
        seen = String::from_utf8_lossy(&kanmon(&["ops", "alpha"], &token_file).stdout).to_string();
        if seen.contains("node 1 of 2 (alpha-0): draining") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen.contains("node 1 of 2 (alpha-0): draining"), "{seen}");
    let out = kanmon(&["deployments", "list", "--json"], &token_file);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["deployments"][0]["instance"], "alpha");
    let out = kanmon(&["versions"], &token_file);
    assert!(String::from_utf8_lossy(&out.stdout).contains("3.37.1-r1  supported"));

    let viewer = s
        .user(
            "viewer",
            &[(
                json!({ "level": "deployment", "instance": "alpha" }),
                &["view"],
            )],
        )
        .await;
    let viewer_file = dir.path().join("viewer-token");
    std::fs::write(&viewer_file, &viewer).unwrap();
    let out = kanmon(&["keys", "alpha"], viewer_file.to_str().unwrap());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing permission: secrets"));
    let out = kanmon(&["keys", "alpha"], &token_file);
    assert!(String::from_utf8_lossy(&out.stdout).contains("server_key"));
}
