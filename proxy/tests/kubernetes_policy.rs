//! Kubernetes discovery as a tenant boundary and as a monitored dependency, against the API
//! fixture of `kanmon-testkit` (testkit/src/k8s) (TLS, bearer token, strict about endpoint addresses):
//! an instance is routed only from the namespace that owns it and only to allowed addresses;
//! FQDN and unlabelled slices are reported; the counters exist from the start; a silent API is
//! noticed within the documented time; the last-success gauge moves while a quiet watch is in
//! step; clusters without the terminating conditions are flagged. A last test runs against a
//! real cluster when `KANMON_TEST_KUBECONFIG` names one.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::*;
use kanmon_bench::node::spawn_node;
use kanmon_proxy::{
    config::Discovery,
    discovery::{
        kubernetes::{KubernetesSource, DEAD_API_WITHIN},
        DiscoverySource, Publisher,
    },
    metrics::Metrics,
};
use kanmon_router::HealthTable;
use kanmon_testkit::k8s::*;
use serde_json::json;

const ERRORS: &str = r#"kanmon_discovery_errors_total{source="kubernetes"}"#;
const LAST_SUCCESS: &str =
    r#"kanmon_discovery_last_success_timestamp_seconds{source="kubernetes"}"#;

fn rejected(reason: &str) -> String {
    format!(r#"kanmon_discovery_rejected_total{{reason="{reason}",source="kubernetes"}}"#)
}

/// Polls `check` (bounded: 800 × 25 ms) until it holds.
macro_rules! wait_until {
    ($what:expr, $log:expr, $check:expr) => {{
        let mut ok = false;
        for _ in 0..800 {
            if $check {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(ok, "timed out waiting for {}; {}", $what, $log);
    }};
}

/// The source and a table in this process.
struct InProcess {
    table: Arc<HealthTable>,
    publisher: Publisher,
    metrics: Metrics,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    fn start(cfg: Discovery) -> Self {
        let table = Arc::new(HealthTable::default());
        let metrics = Metrics::new().unwrap();
        let publisher = Publisher::new(table.clone(), metrics.clone());
        let source = KubernetesSource::new(&cfg, None);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn({
            let publisher = publisher.clone();
            async move { source.run(publisher, stopped).await }
        });
        Self {
            table,
            publisher,
            metrics,
            stop,
            task,
        }
    }

    fn metric(&self, series: &str) -> f64 {
        metric_value(&self.text(), series)
    }

    fn text(&self) -> String {
        String::from_utf8(self.metrics.render()).unwrap()
    }

    async fn loaded(&self) {
        wait_until!("the first table", self.text(), self.publisher.loaded());
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn loopback_cfg(api: &ApiFixture) -> Discovery {
    Discovery {
        kubeconfig: Some(api.kubeconfig()),
        allowed_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        ..Discovery::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_sorting_namespace_cannot_take_an_instance() {
    let api = ApiFixture::start_with(LOOPBACK).await;
    let owner = spawn_node("alpha-0").await.unwrap();
    let thief = spawn_node("thief-0").await.unwrap();
    // `aaa/alpha` sorts before `kanmon-alpha/alpha`: first-by-name used to win.
    api.put_service("aaa", "alpha", "alpha");
    api.put_node("aaa", "alpha", "thief-0", thief.addr(), READY);
    api.put_service("kanmon-alpha", "alpha", "alpha");
    api.put_node("kanmon-alpha", "alpha", "alpha-0", owner.addr(), READY);
    let policy = "allowed_cidrs = [\"127.0.0.0/8\"]\n"; // the default owner: kanmon-{instance}
    let proxy = TestProxy::start(Opts {
        discovery: Some(api.discovery_toml("30s") + policy),
        ..Opts::default()
    })
    .await;
    for _ in 0..20 {
        let mut ws = proxy.ws(ALPHA).await.unwrap();
        assert_eq!(whoami(&mut ws).await, "alpha-0");
        ws.close(None).await.unwrap();
    }
    assert_eq!(proxy.metric(&rejected("foreign_namespace")).await, 1.0);
    let log = proxy.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("foreign_namespace")
            && l.contains("aaa/alpha")),
        "{log}"
    );
    // Without its owner the instance is not served at all, never by the claimant.
    api.remove_service("kanmon-alpha", "alpha");
    wait_until!("alpha removed", proxy.log(), {
        proxy.get(ALPHA, ALPHA, "/").await.0 == 404
    });
    assert_eq!(proxy.metric(&rejected("foreign_namespace")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_outside_the_allowed_networks_and_fqdn_slices_are_not_routed() {
    let api = ApiFixture::start_with(LOOPBACK).await;
    let node = spawn_node("alpha-0").await.unwrap();
    let ns = "kanmon-alpha";
    api.put_service(ns, "alpha", "alpha");
    api.put_node(ns, "alpha", "alpha-0", node.addr(), READY);
    // Another loopback address (the proxy's own host) and an FQDN slice whose "name" parses
    // as the node's IP.
    let elsewhere = std::net::SocketAddr::new([127, 0, 0, 9].into(), node.addr().port());
    api.put_node(ns, "alpha", "relay", elsewhere, READY);
    let mut fqdn = slice_json("alpha", "fqdn-0", ns, node.addr(), READY);
    fqdn["addressType"] = json!("FQDN");
    api.put_slice(ns, "alpha-fqdn", fqdn);
    let cfg = Discovery {
        allowed_cidrs: vec![format!("{}/32", node.addr().ip()).parse().unwrap()],
        ..loopback_cfg(&api)
    };
    let source = InProcess::start(cfg);
    source.loaded().await;
    let snapshot = source.table.load_full();
    let dep = snapshot.find("alpha", "us-east1").expect("alpha published");
    let ids: Vec<&str> = dep.nodes().iter().map(|n| n.id()).collect();
    assert_eq!(ids, ["alpha-0"], "{}", source.text());
    assert_eq!(source.metric(&rejected("address_not_allowed")), 1.0);
    assert_eq!(source.metric(&rejected("address_type")), 1.0);
    assert_eq!(source.metric(ERRORS), 0.0);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_without_the_instance_label_is_counted_and_logged_at_warning() {
    let api = ApiFixture::start_with(FixtureOpts {
        loopback_endpoints: true,
        mirror_labels: false,
    })
    .await;
    let node = spawn_node("alpha-0").await.unwrap();
    api.put_service("kanmon-alpha", "alpha", "alpha");
    api.put_node("kanmon-alpha", "alpha", "alpha-0", node.addr(), READY);
    let proxy = TestProxy::start(Opts {
        discovery: Some(api.discovery_toml("30s") + "allowed_cidrs = [\"127.0.0.0/8\"]\n"),
        ..Opts::default()
    })
    .await;
    // Routed all the same (the Service owns it), but never silently.
    let mut ws = proxy.ws(ALPHA).await.unwrap();
    assert_eq!(whoami(&mut ws).await, "alpha-0");
    assert_eq!(proxy.metric(&rejected("unlabelled_slice")).await, 1.0);
    let log = proxy.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("unlabelled_slice")
            && l.contains("kanmon-alpha/alpha-alpha-0")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_exist_from_the_start_and_a_silent_api_is_noticed_in_time() {
    let api = ApiFixture::start_with(LOOPBACK).await;
    api.put_service("kanmon-alpha", "alpha", "alpha");
    api.put_node(
        "kanmon-alpha",
        "alpha",
        "alpha-0",
        "127.0.0.1:7350".parse().unwrap(),
        READY,
    );
    let source = InProcess::start(loopback_cfg(&api));
    source.loaded().await;
    let text = source.text();
    for series in [
        ERRORS.to_string(),
        r#"kanmon_discovery_updates_total{source="kubernetes"}"#.to_string(),
        rejected("foreign_namespace"),
        rejected("conflict"),
        rejected("address_not_allowed"),
        rejected("address_type"),
        rejected("unlabelled_slice"),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{series} "))),
            "{series} missing:\n{text}"
        );
    }
    assert_eq!(source.metric(ERRORS), 0.0);

    // A partition: nothing answered, nothing closed.
    wait_until!(
        "watches open",
        source.text(),
        api.open_watches(Kind::Slice) >= 1
    );
    api.set_silent(true);
    let since = Instant::now();
    wait_until!(
        "the outage counted",
        source.text(),
        source.metric(ERRORS) >= 1.0
    );
    let noticed = since.elapsed();
    println!("silent API noticed after {noticed:?} (documented: within {DEAD_API_WITHIN:?})");
    assert!(
        noticed <= DEAD_API_WITHIN + Duration::from_secs(3),
        "noticed after {noticed:?}"
    );
    assert_eq!(source.table.load().len(), 1, "the last good table stays");
    api.set_silent(false);
    let errors = source.metric(ERRORS);
    let before = source.metric(LAST_SUCCESS);
    wait_until!(
        "back in sync",
        source.text(),
        source.metric(LAST_SUCCESS) > before
    );
    assert!(source.metric(ERRORS) >= errors);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_success_advances_while_a_quiet_watch_is_in_sync() {
    let api = ApiFixture::start_with(LOOPBACK).await;
    api.put_service("kanmon-alpha", "alpha", "alpha");
    let source = InProcess::start(loopback_cfg(&api));
    source.loaded().await;
    let first = source.metric(LAST_SUCCESS);
    assert!(first > 1.0e9, "{first}");
    let generation = source.table.load().generation();
    // Nothing changes in the cluster; the watches stay open (and are resumed).
    wait_until!(
        "the gauge to advance",
        source.text(),
        source.metric(LAST_SUCCESS) >= first + 2.0
    );
    assert_eq!(source.table.load().generation(), generation);
    assert_eq!(source.metric(ERRORS), 0.0);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_counted() {
    let api = ApiFixture::start_with(LOOPBACK).await;
    api.put_service("kanmon-alpha", "alpha", "alpha");
    let cfg = Discovery {
        kubeconfig: Some(api.kubeconfig_with_token("bad.yaml", "not-the-token")),
        ..loopback_cfg(&api)
    };
    let source = InProcess::start(cfg);
    wait_until!(
        "a refusal counted",
        source.text(),
        source.metric(ERRORS) >= 1.0
    );
    assert!(!source.publisher.loaded());
    assert!(api.requests().iter().all(|r| r == "UNAUTHORIZED"));
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strict_fixture_refuses_loopback_endpoints_like_an_api_server() {
    let api = ApiFixture::start().await;
    api.put_service("kanmon-alpha", "alpha", "alpha");
    for addr in ["127.0.0.1:7350", "[::1]:7350", "169.254.169.254:80"] {
        let status = api
            .try_put_node(
                "kanmon-alpha",
                "alpha",
                "alpha-0",
                addr.parse().unwrap(),
                READY,
            )
            .unwrap_err();
        assert_eq!(status["code"], 422, "{addr}: {status}");
    }
    api.put_node(
        "kanmon-alpha",
        "alpha",
        "alpha-0",
        "10.1.2.3:7350".parse().unwrap(),
        READY,
    );
    // With the default networks a pod address routes.
    let source = InProcess::start(Discovery {
        kubeconfig: Some(api.kubeconfig()),
        ..Discovery::default()
    });
    source.loaded().await;
    let snapshot = source.table.load_full();
    let dep = snapshot.find("alpha", "us-east1").unwrap();
    assert_eq!(dep.nodes()[0].addr().to_string(), "10.1.2.3:7350");
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_without_serving_and_terminating_are_flagged() {
    const MISSING: &str = "kanmon_discovery_kubernetes_conditions_missing";
    let api = ApiFixture::start_with(LOOPBACK).await;
    api.put_service("kanmon-alpha", "alpha", "alpha");
    let mut old = slice_json(
        "alpha",
        "alpha-0",
        "kanmon-alpha",
        "127.0.0.1:7350".parse().unwrap(),
        READY,
    );
    // Kubernetes 1.20: only `ready`.
    old["endpoints"][0]["conditions"] = json!({"ready": true});
    api.put_slice("kanmon-alpha", "alpha-alpha-0", old);
    let source = InProcess::start(loopback_cfg(&api));
    source.loaded().await;
    wait_until!("flagged", source.text(), source.metric(MISSING) == 1.0);
    // A cluster that reports them clears it.
    api.put_node(
        "kanmon-alpha",
        "alpha",
        "alpha-0",
        "127.0.0.1:7350".parse().unwrap(),
        TERMINATING,
    );
    wait_until!("cleared", source.text(), source.metric(MISSING) == 0.0);
    source.stop().await;
}

/// Against a real cluster, when `KANMON_TEST_KUBECONFIG` names its kubeconfig: the source
/// lists and watches and publishes a first table (whatever game deployments it holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cluster_when_configured() {
    let Some(kubeconfig) = std::env::var_os("KANMON_TEST_KUBECONFIG") else {
        println!("skipped: KANMON_TEST_KUBECONFIG is not set (a kubeconfig of a real cluster runs this test)");
        return;
    };
    let source = InProcess::start(Discovery {
        kubeconfig: Some(kubeconfig.into()),
        ..Discovery::default()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !source.publisher.loaded() {
        assert!(
            Instant::now() < deadline,
            "no first table from the cluster: {}",
            source.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "real cluster: {} deployments, rejected: {}",
        source.table.load().len(),
        source
            .text()
            .lines()
            .filter(|l| l.starts_with("kanmon_discovery_rejected_total"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    source.stop().await;
}
