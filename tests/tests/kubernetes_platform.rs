//! The platform on Kubernetes, end to end on the wire-level API fixture: the real
//! `kanmon serve --driver kubernetes` and the real `kanmon-proxy` with `kind = "kubernetes"`
//! against the same fixture, its simulated cluster playing StatefulSet controller and kubelet,
//! and every node pod a real demo node on its own loopback IP. 200 reconnecting WebSocket
//! clients through the proxy over TLS; a rolling reboot through the API: no connection that
//! began after the proxy showed a pod draining reached that pod (and the pods' own accept
//! records agree), every client reconnects, the operation completes within less than one
//! grace (the cluster drains: no wait before the delete) and is audited. Then a crashing
//! image ends in CrashLoopBackOff while the other node keeps serving, and a good deploy
//! recovers.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use kanmon_control::{cli::Client, runtime::Settings, up::issue_certs};
use kanmon_testkit::k8s::{
    sim::{SimCluster, SimOpts},
    ApiFixture, Kind, LOOPBACK,
};
use kanmon_tests::{
    client_config,
    clients::{spawn_clients, stop_clients, wait_connected, Shared, WsTarget},
    free_port,
    k8s::{proxy_config, LoopbackPods},
    serve::{start_proxy, start_serve, wait_op},
};
use serde_json::{json, Value};

const CLIENTS: usize = 200;
const HOST: &str = "alpha.us-east1.kanmon.test";
/// The control plane's drain grace: long, so that a step waiting it would show.
const GRACE: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(60);

/// The node pods of `kanmon-alpha`: `(name, uid, terminating)`.
fn node_pods(api: &ApiFixture) -> Vec<(String, String, bool)> {
    api.list(Kind::Pod)
        .into_iter()
        .filter(|p| {
            p["metadata"]["namespace"] == "kanmon-alpha"
                && p["metadata"]["labels"]["kanmon.dev/component"] == "node"
        })
        .map(|p| {
            let m = &p["metadata"];
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["uid"].as_str().unwrap_or_default().to_string(),
                !m["deletionTimestamp"].is_null(),
            )
        })
        .collect()
}

/// alpha's `kanmon_nodes{state="draining"}` in the proxy's metrics text.
fn draining(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("kanmon_nodes{")
                && l.contains(r#"deployment="alpha""#)
                && l.contains(r#"state="draining""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls the proxy's metrics every 10 ms and records, per pod UID, the first instant at which
/// the proxy counted a draining node while that pod was the one terminating in the cluster:
/// by then the proxy had marked it draining (an upper bound of the instant it did).
fn watch_marks(
    api: Arc<ApiFixture>,
    metrics_url: String,
    marks: Arc<Mutex<BTreeMap<String, Instant>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        for _ in 0..30_000 {
            let text = match http.get(&metrics_url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let seen = Instant::now();
            if draining(&text).is_some_and(|n| n >= 1.0) {
                let terminating: Vec<String> = node_pods(&api)
                    .into_iter()
                    .filter(|p| p.2)
                    .map(|p| p.1)
                    .collect();
                if let [uid] = terminating.as_slice() {
                    let mut m = marks.lock().unwrap_or_else(|p| p.into_inner());
                    m.entry(uid.clone()).or_insert(seen);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

async fn submit(api: &Client, body: Value) -> u64 {
    let op = api
        .post("/v1/deployments/alpha/operations", &body)
        .await
        .expect("operation queued");
    op["id"].as_u64().expect("operation id")
}

async fn node_states(api: &Client) -> Vec<String> {
    let d = api.get("/v1/deployments/alpha").await.expect("deployment");
    d["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_platform_rolls_and_recovers_through_the_edge() {
    let api = Arc::new(ApiFixture::start_with(LOOPBACK).await);
    let pods = LoopbackPods::new();
    let _sim = SimCluster::start(
        &api,
        SimOpts {
            // A deleted pod's preStop pause and drain: what the edge has to see it terminating.
            grace: Duration::from_millis(1500),
            runtime: Some(pods.clone()),
            ..SimOpts::default()
        },
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let certs = d.join("certs");
    let ca = issue_certs(&certs, &Settings::default()).expect("certs");
    let kubeconfig = api.kubeconfig();
    let grace = format!("{}s", GRACE.as_secs());
    let (_serve, cp) = start_serve(
        d,
        &[
            "--driver",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8 path"),
            "--grace",
            &grace,
            "--backoff-base",
            "200ms",
            "--backoff-cap",
            "800ms",
            "--cert-dir",
            certs.to_str().expect("utf-8 path"),
        ],
    );
    let (tls_addr, admin_addr) = (free_port(), free_port());
    let config = proxy_config(
        tls_addr,
        admin_addr,
        &certs,
        &kubeconfig,
        &pods.cidr(),
        &d.join("upgrade.sock"),
    );
    let _proxy = start_proxy(d, &config);

    let created = cp
        .post(
            "/v1/deployments",
            &json!({ "instance": "alpha", "zone": "us-east1", "type": "production",
                     "version": "3.35.0", "node_cpus": 2 }),
        )
        .await
        .expect("create");
    let first = created["operation"]["id"].as_u64().unwrap_or(1);
    let op = wait_op(&cp, first, WAIT).await;
    assert_eq!(op["status"], "completed", "first deploy: {op}");
    assert!(pods.errors().is_empty(), "{:?}", pods.errors());

    let target = WsTarget {
        addr: tls_addr,
        host: HOST.into(),
        tls: client_config(&ca),
    };
    let shared = Arc::new(Shared::default());
    let tasks = spawn_clients(CLIENTS, &target, &shared);
    assert!(
        wait_connected(&shared, CLIENTS, WAIT).await,
        "not all {CLIENTS} clients connected through the proxy: {}",
        shared.describe()
    );
    let before = shared.conns().len();
    let old: BTreeMap<String, String> = node_pods(&api)
        .into_iter()
        .map(|(name, uid, _)| (uid, name))
        .collect();
    assert_eq!(old.len(), 2, "{old:?}");

    // The rolling reboot, with clients hanging up and coming back all through it.
    let marks = Arc::new(Mutex::new(BTreeMap::new()));
    let metrics_url = format!("http://{admin_addr}/metrics");
    let watcher = watch_marks(api.clone(), metrics_url, marks.clone());
    shared.churn.store(true, Ordering::SeqCst);
    let reboot_started = Instant::now();
    let id = submit(&cp, json!({ "kind": "reboot" })).await;
    let op = wait_op(&cp, id, WAIT).await;
    let took = reboot_started.elapsed();
    assert_eq!(op["status"], "completed", "reboot: {op}");
    shared.churn.store(false, Ordering::SeqCst);
    assert!(
        wait_connected(&shared, CLIENTS, WAIT).await,
        "not all {CLIENTS} clients connected again after the reboot: {}",
        shared.describe()
    );
    watcher.abort();
    eprintln!("rolling reboot of 2 pods took {took:?} (grace {GRACE:?})");
    // Each step deleted its pod at once (the cluster drains it): two steps that each waited
    // the grace first would take more than twice the grace.
    assert!(
        took < GRACE,
        "the reboot took {took:?}: a step waited the grace"
    );

    // Routing: the proxy showed each old pod draining, and no connection that began after that
    // reached the pod.
    let marks = marks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for uid in old.keys() {
        assert!(
            marks.contains_key(uid),
            "the proxy never showed {} draining: {marks:?}",
            old[uid]
        );
    }
    let conns = shared.conns();
    let accepts = pods.accepts();
    for (uid, marked) in &marks {
        let node = pods.node_id(uid).expect("a pod the runtime ran");
        let to_it: Vec<_> = conns.iter().filter(|c| c.node == node).collect();
        let late: Vec<_> = to_it.iter().filter(|c| c.from > *marked).collect();
        assert!(
            late.is_empty(),
            "{} connections began after the proxy showed {node} draining and reached it: {:?}",
            late.len(),
            &late[..late.len().min(3)]
        );
        // The pod's own record: whatever it accepted after the mark was already on its way.
        let in_flight = to_it
            .iter()
            .filter(|c| c.from <= *marked && c.to >= *marked)
            .count();
        let (at, stopped) = accepts.get(&node).cloned().unwrap_or_default();
        let after = at.iter().filter(|a| *a > marked).count();
        assert!(
            after <= in_flight,
            "{node} accepted {after} WebSockets after it was draining, {in_flight} were in flight"
        );
        assert!(stopped.is_some(), "{node} was never stopped");
    }
    let reconnected: BTreeSet<usize> = conns[before..]
        .iter()
        .filter(|c| c.from >= reboot_started)
        .map(|c| c.client)
        .collect();
    assert_eq!(reconnected.len(), CLIENTS, "every client reconnected");
    let accepted: usize = accepts.values().map(|(a, _)| a.len()).sum();
    assert!(
        accepted >= conns.len(),
        "the pods accepted {accepted} WebSockets for {} connections",
        conns.len()
    );
    let now: BTreeMap<String, String> = node_pods(&api)
        .into_iter()
        .map(|(name, uid, _)| (name, uid))
        .collect();
    assert!(
        now.values().all(|uid| !old.contains_key(uid)),
        "both pods replaced"
    );
    let audit = cp
        .get("/v1/deployments/alpha/audit?limit=1000")
        .await
        .expect("audit");
    let audited = audit["audit"].as_array().is_some_and(|entries| {
        entries.iter().any(|e| {
            e["action"] == "operations.reboot" && e["who"] == "admin" && e["outcome"] == "allowed"
        })
    });
    assert!(audited, "no audit record of the reboot: {audit}");

    // A crashing image: the first node replaced crash-loops, the other keeps serving.
    let bad = submit(
        &cp,
        json!({ "kind": "deploy", "version": "3.37.0", "image": "registry.example/crash:1" }),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while !node_states(&cp)
        .await
        .iter()
        .any(|s| s == "crash_loop_back_off")
    {
        assert!(
            Instant::now() < deadline,
            "no node entered CrashLoopBackOff"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let states = node_states(&cp).await;
    assert!(states.iter().any(|s| s == "ready"), "{states:?}");
    let crashing = api
        .list(Kind::Pod)
        .into_iter()
        .find(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .is_some_and(|i| i.contains("crash"))
        })
        .expect("a pod of the crashing image");
    let cs = &crashing["status"]["containerStatuses"][0];
    assert!(cs["restartCount"].as_i64() >= Some(1), "{cs}");
    // New connections keep arriving, all at the node that serves.
    let crash_seen = Instant::now();
    shared.churn.store(true, Ordering::SeqCst);
    let serving: Vec<String> = node_pods(&api)
        .into_iter()
        .filter(|(_, uid, t)| !t && pods.node_id(uid).is_some())
        .filter_map(|(_, uid, _)| pods.node_id(&uid))
        .collect();
    let mut fresh = Vec::new();
    for _ in 0..100 {
        fresh = shared
            .conns()
            .into_iter()
            .filter(|c| c.from >= crash_seen)
            .collect();
        if fresh.len() >= CLIENTS / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shared.churn.store(false, Ordering::SeqCst);
    assert!(
        fresh.len() >= CLIENTS / 2,
        "only {} connections while a node crash-looped: {}",
        fresh.len(),
        shared.describe()
    );
    assert!(
        fresh.iter().all(|c| serving.contains(&c.node)),
        "a connection reached a node that is not serving ({serving:?})"
    );

    // A good deploy supersedes it and recovers both nodes; every client is connected again.
    let good = submit(&cp, json!({ "kind": "deploy", "version": "3.37.0" })).await;
    let bad = wait_op(&cp, bad, WAIT).await;
    assert_eq!(bad["status"], "failed", "{bad}");
    let good = wait_op(&cp, good, WAIT).await;
    assert_eq!(good["status"], "completed", "{good}");
    assert_eq!(node_states(&cp).await, ["ready", "ready"]);
    assert!(
        wait_connected(&shared, CLIENTS, WAIT).await,
        "not all clients connected after the recovery: {}",
        shared.describe()
    );
    assert!(pods.errors().is_empty(), "{:?}", pods.errors());
    stop_clients(&shared, tasks).await;
}
