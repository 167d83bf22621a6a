//! Kubernetes discovery end to end: a real `kanmon-proxy` process with `kind = "kubernetes"`,
//! its kube client pointed (through a kubeconfig) at the API fixture of
//! `kanmon-testkit` (testkit/src/k8s), and WebSocket clients through the proxy to demo nodes.
//!
//! Covered: initial list → traffic; a pod turning terminating → draining (no new connections,
//! the open one kept); endpoint removal; the API down and back (table kept, `/readyz` ready but saying stale,
//! then resynced and ready); a 410 relist; a malformed event skipped and counted.

mod common;

use std::{collections::HashMap, time::Duration};

use common::*;
use kanmon_bench::node::{spawn_node, NodeHandle};
use kanmon_testkit::k8s::*;

const NS: &str = "games";
const ERRORS: &str = r#"kanmon_discovery_errors_total{source="kubernetes"}"#;
/// The tests' deployments live in `games` and their nodes on loopback: both must be allowed.
const POLICY: &str = "instance_namespace = \"games\"\nallowed_cidrs = [\"127.0.0.0/8\"]\n";

fn nodes_metric(state: &str) -> String {
    format!(r#"kanmon_nodes{{deployment="alpha",state="{state}",zone="us-east1"}}"#)
}

/// Polls `check` (bounded: 400 × 25 ms) until it holds.
macro_rules! wait_until {
    ($proxy:expr, $what:expr, $check:expr) => {{
        let mut ok = false;
        for _ in 0..400 {
            if $check {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            ok,
            "timed out waiting for {}; log:\n{}",
            $what,
            $proxy.log()
        );
    }};
}

struct Setup {
    api: ApiFixture,
    proxy: TestProxy,
    nodes: Vec<NodeHandle>,
}

/// A Service `alpha` with `n` ready nodes, and a proxy watching it.
async fn setup(n: usize, stale_after: &str) -> Setup {
    let api = ApiFixture::start_with(LOOPBACK).await;
    api.put_service(NS, "alpha", "alpha");
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = spawn_node(&format!("alpha-{i}")).await.unwrap();
        api.put_node(NS, "alpha", &format!("alpha-{i}"), node.addr(), READY);
        nodes.push(node);
    }
    let proxy = TestProxy::start(Opts {
        discovery: Some(api.discovery_toml(stale_after) + POLICY),
        ..Opts::default()
    })
    .await;
    assert_eq!(proxy.metric(&nodes_metric("ready")).await, n as f64);
    Setup { api, proxy, nodes }
}

async fn landings(proxy: &TestProxy, count: usize) -> HashMap<String, usize> {
    let mut landed = HashMap::new();
    for _ in 0..count {
        let mut ws = proxy.ws(ALPHA).await.unwrap();
        *landed.entry(whoami(&mut ws).await).or_default() += 1;
        ws.close(None).await.unwrap();
    }
    landed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_list_routes_traffic() {
    let Setup {
        api,
        proxy,
        nodes: _nodes,
    } = setup(2, "30s").await;
    let landed = landings(&proxy, 20).await;
    assert_eq!(landed.values().sum::<usize>(), 20);
    assert!(
        landed.contains_key("alpha-0") && landed.contains_key("alpha-1"),
        "{landed:?}"
    );
    // The watches used the label selectors and asked for bookmarks.
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("LIST /api/v1/services?") && r.contains("kanmon.dev%2Finstance")),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(
            |r| r.starts_with("WATCH /apis/discovery.k8s.io/v1/endpointslices?")
                && r.contains("allowWatchBookmarks=true")
                && r.split(['?', '&']).any(|p| p == "timeoutSeconds=5")
        ),
        "{requests:?}"
    );
    // Slices are selected by their Service (mirrored labels are not relied upon), and
    // every request carried the token.
    assert!(
        requests
            .iter()
            .filter(|r| r.contains("/endpointslices?"))
            .all(|r| r.contains("kubernetes.io%2Fservice-name")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r == "UNAUTHORIZED"),
        "{requests:?}"
    );
    // A quiet cluster with bookmarks publishes nothing new.
    let generation = proxy.metric("kanmon_table_generation").await;
    api.bookmark();
    api.put_service(NS, "alpha", "alpha"); // MODIFIED with no routing change
                                           // The slice of a Service that is no game deployment never reaches the proxy.
    api.put_foreign_slice(NS, "metrics-server", "127.0.0.1:9".parse().unwrap());
    let landed = landings(&proxy, 2).await;
    assert_eq!(landed.values().sum::<usize>(), 2);
    assert_eq!(proxy.metric("kanmon_table_generation").await, generation);
    assert_eq!(proxy.admin("/readyz").await.unwrap().0, 200);
    assert_eq!(proxy.metric(ERRORS).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_pod_drains_then_removal_takes_it_out() {
    let Setup { api, proxy, nodes } = setup(3, "30s").await;
    // Open connections until one sits on alpha-1.
    let mut on_1 = None;
    for _ in 0..60 {
        let mut ws = proxy.ws(ALPHA).await.unwrap();
        if whoami(&mut ws).await == "alpha-1" {
            on_1 = Some(ws);
            break;
        }
    }
    let mut on_1 = on_1.expect("p2c never picked alpha-1");

    // The pod starts terminating: serving && terminating → draining.
    api.put_node(NS, "alpha", "alpha-1", nodes[1].addr(), TERMINATING);
    wait_until!(
        proxy,
        "alpha-1 draining",
        proxy.metric(&nodes_metric("draining")).await == 1.0
    );
    let landed = landings(&proxy, 60).await;
    assert_eq!(
        landed.get("alpha-1"),
        None,
        "a new connection went to the draining pod: {landed:?}"
    );
    assert_eq!(landed.values().sum::<usize>(), 60);
    echo(&mut on_1, "still here while draining").await;

    // Not serving → unhealthy, then the endpoint goes away.
    api.put_node(NS, "alpha", "alpha-2", nodes[2].addr(), NOT_SERVING);
    wait_until!(
        proxy,
        "alpha-2 unhealthy",
        proxy.metric(&nodes_metric("unhealthy")).await == 1.0
    );
    api.remove_node(NS, "alpha", "alpha-1");
    wait_until!(
        proxy,
        "alpha-1 removed",
        proxy.metric(&nodes_metric("draining")).await == 0.0
    );
    assert_eq!(proxy.metric(&nodes_metric("ready")).await, 1.0);
    let landed = landings(&proxy, 10).await;
    assert_eq!(landed.get("alpha-0"), Some(&10), "{landed:?}");
    // The connection on the removed endpoint is the node's to close, not the proxy's.
    echo(&mut on_1, "still here after removal").await;
    assert_eq!(proxy.metric(ERRORS).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_keeps_the_table_goes_stale_then_resyncs() {
    let Setup { api, proxy, nodes } = setup(2, "1s").await;
    let lists_before = api.lists();
    api.set_down(true);
    wait_until!(
        proxy,
        "an API error counted",
        proxy.metric(ERRORS).await >= 1.0
    );
    // The last good table keeps routing while the API is away.
    let landed = landings(&proxy, 10).await;
    assert_eq!(landed.values().sum::<usize>(), 10, "{landed:?}");
    assert_eq!(proxy.metric(&nodes_metric("ready")).await, 2.0);
    // After stale_after, /readyz says so but stays ready: a stale table still routes, and
    // every replica would turn unready at once (the load balancer dropping the whole edge).
    wait_until!(proxy, "/readyz stale", {
        let (status, body) = proxy.admin("/readyz").await.unwrap();
        status == 200 && body.starts_with("ready (stale:")
    });
    let landed = landings(&proxy, 4).await;
    assert_eq!(landed.values().sum::<usize>(), 4);

    // While it is down, alpha-1 goes away (nobody could have watched that happen).
    api.remove_node_silently(NS, "alpha", "alpha-1");
    let n2 = spawn_node("alpha-2").await.unwrap();
    api.put_node_silently(NS, "alpha", "alpha-2", n2.addr(), READY);
    api.set_down(false);
    wait_until!(proxy, "/readyz no longer stale", {
        let (status, body) = proxy.admin("/readyz").await.unwrap();
        status == 200 && body.trim() == "ready"
    });
    wait_until!(proxy, "resynced table", {
        let landed = landings(&proxy, 6).await;
        !landed.contains_key("alpha-1") && landed.contains_key("alpha-2")
    });
    assert!(api.lists() > lists_before, "no fresh list after the outage");
    let last_success = proxy
        .metric(r#"kanmon_discovery_last_success_timestamp_seconds{source="kubernetes"}"#)
        .await;
    assert!(last_success > 1.0e9, "last-success gauge: {last_success}");
    // The outage is reported once per failure at warning by the source, and nothing says
    // ERROR (kube-client logs each failed request as an error, a duplicate of that report).
    let log = proxy.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("discovery failed")),
        "{log}"
    );
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_resource_version_relists() {
    let Setup {
        api,
        proxy,
        nodes: _nodes,
    } = setup(2, "30s").await;
    let lists_before = api.lists();
    // Events were compacted away: a change nobody saw, then 410 on every open watch.
    let n2 = spawn_node("alpha-2").await.unwrap();
    api.put_node_silently(NS, "alpha", "alpha-2", n2.addr(), READY);
    api.remove_node_silently(NS, "alpha", "alpha-0");
    api.expire();
    wait_until!(proxy, "relisted table", {
        proxy.metric(&nodes_metric("ready")).await == 2.0
            && !api.requests().is_empty()
            && api.lists() >= lists_before + 2
    });
    wait_until!(proxy, "alpha-2 routed", {
        let landed = landings(&proxy, 6).await;
        !landed.contains_key("alpha-0") && landed.contains_key("alpha-2")
    });
    // Expiry is routine, not an outage.
    assert_eq!(proxy.admin("/readyz").await.unwrap().0, 200);
    // The relisted watches carry on.
    api.put_node(NS, "alpha", "alpha-2", n2.addr(), TERMINATING);
    wait_until!(
        proxy,
        "alpha-2 draining",
        proxy.metric(&nodes_metric("draining")).await == 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_event_is_skipped_counted_and_the_watch_continues() {
    let Setup { api, proxy, nodes } = setup(2, "30s").await;
    wait_until!(
        proxy,
        "slice watch open",
        api.open_watches(Kind::Slice) >= 1
    );
    let watches = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("WATCH"))
        .count();
    api.send_raw(
        Kind::Slice,
        r#"{"type":"MODIFIED","object":{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"bad","namespace":"games","resourceVersion":"7"},"addressType":"IPv4","endpoints":"not-a-list"}}"#,
    );
    wait_until!(
        proxy,
        "malformed event counted",
        proxy.metric(ERRORS).await == 1.0
    );
    // The same watch goes on: the next event arrives without a new watch request.
    api.put_node(NS, "alpha", "alpha-1", nodes[1].addr(), TERMINATING);
    wait_until!(
        proxy,
        "alpha-1 draining",
        proxy.metric(&nodes_metric("draining")).await == 1.0
    );
    assert_eq!(
        api.requests()
            .iter()
            .filter(|r| r.starts_with("WATCH"))
            .count(),
        watches
    );
    assert_eq!(proxy.metric(&nodes_metric("ready")).await, 1.0);
    assert_eq!(proxy.admin("/readyz").await.unwrap().0, 200);
}

/// The proxy config shipped in the ConfigMap parses and selects Kubernetes discovery.
#[test]
fn configmap_proxy_config_parses() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/kubernetes/20-configmap.yaml"
    ))
    .unwrap();
    let (_, rest) = manifest.split_once("proxy.toml: |\n").unwrap();
    let toml: String = rest
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let cfg =
        kanmon_proxy::ProxyConfig::parse(&toml, std::path::Path::new("20-configmap.yaml")).unwrap();
    assert_eq!(
        cfg.discovery.kind,
        kanmon_proxy::config::DiscoveryKind::Kubernetes
    );
    assert_eq!(cfg.discovery.stale_after, Duration::from_secs(30));
    // Tenancy is spelled out: owner namespaces of the control plane's driver, pod networks.
    assert_eq!(cfg.discovery.instance_namespace, "kanmon-{instance}");
    assert!(!cfg.discovery.allowed_cidrs.is_empty());
    assert_eq!(
        cfg.tls.ticket_key_file.as_deref(),
        Some(std::path::Path::new("/etc/kanmon/ticket-keys/keys")),
        "the replicas share their ticket keys (mounted by 30-deployment.yaml)"
    );
    assert!(
        cfg.listen.admin.ip().is_unspecified(),
        "probes reach the pod IP"
    );
}

/// "A change reaches the table within 100 ms of the watch event": the source and a table in
/// this process, the fixture flipping one endpoint between ready and terminating; measured
/// from the fixture handing the event to the watch stream to the table's generation moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_event_reaches_the_table_quickly() {
    use std::{sync::Arc, time::Instant};

    use kanmon_proxy::{
        config::Discovery,
        discovery::{kubernetes::KubernetesSource, DiscoverySource, Publisher},
        metrics::Metrics,
    };
    use kanmon_router::HealthTable;

    const ROUNDS: usize = 300;
    const OTHERS: usize = 2_000;
    let api = ApiFixture::start_with(LOOPBACK).await;
    api.put_service(NS, "alpha", "alpha");
    let addr0: std::net::SocketAddr = "127.0.0.1:7350".parse().unwrap();
    let addr1: std::net::SocketAddr = "127.0.0.1:7351".parse().unwrap();
    api.put_node(NS, "alpha", "alpha-0", addr0, READY);
    api.put_node(NS, "alpha", "alpha-1", addr1, READY);
    // A platform-sized table around it: per-deployment publishes must not cost O(table).
    for i in 0..OTHERS {
        let name = format!("game-{i}");
        api.put_service(NS, &name, &name);
        api.put_node(NS, &name, &format!("{name}-0"), addr0, READY);
    }
    let table = Arc::new(HealthTable::default());
    let publisher = Publisher::new(table.clone(), Metrics::new().unwrap());
    let cfg = Discovery {
        kubeconfig: Some(api.kubeconfig()),
        instance_namespace: NS.into(),
        allowed_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        ..Discovery::default()
    };
    let source = KubernetesSource::new(&cfg, None);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let publisher = publisher.clone();
        async move { source.run(publisher, stopped).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !publisher.loaded() || api.open_watches(Kind::Slice) == 0 {
        assert!(Instant::now() < deadline, "source never listed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut samples = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let generation = table.load().generation();
        let state = if round % 2 == 0 { TERMINATING } else { READY };
        api.put_node(NS, "alpha", "alpha-1", addr1, state);
        let emitted = api.last_emitted().unwrap();
        let limit = Instant::now() + Duration::from_secs(2);
        while table.load().generation() == generation {
            assert!(
                Instant::now() < limit,
                "round {round}: the change never reached the table"
            );
            tokio::task::yield_now().await;
        }
        samples.push(emitted.elapsed());
    }
    stop.send(true).unwrap();
    task.await.unwrap();

    samples.sort();
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    let (p50, p99, max) = (pct(50), pct(99), samples[samples.len() - 1]);
    assert_eq!(table.load().len(), OTHERS + 1);
    println!("watch event → table generation over {ROUNDS} events, {} deployments: p50 {p50:?}, p99 {p99:?}, max {max:?}", OTHERS + 1);
    assert!(p99 < Duration::from_millis(100), "p50 {p50:?}, p99 {p99:?}");
}

/// `namespaces = [...]`: one watch per namespace and kind, nothing from elsewhere; a deleted
/// Service takes its deployment out. In process, on the source and a table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_namespaces_only_and_service_deletion() {
    use std::{sync::Arc, time::Instant};

    use kanmon_proxy::{
        config::Discovery,
        discovery::{kubernetes::KubernetesSource, DiscoverySource, Publisher},
        metrics::Metrics,
    };
    use kanmon_router::HealthTable;

    let api = ApiFixture::start_with(LOOPBACK).await;
    let addr: std::net::SocketAddr = "127.0.0.1:7350".parse().unwrap();
    for (ns, name) in [("games", "alpha"), ("dev", "gamma"), ("other", "beta")] {
        api.put_service(ns, name, name);
        api.put_node(ns, name, &format!("{name}-0"), addr, READY);
    }
    let table = Arc::new(HealthTable::default());
    let publisher = Publisher::new(table.clone(), Metrics::new().unwrap());
    let cfg = Discovery {
        kubeconfig: Some(api.kubeconfig()),
        namespaces: vec!["games".into(), "dev".into()],
        instance_namespace: "games".into(),
        owners: [("gamma".to_string(), "dev".to_string())].into(),
        allowed_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        ..Discovery::default()
    };
    let source = KubernetesSource::new(&cfg, None);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let publisher = publisher.clone();
        async move { source.run(publisher, stopped).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !publisher.loaded() || api.open_watches(Kind::Service) < 2 {
        assert!(Instant::now() < deadline, "source never listed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let snapshot = table.load_full();
    assert_eq!(snapshot.len(), 2);
    assert!(
        snapshot.find("alpha", "us-east1").is_some()
            && snapshot.find("gamma", "us-east1").is_some()
    );
    assert!(snapshot.find("beta", "us-east1").is_none());
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("WATCH /api/v1/namespaces/dev/services?")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("/namespaces/other/")),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("LIST /api/v1/services?")),
        "{requests:?}"
    );

    // Events elsewhere are not seen; a deleted Service removes its deployment.
    let generation = table.load().generation();
    api.put_node("other", "beta", "beta-1", addr, READY);
    api.remove_service("dev", "gamma");
    let deadline = Instant::now() + Duration::from_secs(5);
    while table.load().find("gamma", "us-east1").is_some() {
        assert!(Instant::now() < deadline, "gamma never removed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(table.load().generation(), generation + 1);
    assert_eq!(table.load().len(), 1);
    stop.send(true).unwrap();
    task.await.unwrap();
}
