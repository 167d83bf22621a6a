//! The platform on Kubernetes, end to end on the wire-level API fixture: the real
//! `kanmon serve --driver kubernetes` and the real `kanmon-proxy` with `kind = "kubernetes"`
//! against the same fixture, its simulated cluster playing StatefulSet controller and kubelet,
//! and every node pod a real demo node on its own loopback IP. The deployment's certificate
//! takes the Kubernetes path: a local-CA leaf `kanmon serve` issues into a `kubernetes.io/tls`
//! Secret in the edge's namespace, which the proxy (no leaf in its cert_dir) serves from its
//! Secret watch. 200 reconnecting WebSocket
//! clients through the proxy over TLS; a rolling reboot through the API: no connection that
//! began after the proxy showed a pod draining reached that pod (and the pods' own accept
//! records agree), every client reconnects, the operation completes within less than one
//! grace (the cluster drains: no wait before the delete) and is audited. Then a crashing
//! image ends in CrashLoopBackOff while the other node keeps serving, and a good deploy
//! recovers.
//!
//! With `KANMON_TEST_KUBECONFIG` (and `KANMON_TEST_BENCH_IMAGE`, see `kanmon_tests::k8s_cluster`
//! for what else a real cluster needs) the same scenario runs against a real API server: pods
//! then answer `whoami` with their name, so a connection counts against a draining pod only if
//! it ended before that pod was last seen in the cluster, and there are no per-pod accept
//! records. Skipped, saying so, when the kubeconfig is set without the node image.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use kanmon_control::{cli::Client, runtime::Settings, up::issue_certs};
use kanmon_tests::{
    client_config,
    clients::{spawn_clients, stop_clients, wait_connected, Shared, WsTarget},
    free_port,
    k8s::proxy_config,
    k8s_cluster::{Cluster, PodInfo},
    serve::{start_proxy, start_serve, wait_op},
};
use serde_json::{json, Value};

const CLIENTS: usize = 200;

/// alpha's `kanmon_nodes{state="draining"}` in the proxy's metrics text.
fn draining(metrics: &str, instance: &str) -> Option<f64> {
    let deployment = format!(r#"deployment="{instance}""#);
    metrics
        .lines()
        .find(|l| {
            l.starts_with("kanmon_nodes{")
                && l.contains(&deployment)
                && l.contains(r#"state="draining""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A pod the proxy showed draining.
#[derive(Debug, Clone)]
struct Mark {
    pod: PodInfo,
    /// The proxy had marked it draining by then.
    seen: Instant,
    /// It still existed at this instant (the start of the last listing that showed it): no
    /// successor of the same name could answer before.
    present: Instant,
}

/// Polls the proxy's metrics (every 10 ms, plus a cluster listing) and records, per pod UID,
/// the first instant at which the proxy counted a draining node while that pod was the one
/// terminating in the cluster: by then the proxy had marked it draining.
fn watch_marks(
    cluster: Arc<Cluster>,
    instance: String,
    metrics_url: String,
    marks: Arc<Mutex<BTreeMap<String, Mark>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        for _ in 0..30_000 {
            let text = match http.get(&metrics_url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let seen = Instant::now();
            let pods = cluster.node_pods(&instance).await;
            {
                let mut m = marks.lock().unwrap_or_else(|p| p.into_inner());
                for mark in m.values_mut() {
                    if pods.iter().any(|p| p.uid == mark.pod.uid) {
                        mark.present = seen;
                    }
                }
                if draining(&text, &instance).is_some_and(|n| n >= 1.0) {
                    let terminating: Vec<&PodInfo> =
                        pods.iter().filter(|p| p.terminating).collect();
                    if let [pod] = terminating.as_slice() {
                        m.entry(pod.uid.clone()).or_insert(Mark {
                            pod: (*pod).clone(),
                            seen,
                            present: seen,
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

async fn submit(api: &Client, instance: &str, body: Value) -> u64 {
    let op = api
        .post(&format!("/v1/deployments/{instance}/operations"), &body)
        .await
        .expect("operation queued");
    op["id"].as_u64().expect("operation id")
}

async fn node_states(api: &Client, instance: &str) -> Vec<String> {
    let d = api
        .get(&format!("/v1/deployments/{instance}"))
        .await
        .expect("deployment");
    d["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// One TLS handshake with `host` as SNI, verified against `config`'s roots.
async fn tls_handshake(
    addr: std::net::SocketAddr,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map(drop)
}

/// Removes a real cluster's namespace however the test ends.
struct CleanUp(Arc<Cluster>, String);

impl Drop for CleanUp {
    fn drop(&mut self) {
        self.0.clean_up(&self.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubernetes_platform_rolls_and_recovers_through_the_edge() {
    // On the fixture a deleted pod's preStop pause and drain take 1.5 s.
    let cluster = match Cluster::from_env(Duration::from_millis(1500)).await {
        Ok(c) => Arc::new(c),
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let real = cluster.is_real();
    // The control plane's drain grace: long, so that a step waiting it would show.
    let grace = Duration::from_secs(if real { 60 } else { 20 });
    let wait = Duration::from_secs(if real { 300 } else { 60 });
    let instance = cluster.instance();
    let host = format!("{instance}.us-east1.kanmon.test");
    let _clean_up = CleanUp(cluster.clone(), instance.clone());

    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let certs = d.join("certs");
    let ca = issue_certs(&certs, &Settings::default()).expect("certs");
    let kubeconfig = cluster.kubeconfig();
    let grace_arg = format!("{}s", grace.as_secs());
    let mut args: Vec<String> = [
        "--driver",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8 path"),
        "--grace",
        &grace_arg,
        "--backoff-base",
        "200ms",
        "--backoff-cap",
        "800ms",
        "--cert-dir",
        certs.to_str().expect("utf-8 path"),
    ]
    .map(String::from)
    .to_vec();
    args.extend(cluster.serve_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_serve, cp) = start_serve(d, &args);
    let created = cp
        .post(
            "/v1/deployments",
            &json!({ "instance": instance, "zone": "us-east1", "type": "production",
                     "version": "3.35.0", "node_cpus": 2 }),
        )
        .await
        .expect("create");
    let first = created["operation"]["id"].as_u64().unwrap_or(1);
    let op = wait_op(&cp, first, wait).await;
    assert_eq!(op["status"], "completed", "first deploy: {op}");
    assert!(cluster.errors().is_empty(), "{:?}", cluster.errors());
    // The pods' own drain after the preStop pause (terminationGracePeriodSeconds = pause +
    // this): the deployment's shutdown grace; unset it is Nakama's 0 s and a real cluster
    // would kill a node right after the pause. (The fixture drains for its fixed time.)
    let id = submit(
        &cp,
        &instance,
        json!({ "kind": "set-config", "config": { "shutdown_grace_sec": "10" } }),
    )
    .await;
    let op = wait_op(&cp, id, wait).await;
    assert_eq!(op["status"], "completed", "set shutdown_grace_sec: {op}");

    // The whole certificate path: `kanmon serve` issued a local-CA leaf for the deployment into
    // a kubernetes.io/tls Secret in the edge's namespace (`--cert-dir` holds only the CA), and
    // the proxy, whose cert_dir has no leaf at all, serves it from its Secret watch.
    let edge = cluster.edge_namespace();
    let (tls_addr, admin_addr) = (free_port(), free_port());
    let config = proxy_config(
        tls_addr,
        admin_addr,
        &certs,
        &kubeconfig,
        &edge,
        &cluster.pod_cidrs(),
        &d.join("upgrade.sock"),
    );
    let leaves: Vec<_> = std::fs::read_dir(&certs)
        .expect("cert dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".crt") && n != "ca.crt")
        .collect();
    assert!(leaves.is_empty(), "a leaf in --cert-dir: {leaves:?}");
    let _proxy = start_proxy(d, &config);
    let tls_config = client_config(&ca);
    let mut handshake = Err(std::io::Error::other("not tried"));
    for _ in 0..600 {
        handshake = tls_handshake(tls_addr, &host, tls_config.clone()).await;
        if handshake.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        handshake.is_ok(),
        "the proxy never served {host}'s certificate from its Secret: {handshake:?}; proxy log:\n{}",
        std::fs::read_to_string(d.join("proxy.log")).unwrap_or_default()
    );

    let target = WsTarget {
        addr: tls_addr,
        host: host.clone(),
        tls: tls_config,
        // The in-process nodes of the simulated pods demand no key.
        server_key: None,
    };
    let shared = Arc::new(Shared::default());
    let tasks = spawn_clients(CLIENTS, &target, &shared);
    assert!(
        wait_connected(&shared, CLIENTS, wait).await,
        "not all {CLIENTS} clients connected through the proxy: {}; proxy log:\n{}",
        shared.describe(),
        std::fs::read_to_string(d.join("proxy.log")).unwrap_or_default()
    );
    let before = shared.conns().len();
    let old: BTreeSet<String> = cluster
        .node_pods(&instance)
        .await
        .into_iter()
        .map(|p| p.uid)
        .collect();
    assert_eq!(old.len(), 2, "{old:?}");

    // The rolling reboot, with clients hanging up and coming back all through it.
    let marks = Arc::new(Mutex::new(BTreeMap::new()));
    let metrics_url = format!("http://{admin_addr}/metrics");
    let watcher = watch_marks(
        cluster.clone(),
        instance.clone(),
        metrics_url,
        marks.clone(),
    );
    shared.churn.store(true, Ordering::SeqCst);
    let reboot_started = Instant::now();
    let id = submit(&cp, &instance, json!({ "kind": "reboot" })).await;
    let op = wait_op(&cp, id, wait).await;
    let took = reboot_started.elapsed();
    assert_eq!(op["status"], "completed", "reboot: {op}");
    shared.churn.store(false, Ordering::SeqCst);
    assert!(
        wait_connected(&shared, CLIENTS, wait).await,
        "not all {CLIENTS} clients connected again after the reboot: {}",
        shared.describe()
    );
    watcher.abort();
    eprintln!("rolling reboot of 2 pods took {took:?} (grace {grace:?})");
    // Each step deleted its pod at once (the cluster drains it): two steps that each waited
    // the grace first would take more than twice the grace.
    assert!(
        took < grace,
        "the reboot took {took:?}: a step waited the grace"
    );

    // Routing: the proxy showed each old pod draining, and no connection that began after that
    // reached the pod.
    let marks = marks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for uid in &old {
        assert!(
            marks.contains_key(uid),
            "the proxy never showed {uid} draining: {marks:?}"
        );
    }
    let conns = shared.conns();
    let accepts = cluster.accepts();
    for mark in marks.values() {
        let node = cluster.node_id(&mark.pod).expect("a pod the test ran");
        let its = |c: &&kanmon_tests::clients::Conn| {
            c.node == node && (cluster.ids_per_incarnation() || c.to < mark.present)
        };
        let to_it: Vec<_> = conns.iter().filter(its).collect();
        let late: Vec<_> = to_it.iter().filter(|c| c.from > mark.seen).collect();
        assert!(
            late.is_empty(),
            "{} connections began after the proxy showed {node} draining and reached it: {:?}",
            late.len(),
            &late[..late.len().min(3)]
        );
        // The pod's own record: whatever it accepted after the mark was already on its way.
        if let Some(accepts) = &accepts {
            let in_flight = to_it
                .iter()
                .filter(|c| c.from <= mark.seen && c.to >= mark.seen)
                .count();
            let at = accepts.get(&node).cloned().unwrap_or_default();
            let after = at.iter().filter(|a| **a > mark.seen).count();
            assert!(
                after <= in_flight,
                "{node} accepted {after} WebSockets after it was draining, {in_flight} were on their way"
            );
        }
    }
    let reconnected: BTreeSet<usize> = conns[before..]
        .iter()
        .filter(|c| c.from >= reboot_started)
        .map(|c| c.client)
        .collect();
    assert_eq!(reconnected.len(), CLIENTS, "every client reconnected");
    if let Some(accepts) = &accepts {
        let accepted: usize = accepts.values().map(Vec::len).sum();
        assert!(
            accepted >= conns.len(),
            "the pods accepted {accepted} WebSockets for {} connections",
            conns.len()
        );
    }
    let now = cluster.node_pods(&instance).await;
    assert!(
        now.iter().all(|p| !old.contains(&p.uid)),
        "both pods replaced: {now:?}"
    );
    let audit = cp
        .get(&format!("/v1/deployments/{instance}/audit?limit=1000"))
        .await
        .expect("audit");
    let audited = audit["audit"].as_array().is_some_and(|entries| {
        entries.iter().any(|e| {
            e["action"] == "operations.reboot" && e["who"] == "admin" && e["outcome"] == "allowed"
        })
    });
    assert!(audited, "no audit record of the reboot: {audit}");

    // A crashing image: the first node replaced crash-loops, the other keeps serving.
    let crash_image = cluster.crash_image();
    let bad = submit(
        &cp,
        &instance,
        json!({ "kind": "deploy", "version": "3.37.0", "image": crash_image }),
    )
    .await;
    let deadline = Instant::now() + wait;
    while !node_states(&cp, &instance)
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
    let states = node_states(&cp, &instance).await;
    assert!(states.iter().any(|s| s == "ready"), "{states:?}");
    // The domain enters CrashLoopBackOff at the container's first exit; the kubelet counts
    // the restart when it starts the container again.
    let pods = loop {
        let pods = cluster.node_pods(&instance).await;
        let crashing = pods
            .iter()
            .find(|p| p.image == crash_image)
            .expect("a pod of the crashing image");
        if crashing.restarts >= 1 {
            break pods;
        }
        assert!(
            Instant::now() < deadline,
            "the crashing pod was never restarted: {crashing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // New connections keep arriving, all at the node that serves.
    let serving: Vec<String> = pods
        .iter()
        .filter(|p| !p.terminating && p.image != crash_image)
        .filter_map(|p| cluster.node_id(p))
        .collect();
    let crash_seen = Instant::now();
    shared.churn.store(true, Ordering::SeqCst);
    let mut fresh = Vec::new();
    for _ in 0..200 {
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
    let good = submit(
        &cp,
        &instance,
        json!({ "kind": "deploy", "version": "3.37.0" }),
    )
    .await;
    let bad = wait_op(&cp, bad, wait).await;
    assert_eq!(bad["status"], "failed", "{bad}");
    let good = wait_op(&cp, good, wait).await;
    assert_eq!(good["status"], "completed", "{good}");
    assert_eq!(node_states(&cp, &instance).await, ["ready", "ready"]);
    assert!(
        wait_connected(&shared, CLIENTS, wait).await,
        "not all clients connected after the recovery: {}",
        shared.describe()
    );
    assert!(cluster.errors().is_empty(), "{:?}", cluster.errors());
    stop_clients(&shared, tasks).await;
}
