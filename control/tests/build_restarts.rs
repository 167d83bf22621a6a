//! Builds across restarts and over time, through `kanmon serve` (durability style): a build
//! running when the control plane is killed (SIGKILL) is failed at the next start ("interrupted
//! by a restart"), its operation too, and the queue moves on; the artifacts of old builds are
//! removed, keeping the last N of a builder and the one the deployment's spec runs.

mod common;

use std::path::{Path, PathBuf};

use common::Server;
use serde_json::{json, Value};

fn config(dir: &Path, command: &str, keep: usize) -> PathBuf {
    let config = dir.join("kanmon.toml");
    std::fs::write(
        &config,
        format!(
            "[builds]\ncommand = {command:?}\ndir = {:?}\ntimeout = \"60s\"\nkeep = {keep}\n",
            dir.join("builds").display()
        ),
    )
    .unwrap();
    config
}

async fn builder(s: &Server, src: &Path) {
    let body = json!({ "name": "main", "source": src.to_str().unwrap(), "version": "3.37.0" });
    let (status, v) = s
        .post("/v1/deployments/alpha/builders", &s.admin, body)
        .await;
    assert_eq!(status, 201, "{v}");
}

async fn queue(s: &Server, body: Value) -> u64 {
    let (status, op) = s
        .post("/v1/deployments/alpha/operations", &s.admin, body)
        .await;
    assert_eq!(status, 202, "{op}");
    op["id"].as_u64().unwrap()
}

async fn build(s: &Server, id: u64) -> Value {
    let (status, b) = s
        .get(&format!("/v1/deployments/alpha/builds/{id}/log"), &s.admin)
        .await;
    assert_eq!(status, 200, "{b}");
    b
}

/// Kills a process by its PID when dropped.
struct Stray(u32);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

#[tokio::test]
async fn a_build_interrupted_by_a_restart_is_failed_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("game");
    std::fs::create_dir(&src).unwrap();
    let pid_file = dir.path().join("build.pid");
    // The build stays running (and says which process it is, for the test to stop it).
    let command = format!(
        "echo $$ > {}; echo compiling; exec sleep 600",
        pid_file.display()
    );
    let config = config(dir.path(), &command, 5);
    let db = dir.path().join("k.db");
    let s = Server::start(
        &db,
        &["--grace", "100ms", "--config", config.to_str().unwrap()],
    );
    s.create("alpha", "development", 1).await;
    builder(&s, &src).await;
    let build_id = queue(&s, json!({ "kind": "build", "builder": "main" })).await;
    let reboot = queue(&s, json!({ "kind": "reboot" })).await;
    let mut pid = None;
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Ok(p) = text.trim().parse::<u32>() {
                pid = Some(p);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The build's own process outlives the killed control plane: stopped by its PID, even
    // when an assertion fails first.
    let _stray = Stray(pid.expect("the build started"));
    assert_eq!(build(&s, build_id).await["status"], "running");
    s.kill();

    let s = Server::start(
        &db,
        &["--grace", "100ms", "--config", config.to_str().unwrap()],
    );
    let b = build(&s, build_id).await;
    assert_eq!(b["status"], "failed", "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("interrupted by a restart"),
        "{b}"
    );
    assert!(b["finished_at"].is_number(), "{b}");
    let op = s.wait_op(build_id).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert!(op["error"].as_str().unwrap().contains("restart"), "{op}");
    assert_eq!(s.wait_op(reboot).await["status"], "completed");
    // Builds work again after the restart (this one finishes at once).
    std::fs::write(&pid_file, "").unwrap();
    s.kill();
    let config = self::config(
        dir.path(),
        "echo again; printf x > \"$KANMON_BUILD_OUTPUT\"",
        5,
    );
    let s = Server::start(
        &db,
        &["--grace", "100ms", "--config", config.to_str().unwrap()],
    );
    let again = queue(&s, json!({ "kind": "build", "builder": "main" })).await;
    assert_eq!(s.wait_op(again).await["status"], "completed");
    assert_eq!(build(&s, again).await["status"], "succeeded");
    s.kill();
}

#[tokio::test]
async fn old_artifacts_go_but_the_last_n_and_the_deployed_one_stay() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("game");
    std::fs::create_dir(&src).unwrap();
    // Each source version gives a different artifact (stored by digest).
    let config = config(dir.path(), "cat VERSION > \"$KANMON_BUILD_OUTPUT\"", 1);
    let s = Server::start(
        &dir.path().join("k.db"),
        &["--grace", "100ms", "--config", config.to_str().unwrap()],
    );
    s.create("alpha", "development", 1).await;
    builder(&s, &src).await;
    let mut images = Vec::new();
    let mut ids = Vec::new();
    for v in 1..=3 {
        std::fs::write(src.join("VERSION"), format!("v{v}\n")).unwrap();
        let id = queue(&s, json!({ "kind": "build", "builder": "main" })).await;
        let op = s.wait_op(id).await;
        assert_eq!(op["status"], "completed", "{op}");
        images.push(PathBuf::from(op["result"]["image"].as_str().unwrap()));
        ids.push(id);
        if v == 1 {
            // The first build is deployed: its artifact is the spec's.
            let image = images[0].to_str().unwrap();
            let deploy = queue(
                &s,
                json!({ "kind": "deploy", "version": "3.37.0", "image": image }),
            )
            .await;
            assert_eq!(s.wait_op(deploy).await["status"], "completed");
        }
    }
    assert!(images[0].exists(), "the deployed artifact was removed");
    assert!(!images[1].exists(), "an old artifact stayed");
    assert!(images[2].exists(), "the newest artifact was removed");
    let old = build(&s, ids[1]).await;
    assert_eq!(old["status"], "succeeded");
    assert!(old["image"].is_null(), "{old}");
    assert!(old["error"].as_str().unwrap().contains("removed"), "{old}");
    assert!(build(&s, ids[0]).await["image"].is_string());

    // The spec moves to the third; the next build removes the first, keeps the third.
    let image = images[2].to_str().unwrap();
    let deploy = queue(
        &s,
        json!({ "kind": "deploy", "version": "3.37.0", "image": image }),
    )
    .await;
    assert_eq!(s.wait_op(deploy).await["status"], "completed");
    std::fs::write(src.join("VERSION"), "v4\n").unwrap();
    let id = queue(&s, json!({ "kind": "build", "builder": "main" })).await;
    let op = s.wait_op(id).await;
    let fourth = PathBuf::from(op["result"]["image"].as_str().unwrap());
    assert!(
        !images[0].exists(),
        "the no longer deployed artifact stayed"
    );
    assert!(images[2].exists(), "the deployed artifact was removed");
    assert!(fourth.exists());
    // No work directory is left behind.
    let work = dir.path().join("builds/alpha/work");
    assert_eq!(std::fs::read_dir(&work).map_or(0, |d| d.count()), 0);
    s.kill();
}
