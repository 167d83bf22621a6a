//! 200 WebSocket clients through the embedded proxy to a two-node production deployment,
//! each reconnecting when its connection drops (and, while the reboot runs, also hanging up
//! and reconnecting every second or so, so new connections keep arriving while nodes drain),
//! during a rolling reboot: no new connection
//! ever reaches a node that is not `ready` (draining or restarting), every client is
//! connected again at the end, the operation completed and the audit log holds it.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use kanmon_tests::{
    clients::{spawn_clients, stop_clients, wait_connected, Shared},
    Platform, PlatformOpts,
};
use serde_json::json;

const CLIENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_reboot_never_routes_to_a_draining_node() {
    let platform = Arc::new(Platform::start(PlatformOpts::default()).await);
    // Each node drains for the deployment's own grace while clients keep reconnecting.
    platform.set_shutdown_grace(3).await;
    let dep = platform.deployment().await;
    assert_eq!(dep["type"], "production");
    assert_eq!(dep["nodes"].as_array().map(Vec::len), Some(2), "{dep}");

    let shared = Arc::new(Shared::default());
    let tasks = spawn_clients(CLIENTS, &platform.ws_target().await, &shared);
    assert!(
        wait_connected(&shared, CLIENTS, Duration::from_secs(60)).await,
        "not all {CLIENTS} clients connected before the reboot: {}",
        shared.describe()
    );
    let before = shared.conns().len();

    let reboot_started = Instant::now();
    shared.churn.store(true, Ordering::SeqCst);
    let id = platform
        .submit(json!({ "kind": "reboot" }))
        .await
        .expect("reboot queued");
    let op = platform.wait_op(id, Duration::from_secs(120)).await;
    assert_eq!(op["status"], "completed", "reboot: {op}");
    shared.churn.store(false, Ordering::SeqCst);
    assert!(
        wait_connected(&shared, CLIENTS, Duration::from_secs(60)).await,
        "not all {CLIENTS} clients connected again after the reboot: {}",
        shared.describe()
    );

    // Routing: every connection reached a node that was ready while the proxy chose it.
    let conns = shared.conns();
    let mut violations = Vec::new();
    for c in &conns {
        let key = format!("demo/{}", c.node);
        if !platform.timeline.ready_during(&key, c.from, c.to) {
            violations.push(c.clone());
        }
    }
    assert!(
        violations.is_empty(),
        "{} connections reached a node that was not ready (draining or restarting), e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    // The reboot really exercised routing: both nodes were drained (each left `ready` during
    // the reboot) and every client reconnected at least once while it ran.
    let reconnected: std::collections::BTreeSet<usize> = conns[before..]
        .iter()
        .filter(|c| c.from >= reboot_started)
        .map(|c| c.client)
        .collect();
    assert_eq!(
        reconnected.len(),
        CLIENTS,
        "every client reconnected during the reboot"
    );
    let during_drains = conns.iter().filter(|c| c.from >= reboot_started).count();
    assert!(
        during_drains > CLIENTS,
        "only {during_drains} connections were made while the reboot ran"
    );
    // Clients coming back resume their TLS sessions with the tickets the proxy sent (one
    // per handshake; the 200 clients share one cache, so not every reconnect finds one).
    let resumed = conns[before..]
        .iter()
        .filter(|c| c.from >= reboot_started && c.resumed)
        .count();
    assert!(
        resumed > 0,
        "none of {during_drains} reconnects resumed a TLS session"
    );
    for node in ["demo/demo-0", "demo/demo-1"] {
        assert!(
            platform
                .timeline
                .left_ready(node)
                .iter()
                .any(|t| *t >= reboot_started),
            "{node} was never drained"
        );
    }

    // The nodes' own reports agree: each `ws-connect node=ID` line is in that node's log.
    let logs = platform.dir.path().join("logs").join("demo");
    let lines: usize = ["demo-0", "demo-1"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(logs.join(format!("{n}.log"))).unwrap_or_default();
            // Each stored line is a record whose `line` is what the node printed.
            let want = format!("ws-connect node={n}");
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|r| r["line"].as_str() == Some(want.as_str()))
                .count()
        })
        .sum();
    assert!(
        lines >= conns.len(),
        "{lines} ws-connect lines for {} connections",
        conns.len()
    );

    // The audit log holds the reboot, by the admin, allowed.
    let audit = platform
        .api
        .get("/v1/deployments/demo/audit")
        .await
        .expect("audit");
    let found = audit["audit"].as_array().is_some_and(|entries| {
        entries.iter().any(|e| {
            e["action"] == "operations.reboot" && e["who"] == "admin" && e["outcome"] == "allowed"
        })
    });
    assert!(found, "no audit record of the reboot: {audit}");
    let ops = platform
        .api
        .get("/v1/deployments/demo/operations")
        .await
        .expect("operations");
    assert!(
        ops["operations"].as_array().is_some_and(|o| o
            .iter()
            .any(|o| o["id"] == id && o["kind"] == "reboot" && o["status"] == "completed")),
        "{ops}"
    );

    stop_clients(&shared, tasks).await;
    let platform =
        Arc::try_unwrap(platform).unwrap_or_else(|_| panic!("clients still hold the platform"));
    platform.stop().await;
}
