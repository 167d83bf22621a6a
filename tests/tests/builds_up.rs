//! Builds end to end under `kanmon up` (the real binary, local driver): a builder of a local
//! directory, a build triggered with the CLI, its progress (`kanmon builds list` shows it
//! running) and its log (`kanmon builds log`), then `kanmon deploy --image` of the result: the
//! nodes run the built artifact, which tells the demo node what it was built from, and the
//! node reports it (`GET /kanmon/received`, through the edge).

use std::{path::Path, process::Command, time::Duration};

use kanmon_control::cli::Client;
use kanmon_tests::{
    client_config, http_get, tls_connect,
    up_process::{Output, StateDir, UpOpts, UpProcess, DEMO_HOST},
    workspace_bin,
};
use serde_json::Value;

fn cli(up: &UpProcess, token: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_bin("kanmon"))
        .args(args)
        .env("KANMON_SERVER", format!("http://{}", up.api))
        .env("KANMON_TOKEN_FILE", token)
        .env_remove("KANMON_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn wait_op(client: &Client, id: u64) -> Value {
    for _ in 0..600 {
        let op = client.get(&format!("/v1/operations/{id}")).await.unwrap();
        if op["status"] == "completed" || op["status"] == "failed" {
            return op;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operation {id} did not finish");
}

/// `GET /kanmon/received` of whichever node the edge picks.
async fn received(up: &UpProcess) -> Value {
    let ca = up.state.join("certs").join("ca.crt");
    let tls = tls_connect(up.tls, DEMO_HOST, client_config(&ca))
        .await
        .unwrap();
    let (status, body) = http_get(tls, DEMO_HOST, "/kanmon/received").await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_under_kanmon_up_is_deployed_and_run_by_the_nodes() {
    let state = StateDir::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("game");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("VERSION"), "v7\n").unwrap();
    let gate = work.path().join("go");
    // The "compiler": waits (bounded) for the test to let it finish, so its progress is seen;
    // its artifact is a node program that tells the demo node what it was built from.
    let script = work.path().join("build.sh");
    std::fs::write(
        &script,
        format!(
            "set -e\necho compiling $(cat VERSION) against $KANMON_BUILD_VERSION\n\
             for i in $(seq 1 600); do test -f {gate:?} && break; sleep 0.1; done\n\
             printf '#!/bin/sh\\nexport KANMON_VAR_BUILT_FOR=%s KANMON_VAR_SOURCE=%s\\nexec %s \"$@\"\\n' \
             \"$KANMON_BUILD_VERSION\" \"$(cat VERSION)\" {:?} > \"$KANMON_BUILD_OUTPUT\"\n\
             echo done\n",
            workspace_bin("kanmon-bench")
        ),
    )
    .unwrap();
    let config = work.path().join("kanmon.toml");
    std::fs::write(
        &config,
        format!(
            "[builds]\ncommand = \"sh {}\"\ndir = {:?}\ntimeout = \"120s\"\n",
            script.display(),
            work.path().join("builds")
        ),
    )
    .unwrap();
    let mut up = UpProcess::start(
        state.path(),
        &UpOpts {
            database: false,
            output: Output::File,
            extra_args: vec!["--config".into(), config.display().to_string()],
        },
    );
    up.served().await;
    let client = Client::new(&format!("http://{}", up.api), up.token());
    // The demo's first operations (certificate, deploy) end before the build is queued.
    for id in 1..=2 {
        assert_eq!(wait_op(&client, id).await["status"], "completed");
    }
    let token = work.path().join("token");
    std::fs::write(&token, up.token()).unwrap();

    let (ok, out, err) = cli(
        &up,
        &token,
        &[
            "builders",
            "create",
            "demo",
            "main",
            "--source",
            src.to_str().unwrap(),
            "--version",
            "3.37.1-r1",
        ],
    );
    assert!(ok, "{err}\n{}", up.log());
    assert!(out.contains("created builder main"), "{out}");
    let (ok, out, err) = cli(
        &up,
        &token,
        &["--json", "build", "demo", "--builder", "main"],
    );
    assert!(ok, "{err}");
    let op: Value = serde_json::from_str(&out).unwrap();
    let id = op["id"].as_u64().unwrap();

    // Progress: the build is listed as running until the compiler is let go.
    let mut running = false;
    for _ in 0..300 {
        let (ok, out, _) = cli(&up, &token, &["--json", "builds", "list", "demo"]);
        assert!(ok, "{out}");
        let list: Value = serde_json::from_str(&out).unwrap();
        if list["builds"][0]["id"] == id && list["builds"][0]["status"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running, "the build was never listed as running");
    std::fs::write(&gate, "").unwrap();
    let done = wait_op(&client, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let image = done["result"]["image"].as_str().unwrap().to_string();
    let (ok, log, _) = cli(&up, &token, &["builds", "log", "demo", &id.to_string()]);
    assert!(
        ok && log.contains("compiling v7 against 3.37.1-r1"),
        "{log}"
    );
    let (ok, out, _) = cli(&up, &token, &["builds", "list", "demo"]);
    assert!(ok && out.contains("succeeded"), "{out}");

    // Deployed: every node runs the artifact and reports what it was built from.
    let (ok, _, err) = cli(
        &up,
        &token,
        &[
            "deploy",
            "demo",
            "--version",
            "3.37.1-r1",
            "--image",
            &image,
            "--wait",
        ],
    );
    assert!(ok, "{err}\n{}", up.log());
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = received(&up).await;
        assert_eq!(
            r["received"]["vars"]["KANMON_VAR_BUILT_FOR"], "3.37.1-r1",
            "{r}"
        );
        assert_eq!(r["received"]["vars"]["KANMON_VAR_SOURCE"], "v7", "{r}");
        nodes.insert(r["node"].as_str().unwrap_or_default().to_string());
        if nodes.len() >= 2 {
            break;
        }
    }
    assert!(!nodes.is_empty());
    up.end_with("INT");
}
