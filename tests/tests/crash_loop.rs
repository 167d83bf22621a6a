//! A deploy whose node command crashes on start: the node being replaced ends in
//! CrashLoopBackOff while the other node keeps serving through the proxy, and a following
//! good deploy supersedes the bad one and brings every node back.

use std::{os::unix::fs::PermissionsExt, time::Duration};

use kanmon_tests::{node_program, Platform, PlatformOpts};
use serde_json::{json, Value};

/// A node command that crashes at once when deployed with image `crash`, and otherwise runs
/// the demo node.
fn crashing_wrapper(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("node.sh");
    let script = format!(
        "#!/bin/sh\nif [ \"$KANMON_IMAGE\" = crash ]; then echo 'bad build: crashing on start' >&2; exit 3; fi\nexec {} \"$@\"\n",
        node_program().display()
    );
    std::fs::write(&path, script).expect("write wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn states(dep: &Value) -> Vec<(String, String)> {
    dep["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["id"].as_str().unwrap_or_default().to_string(),
                        n["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashing_deploy_backs_off_and_a_good_deploy_recovers() {
    let scripts = tempfile::tempdir().expect("temp dir");
    let opts = PlatformOpts {
        node_program: crashing_wrapper(scripts.path()),
        ..PlatformOpts::default()
    };
    let platform = Platform::start(opts).await;
    let version = platform.deployment().await["version"]
        .as_str()
        .expect("version")
        .to_string();

    let bad = platform
        .submit(json!({ "kind": "deploy", "version": version, "image": "crash" }))
        .await
        .expect("bad deploy queued");
    // Bounded wait for the replaced node to be in CrashLoopBackOff.
    let mut backing_off = None;
    for _ in 0..300 {
        let dep = platform.deployment().await;
        let s = states(&dep);
        if s.iter().any(|(_, st)| st == "crash_loop_back_off") {
            backing_off = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = backing_off.expect("a node entered CrashLoopBackOff");
    let (crashing, _) = s
        .iter()
        .find(|(_, st)| st == "crash_loop_back_off")
        .cloned()
        .expect("crashing node");
    let (serving, st) = s
        .iter()
        .find(|(id, _)| *id != crashing)
        .cloned()
        .expect("other node");
    assert_eq!(st, "ready", "the other node keeps serving: {s:?}");
    let op = platform
        .api
        .get(&format!("/v1/operations/{bad}"))
        .await
        .expect("op");
    assert_eq!(op["status"], "in_progress", "{op}");
    assert_eq!(op["progress"]["phase"], "crash_loop_back_off", "{op}");

    // Meanwhile every request through the proxy is served, by the other node.
    for _ in 0..20 {
        let (status, body) = platform.get("/healthcheck").await.expect("request");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&serving), "served by {body}, not {serving}");
    }
    // The crashes are in the node's log (the platform keeps the deployment's output; the
    // log is written by its own task, so wait for it, bounded).
    let log_path = platform
        .dir
        .path()
        .join("logs")
        .join("demo")
        .join(format!("{crashing}.log"));
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("bad build: crashing on start") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log.contains("bad build: crashing on start"), "{log}");

    // A good deploy supersedes the crashing one and recovers.
    let good = platform
        .submit(json!({ "kind": "deploy", "version": version }))
        .await
        .expect("good deploy queued");
    let op = platform.wait_op(good, Duration::from_secs(120)).await;
    assert_eq!(op["status"], "completed", "good deploy: {op}");
    let op = platform.wait_op(bad, Duration::from_secs(5)).await;
    assert_eq!(op["status"], "failed", "bad deploy: {op}");
    let dep = platform.deployment().await;
    assert!(
        states(&dep).iter().all(|(_, st)| st == "ready"),
        "after recovery: {dep}"
    );
    assert_eq!(dep["spec"]["image"], Value::Null, "{dep}");
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (status, body) = platform.get("/healthcheck").await.expect("request");
        assert_eq!(status, 200, "{body}");
        served.insert(body);
    }
    assert_eq!(served.len(), 2, "both nodes serve again: {served:?}");
    platform.stop().await;
}
