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

/// Runs the `kanmon` CLI against `s` with `token`; (success, stdout, stderr).
fn cli(s: &Server, token_file: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args(args)
        .env("KANMON_SERVER", &s.url)
        .env("KANMON_TOKEN_FILE", token_file)
        .env_remove("KANMON_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Builders and builds through a real `kanmon serve` and the CLI: a builder of a directory
/// source, a build queued as an operation whose result is the stored artifact, its log, the
/// permissions (`edit` for builders, `deploy` for a build), unsupported versions refused, and
/// a failing build failing its operation with its output in the log.
#[tokio::test]
async fn builders_and_builds_through_the_api_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("game");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("VERSION"), "v1\n").unwrap();
    let builds = dir.path().join("builds");
    let logs = dir.path().join("logs");
    // The build command: the artifact says what it was built for, then runs the demo node.
    let script = dir.path().join("build.sh");
    std::fs::write(
        &script,
        format!(
            "set -e\necho compiling $(cat VERSION) against $KANMON_BUILD_VERSION\n\
             test -f FAIL && exit 3\n\
             printf '#!/bin/sh\\necho built-for=%s >&2\\nexec %s \"$@\"\\n' \
             \"$KANMON_BUILD_VERSION\" {:?} > \"$KANMON_BUILD_OUTPUT\"\n",
            env!("CARGO_BIN_EXE_kanmon")
        ),
    )
    .unwrap();
    let config = dir.path().join("kanmon.toml");
    std::fs::write(
        &config,
        format!(
            "[builds]\ncommand = \"sh {}\"\ndir = {:?}\ntimeout = \"20s\"\n",
            script.display(),
            builds.display()
        ),
    )
    .unwrap();
    let s = Server::start(
        &dir.path().join("k.db"),
        &[
            "--grace",
            "100ms",
            "--config",
            config.to_str().unwrap(),
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
    );
    s.create("alpha", "production", 1).await;
    let admin = dir.path().join("admin-token");
    std::fs::write(&admin, &s.admin).unwrap();
    let src_text = src.to_str().unwrap();

    let (ok, out, err) = cli(
        &s,
        &admin,
        &[
            "builders",
            "create",
            "alpha",
            "main",
            "--source",
            src_text,
            "--version",
            "3.37.0",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("created builder main"), "{out}");
    // An unsupported version and a command-running git transport are refused.
    let (ok, _, err) = cli(
        &s,
        &admin,
        &[
            "builders",
            "create",
            "alpha",
            "old",
            "--source",
            src_text,
            "--version",
            "3.20.0",
        ],
    );
    assert!(!ok && err.contains("3.20.0"), "{err}");
    let body = json!({ "name": "x", "source": "ext::sh -c id", "version": "3.37.0" });
    let (status, v) = s
        .post("/v1/deployments/alpha/builders", &s.admin, body)
        .await;
    assert_eq!(status, 400, "{v}");
    let (ok, out, _) = cli(&s, &admin, &["builders", "list", "alpha"]);
    assert!(
        ok && out.contains("main") && out.contains("3.37.0"),
        "{out}"
    );

    // A viewer sees builders but cannot create one or build.
    let org = json!({ "level": "organization", "org": "acme" });
    let viewer = s.user("viewer", &[(org.clone(), &["view", "edit"])]).await;
    let (status, v) = s
        .post(
            "/v1/deployments/alpha/operations",
            &viewer,
            json!({ "kind": "build", "builder": "main" }),
        )
        .await;
    assert_eq!(
        (status, &v["missing_permission"]),
        (403, &json!("deploy")),
        "{v}"
    );
    let reader = s.user("reader", &[(org, &["view"])]).await;
    let body = json!({ "name": "y", "source": src_text, "version": "3.37.0" });
    let (status, v) = s
        .post("/v1/deployments/alpha/builders", &reader, body)
        .await;
    assert_eq!(
        (status, &v["missing_permission"]),
        (403, &json!("edit")),
        "{v}"
    );

    // The build: an operation whose result is the stored, runnable artifact.
    let (ok, out, err) = cli(&s, &admin, &["--json", "build", "alpha", "--wait"]);
    assert!(ok, "{err}");
    let op: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(op["kind"], "build", "{op}");
    let image = op["result"]["image"].as_str().unwrap().to_string();
    let own = builds.join("alpha").join("images");
    assert!(image.starts_with(own.to_str().unwrap()), "{image}");

    // Deploying the build's image: the node runs the artifact, which says what it was built
    // for (in the node's log) and then serves as the demo node.
    let (ok, _, err) = cli(
        &s,
        &admin,
        &[
            "deploy",
            "alpha",
            "--version",
            "3.37.0",
            "--image",
            &image,
            "--wait",
        ],
    );
    assert!(ok, "{err}");
    let node_log = std::fs::read_to_string(logs.join("alpha/alpha-0.log")).unwrap_or_default();
    assert!(node_log.contains("built-for=3.37.0"), "{node_log}");
    let (_, d) = s.get("/v1/deployments/alpha", &s.admin).await;
    assert_eq!(d["nodes"][0]["state"], "ready", "{d}");
    let id = op["id"].as_u64().unwrap().to_string();
    let (ok, log, _) = cli(&s, &admin, &["builds", "log", "alpha", &id]);
    assert!(ok && log.contains("compiling v1 against 3.37.0"), "{log}");
    let (status, _) = s
        .get(&format!("/v1/deployments/other/builds/{id}/log"), &s.admin)
        .await;
    assert_eq!(status, 404);

    // A failing build fails its operation; its output is in its log.
    std::fs::write(src.join("FAIL"), "").unwrap();
    let (ok, _, err) = cli(
        &s,
        &admin,
        &["build", "alpha", "--builder", "main", "--wait"],
    );
    assert!(!ok && err.contains("exit"), "{err}");
    let (ok, out, _) = cli(&s, &admin, &["--json", "builds", "list", "alpha"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["builds"][0]["status"], "failed", "{list}");
    assert_eq!(list["builds"][1]["status"], "succeeded", "{list}");
    let (ok, _, err) = cli(&s, &admin, &["build", "alpha", "--builder", "nope"]);
    assert!(!ok && err.contains("not found"), "{err}");

    let (ok, _, err) = cli(&s, &admin, &["builders", "delete", "alpha", "main"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&s, &admin, &["build", "alpha"]);
    assert!(!ok && err.contains("no builder"), "{err}");
    let (_, audit) = s.get("/v1/deployments/alpha/audit", &s.admin).await;
    let text = audit.to_string();
    for action in [
        "builders.create",
        "operations.build",
        "builds.log",
        "builders.delete",
    ] {
        assert!(text.contains(action), "{action} not audited: {audit}");
    }
    let body = json!({ "name": "old", "source": src_text, "version": "3.20.0" });
    let (status, _) = s
        .post("/v1/deployments/alpha/builders", &s.admin, body)
        .await;
    assert_eq!(status, 422, "an unsupported version");
    let (_, doc) = s
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert!(doc["paths"]["/v1/deployments/{instance}/builders"]["post"].is_object());
    assert!(doc["paths"]["/v1/deployments/{instance}/builds/{id}/log"]["get"].is_object());
}
