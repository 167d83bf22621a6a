//! The HTTP API through a real `kanmon serve` process on loopback.

mod common;

#[path = "api/console.rs"]
mod console;

use common::Server;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn permissions_secrets_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("k.db"), &["--grace", "1s"]);

    // No token, or a wrong one: 401, and no audit record (there is no actor to record).
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
    assert!(!all["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["who"] == "anonymous"));
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
    // Certificates are queued by the control plane only, even for an admin: every issuance
    // draws on the rate limits of the CA account all tenants share.
    let (status, body) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "certificate" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("queued by the control plane"),
        "{body}"
    );
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
    // A long grace period (the deployment's own, set below within the platform's cap) holds
    // a reboot in "draining", so its progress is observable.
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
    let out = kanmon(
        &[
            "config",
            "alpha",
            "--set",
            "shutdown_grace_sec=600",
            "--wait",
        ],
        &token_file,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// The ids of `user`'s grants, as an admin sees them.
async fn grant_ids(s: &Server, user: &str) -> Vec<u64> {
    let (status, body) = s.get(&format!("/v1/users/{user}/grants"), &s.admin).await;
    assert_eq!(status, 200, "{body}");
    body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_revoked_grant_stops_giving_access() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("k.db"), &["--grace", "1s"]);
    s.create("alpha", "development", 1).await;
    let view_alpha = json!({ "level": "deployment", "instance": "alpha" });
    let bob = s.user("bob", &[(view_alpha.clone(), &["view"])]).await;
    let carol = s.user("carol", &[]).await;

    // Listing: admins see anyone's grants, users their own; ids come with them.
    let (status, body) = s.get("/v1/users/bob/grants", &bob).await;
    assert_eq!(status, 200, "{body}");
    let grants = body["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["user"], "bob");
    assert_eq!(grants[0]["scope"], view_alpha);
    assert_eq!(grants[0]["permissions"], json!(["view"]));
    let id = grants[0]["id"].as_u64().unwrap();
    assert_eq!(grant_ids(&s, "bob").await, vec![id]);
    assert!(grant_ids(&s, "carol").await.is_empty());
    let (status, body) = s.get("/v1/users/admin/grants", &bob).await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("admin"))
    );
    // A non-admin gets 403 for an unknown user too: no probing for names.
    let (status, _) = s.get("/v1/users/nobody/grants", &bob).await;
    assert_eq!(status, 403);
    let (status, _) = s.get("/v1/users/nobody/grants", &s.admin).await;
    assert_eq!(status, 404);

    let (status, _) = s.get("/v1/deployments/alpha", &bob).await;
    assert_eq!(status, 200);

    // Only admins revoke, their own grants included.
    let revoke = |token: &str| {
        let token = token.to_string();
        let s = &s;
        async move {
            s.call(
                Method::DELETE,
                &format!("/v1/grants/{id}"),
                Some(&token),
                None,
            )
            .await
        }
    };
    for token in [&bob, &carol] {
        let (status, body) = revoke(token).await;
        assert_eq!(
            (status, body["missing_permission"].as_str()),
            (403, Some("admin"))
        );
    }
    let (status, _) = s.get("/v1/deployments/alpha", &bob).await;
    assert_eq!(status, 200, "a refused revoke changed nothing");

    let (status, body) = revoke(&s.admin).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(body, serde_json::Value::Null, "204 has no body");
    let (status, body) = s.get("/v1/deployments/alpha", &bob).await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("view"))
    );
    assert!(grant_ids(&s, "bob").await.is_empty());
    let (status, _) = revoke(&s.admin).await;
    assert_eq!(status, 404, "already revoked");

    let (_, all) = s.get("/v1/audit?limit=500", &s.admin).await;
    let entries = all["audit"].as_array().unwrap();
    let find = |who: &str, action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["who"] == who && e["action"] == action && e["outcome"] == outcome)
    };
    assert!(find("bob", "grants.revoke", "denied"));
    assert!(find("bob", "grants.list", "allowed"));
    assert!(find("admin", "grants.revoke", "error"));
    let detail = format!("grant {id}");
    assert!(entries.iter().any(|e| e["action"] == "grants.revoke"
        && e["outcome"] == "allowed"
        && e["detail"] == detail.as_str()));

    // The routes are in the OpenAPI document.
    let (_, doc) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert!(doc["paths"]["/v1/users/{name}/grants"]["get"].is_object());
    assert!(doc["paths"]["/v1/grants/{id}"]["delete"]["responses"]["204"].is_object());
    assert!(doc["paths"]["/v1/users/{name}/token"]["post"].is_object());
    assert!(doc["paths"]["/v1/users/{name}/disable"]["post"].is_object());
    assert!(doc["paths"]["/v1/operations/{id}/download"]["get"].is_object());
}

#[tokio::test]
async fn a_rotated_token_replaces_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("k.db"), &[]);
    let bob = s.user("bob", &[]).await;
    let carol = s.user("carol", &[]).await;

    // An admin rotates bob's (leaked) token: the old one is dead at once.
    let (status, body) = s.post("/v1/users/bob/token", &s.admin, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "bob");
    let bob2 = body["token"].as_str().unwrap().to_string();
    assert!(bob2.starts_with("kmn_") && bob2 != bob, "{bob2}");
    let (status, _) = s.get("/v1/whoami", &bob).await;
    assert_eq!(status, 401);
    let (status, me) = s.get("/v1/whoami", &bob2).await;
    assert_eq!((status, me["user"]["name"].as_str()), (200, Some("bob")));

    // A user rotates their own token, not anyone else's.
    let (status, body) = s.post("/v1/users/carol/token", &bob2, json!({})).await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("admin"))
    );
    let (status, _) = s.get("/v1/whoami", &carol).await;
    assert_eq!(status, 200, "a refused rotation changed nothing");
    let (status, body) = s.post("/v1/users/bob/token", &bob2, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let bob3 = body["token"].as_str().unwrap().to_string();
    let (status, _) = s.get("/v1/whoami", &bob2).await;
    assert_eq!(status, 401);
    let (status, _) = s.get("/v1/whoami", &bob3).await;
    assert_eq!(status, 200);
    // A non-admin gets 403 for an unknown name too: no probing for names.
    let (status, _) = s.post("/v1/users/nobody/token", &bob3, json!({})).await;
    assert_eq!(status, 403);
    let (status, _) = s.post("/v1/users/nobody/token", &s.admin, json!({})).await;
    assert_eq!(status, 404);

    // Audited with whose token it was, never the token itself.
    let (_, all) = s.get("/v1/audit?limit=500", &s.admin).await;
    let text = all.to_string();
    for token in [&bob, &bob2, &bob3, &carol] {
        assert!(!text.contains(token.as_str()));
    }
    let entries = all["audit"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["who"] == "bob" && e["action"] == "tokens.rotate" && e["outcome"] == "denied"));
    assert!(entries.iter().any(|e| e["who"] == "admin"
        && e["action"] == "tokens.rotate"
        && e["outcome"] == "allowed"
        && e["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("user bob;"))));
}

#[tokio::test]
async fn cli_lists_and_revokes_grants_and_rotates_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let s = Server::start(&db, &[]);
    let admin_file = format!("{}.admin-token", db.display());
    let kanmon = |args: &[&str], token_file: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kanmon"))
            .args(args)
            .env("KANMON_SERVER", &s.url)
            .env("KANMON_TOKEN_FILE", token_file)
            .env_remove("KANMON_TOKEN")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    // A name with a slash and a space must stay one path segment.
    let name = "ci/bot x";
    let token = s
        .user(
            name,
            &[
                (json!({ "level": "organization", "org": "acme" }), &["view"]),
                (
                    json!({ "level": "title", "org": "acme", "title": "rpg" }),
                    &["view", "deploy"],
                ),
            ],
        )
        .await;
    let token_file = dir.path().join("bot-token");
    std::fs::write(&token_file, &token).unwrap();
    let bot_file = token_file.to_str().unwrap();

    let (ok, out, err) = kanmon(&["grants", "list", name], &admin_file);
    assert!(ok, "{err}");
    assert!(out.contains("ID  LEVEL"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("title") && l.ends_with("acme/rpg  view,deploy")),
        "{out}"
    );
    let (ok, out, err) = kanmon(&["grants", "list", name, "--json"], bot_file);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = listed["grants"][1]["id"].as_u64().unwrap().to_string();

    let (ok, _, err) = kanmon(&["grants", "revoke", &id], bot_file);
    assert!(!ok);
    assert!(err.contains("missing permission: admin"), "{err}");
    let (ok, out, err) = kanmon(&["grants", "revoke", &id], &admin_file);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("revoked grant {id}"));
    let (_, out, _) = kanmon(&["grants", "list", name, "--json"], &admin_file);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["grants"].as_array().unwrap().len(), 1);

    // Rotating one's own token via the CLI; the old token file is then useless.
    let (ok, out, err) = kanmon(&["users", "rotate-token", name, "--json"], bot_file);
    assert!(ok, "{err}");
    let rotated: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rotated["user"], name);
    let (ok, _, err) = kanmon(&["whoami"], bot_file);
    assert!(!ok && err.contains("401"), "{err}");
    std::fs::write(&token_file, rotated["token"].as_str().unwrap()).unwrap();
    let (ok, out, err) = kanmon(&["users", "rotate-token", name], bot_file);
    assert!(ok, "{err}");
    let (_, new_token) = out.trim().rsplit_once(": ").unwrap();
    assert!(new_token.starts_with("kmn_"), "{out}");
    std::fs::write(&token_file, new_token).unwrap();
    let (ok, _, err) = kanmon(&["users", "rotate-token", "admin"], bot_file);
    assert!(!ok && err.contains("403"), "{err}");

    let (ok, out, _) = kanmon(&["grants", "--help"], &admin_file);
    assert!(ok && out.contains("List and revoke grants"), "{out}");
    let (ok, out, _) = kanmon(&["users", "rotate-token", "--help"], &admin_file);
    assert!(ok && out.contains("leaked token"), "{out}");
}

/// The methods a route may have; anything else the router answers 405 for a known path.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `template` with each `{param}` replaced by a value its type accepts.
fn fill(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{id}" => "1",
            s if s.starts_with('{') => "probe",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Issue #16's merge check: the router and the OpenAPI document list the same routes. Each
/// documented method and path is routed to a handler (an authenticated route answers the API's
/// own 401 to a request without a token, a public one 200), each other method of a documented
/// path is the router's 405, and no code registers a route past the table with `.route(...)`.
#[tokio::test]
async fn every_route_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("k.db"), &[]);
    let (status, served) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        served,
        common::openapi::doc().doc,
        "the served document is the generated one"
    );
    assert_eq!(served["openapi"], "3.1.0");
    let paths = served["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20, "{}", paths.len());
    let mut problems = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for (template, item) in paths {
        for (m, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            if !ids.insert(id.clone()) {
                problems.push(format!(
                    "{m} {template}: operationId {id:?} is not unique; give the handler \
                     operation_id = \"...\" in #[utoipa::path]"
                ));
            }
        }
        let url = format!("{}{}", s.url, fill(template));
        for m in METHODS {
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap();
            let resp = s.http.request(method, &url).send().await.expect("request");
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            match item.get(m) {
                Some(op) => {
                    let public = op["security"] == json!([{}]);
                    let routed = if public {
                        status == 200
                    } else {
                        status == 401 && body["error"].is_string()
                    };
                    if !routed {
                        problems.push(format!(
                            "{m} {template} is documented but not routed (answered {status})"
                        ));
                    }
                    if !public && op["responses"]["401"].is_null() {
                        problems.push(format!("{m} {template} does not document its 401"));
                    }
                }
                None if status != 405 => problems.push(format!(
                    "{m} {template} is routed (answered {status}) but not in the OpenAPI \
                     document: add #[utoipa::path] to its handler and list it in \
                     control/src/api/routes.rs"
                )),
                None => {}
            }
        }
    }
    // A route registered with `.route(...)` is served but never documented, and may sit on a
    // path the document does not know at all: refuse the call itself.
    let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    for entry in std::fs::read_dir(&api).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for call in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".merge(",
                ".nest_service(",
            ] {
                if code.contains(call) {
                    problems.push(format!(
                        "{}:{}: `{call}` registers a route outside the routing table; put \
                         #[utoipa::path] on the handler and add `.routes(routes!(..))` in \
                         control/src/api/routes.rs",
                        path.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The answer check of `Server::call` (which every API test goes through) refuses what the
/// document does not describe: a wrong type, a missing field, a field it does not list, an
/// undocumented status.
#[test]
fn the_answer_check_refuses_what_the_document_does_not_describe() {
    let doc = common::openapi::doc();
    let user =
        json!({ "name": "a", "service": false, "admin": true, "created_at": 1, "disabled": false });
    let refuses = |method: &str, path: &str, status: u16, body: serde_json::Value| {
        std::panic::catch_unwind(|| doc.check(method, path, status, &body)).is_err()
    };
    doc.check(
        "GET",
        "/v1/whoami",
        200,
        &json!({ "user": user, "grants": [] }),
    );
    assert!(refuses(
        "GET",
        "/v1/whoami",
        200,
        json!({ "user": 1, "grants": [] })
    ));
    assert!(refuses("GET", "/v1/whoami", 200, json!({ "user": user })));
    assert!(refuses(
        "GET",
        "/v1/whoami",
        200,
        json!({ "user": user, "grants": [], "token": "kmn_x" })
    ));
    assert!(refuses(
        "GET",
        "/v1/deployments/alpha/keys",
        409,
        json!({ "error": "x" })
    ));
    doc.check(
        "GET",
        "/v1/deployments/alpha/keys",
        403,
        &json!({ "error": "x", "missing_permission": "secrets" }),
    );
    assert_eq!(
        doc.template("/v1/users/bob/token?expires_in=1d"),
        Some("/v1/users/{name}/token")
    );
}

/// The seed's promise: while a rollout crash-loops, a config or variables change (any
/// spec-changing operation) is not stuck behind it for the crash-loop timeout: it supersedes
/// it, audited, and rolls out from the last good spec. A reboot queues behind it instead.
#[tokio::test]
async fn a_variables_change_supersedes_a_crash_looping_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("k.db"),
        &[
            "--grace",
            "1s",
            "--backoff-base",
            "200ms",
            "--backoff-cap",
            "1s",
        ],
    );
    s.create("alpha", "production", 2).await;
    let ops = "/v1/deployments/alpha/operations";
    let (status, bad) = s
        .post(
            ops,
            &s.admin,
            json!({ "kind": "deploy", "version": "3.36.0", "image": "crash" }),
        )
        .await;
    assert_eq!(status, 202, "{bad}");
    let bad = bad["id"].as_u64().unwrap();
    for _ in 0..400 {
        let (_, op) = s.get(&format!("/v1/operations/{bad}"), &s.admin).await;
        if op["progress"]["phase"] == "crash_loop_back_off" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (_, reboot) = s.post(ops, &s.admin, json!({ "kind": "reboot" })).await;
    let (_, op) = s.get(&format!("/v1/operations/{bad}"), &s.admin).await;
    assert_eq!(
        op["status"], "in_progress",
        "a reboot does not supersede: {op}"
    );
    assert_eq!(reboot["status"], "pending", "{reboot}");

    let (status, fix) = s
        .post(
            ops,
            &s.admin,
            json!({ "kind": "set-vars", "vars": { "mode": "pvp" } }),
        )
        .await;
    assert_eq!(status, 202, "{fix}");
    let fix = fix["id"].as_u64().unwrap();
    let op = s.wait_op(bad).await;
    assert_eq!(op["status"], "failed", "{op}");
    let why = op["error"].as_str().unwrap();
    assert!(
        why.contains(&format!("superseded by operation {fix} (set-vars)")),
        "{why}"
    );
    assert_eq!(s.wait_op(fix).await["status"], "completed");
    assert_eq!(
        s.wait_op(reboot["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
    let (_, d) = s.get("/v1/deployments/alpha", &s.admin).await;
    assert_eq!(
        d["version"], "3.35.0",
        "the crashing version never applied: {d}"
    );
    assert_eq!(d["spec"]["vars"]["mode"], "pvp", "{d}");
    let (_, audit) = s
        .get("/v1/deployments/alpha/audit?limit=200", &s.admin)
        .await;
    let superseded: Vec<_> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "operations.superseded")
        .collect();
    assert_eq!(superseded.len(), 1, "{audit}");
    assert_eq!(superseded[0]["who"], "admin");
    assert_eq!(
        superseded[0]["detail"],
        format!(
            "operation {bad} (deploy) in CrashLoopBackOff superseded by operation {fix} (set-vars)"
        )
    );
}
