//! The control plane's runtime with `KubeDriver` against the wire-level API fixture and its
//! simulated cluster (kanmon-testkit): a created deployment's pods become Ready and the deploy
//! completes; a reboot rolls one pod at a time (an old pod is deleted only once every other
//! node's pod is Ready); a crashing image crash-loops one node while the other serves, and a
//! good deploy recovers.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::k8s::{cluster, eventually};
use kanmon_control::{
    domain::{
        CreateDeployment, DeploymentType, NodeRunState, OpKind, OpStatus, Operation, Timings,
    },
    driver::NullPublisher,
    k8s::{connect, KubeDriver, KubeSettings},
    runtime::{Runtime, Settings},
    store::Store,
};
use kanmon_router::{InstanceName, Zone};
use kanmon_testkit::k8s::{sim::SimCluster, ApiFixture, Kind};
use serde_json::Value;

/// Generous: the machine is shared and loaded.
const WAIT: Duration = Duration::from_secs(90);

fn settings() -> Settings {
    Settings {
        timings: Timings {
            // The pod is deleted at once (the cluster drains it); this bounds the node's drain.
            grace: Duration::from_millis(200),
            health_timeout: Duration::from_secs(60),
            crashloop_timeout: Duration::from_secs(120),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(400),
        },
        ..Settings::default()
    }
}

fn request() -> CreateDeployment {
    CreateDeployment {
        org: "acme".into(),
        title: "rpg".into(),
        instance: InstanceName::parse("alpha").unwrap(),
        zone: Zone::parse("us-east1").unwrap(),
        kind: DeploymentType::Production,
        version: "3.35.0".parse().unwrap(),
        node_cpus: 2,
        db_cpus: 1,
        delete_protection: None,
    }
}

/// Waits (bounded) until operation `id` is finished.
async fn finished(rt: &Runtime, id: u64) -> Operation {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let op = rt.store().op(id).unwrap().unwrap();
        if op.status.is_final() {
            return op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {id} did not finish: {op:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node pod as the monitor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodState {
    uid: String,
    ready: bool,
    terminating: bool,
}

fn pods(api: &ApiFixture) -> BTreeMap<String, PodState> {
    api.list(Kind::Pod)
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["kanmon.dev/component"] == "node")
        .map(|p: Value| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                PodState {
                    uid: p["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    ready,
                    terminating: !p["metadata"]["deletionTimestamp"].is_null(),
                },
            )
        })
        .collect()
}

fn node_states(rt: &Runtime) -> Vec<NodeRunState> {
    rt.deployment("alpha")
        .unwrap()
        .nodes
        .iter()
        .map(|n| n.state)
        .collect()
}

/// The runtime with the Kubernetes driver on the simulated cluster.
async fn runtime_on_cluster() -> (Arc<ApiFixture>, SimCluster, Runtime) {
    let (api, sim) = cluster(Duration::from_millis(300)).await;
    let client = connect(Some(&api.kubeconfig())).await.unwrap();
    let store = Arc::new(Store::in_memory().unwrap());
    let driver = KubeDriver::new(client, KubeSettings::default(), store.clone());
    let rt = Runtime::start(store, settings(), Arc::new(driver), Arc::new(NullPublisher)).unwrap();
    (api, sim, rt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_creates_reboots_and_recovers_a_deployment_on_the_simulated_cluster() {
    let (api, _sim, rt) = runtime_on_cluster().await;

    // Created: both pods Ready, the deploy completes with both nodes Ready at the pods' IPs.
    let (_, first) = rt.create(request(), "ann").unwrap();
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    let dep = rt.deployment("alpha").unwrap();
    assert_eq!(dep.nodes.len(), 2);
    assert!(dep
        .nodes
        .iter()
        .all(|n| n.state == NodeRunState::Ready && n.addr.is_some_and(|a| a.port() == 7350)));
    let before = pods(&api);
    assert!(before.values().all(|p| p.ready), "{before:#?}");
    // The database password is generated once and applied (never read back from the cluster).
    let secret = api
        .get(Kind::Secret, "kanmon-alpha", "alpha-db-credentials")
        .unwrap();
    assert!(secret["data"]["password"].is_string(), "{secret:#?}");

    // A reboot: the monitor checks, whenever it first sees an old pod terminating, that every
    // other node's pod is Ready (so no two nodes are down at once, and each step waited for
    // the previous new pod).
    let violations = Arc::new(Mutex::new(Vec::new()));
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let monitor = {
        let (api, violations, deleted) = (api.clone(), violations.clone(), deleted.clone());
        let old: BTreeMap<String, String> = before
            .iter()
            .map(|(n, p)| (n.clone(), p.uid.clone()))
            .collect();
        tokio::spawn(async move {
            loop {
                let now = pods(&api);
                for (node, p) in &now {
                    let is_old = old.get(node) == Some(&p.uid);
                    let seen = deleted.lock().unwrap().contains(node);
                    if is_old && p.terminating && !seen {
                        deleted.lock().unwrap().push(node.clone());
                        let others_ready = old
                            .keys()
                            .filter(|n| *n != node)
                            .all(|n| now.get(n).is_some_and(|o| o.ready && !o.terminating));
                        if !others_ready {
                            violations.lock().unwrap().push(format!("{node}: {now:?}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let requests_before = api.requests().len();
    let reboot = rt.submit("alpha", OpKind::Reboot, "ann").unwrap();
    assert_eq!(finished(&rt, reboot.id).await.status, OpStatus::Completed);
    monitor.abort();
    // Only what changed is applied again: no object changes in a reboot but the StatefulSet's
    // replicas (down while its last node is `Gone`, up again for the successor).
    let applies: Vec<String> = api.requests()[requests_before..]
        .iter()
        .filter(|r| r.starts_with("APPLY"))
        .cloned()
        .collect();
    assert!(
        applies.len() <= 2 && applies.iter().all(|r| r.contains("statefulsets/alpha")),
        "{applies:#?}"
    );
    let after = pods(&api);
    for (node, p) in &after {
        assert_ne!(p.uid, before[node].uid, "{node} was not replaced");
        assert!(p.ready && !p.terminating, "{node}: {p:?}");
    }
    assert_eq!(deleted.lock().unwrap().len(), 2, "both old pods deleted");
    assert!(
        violations.lock().unwrap().is_empty(),
        "{:#?}",
        violations.lock().unwrap()
    );
    assert!(node_states(&rt).iter().all(|s| *s == NodeRunState::Ready));

    // A crashing image: the first replaced node crash-loops, the other keeps serving.
    let bad = rt
        .submit(
            "alpha",
            OpKind::Deploy {
                version: "3.37.0".parse().unwrap(),
                image: Some("registry.example/crash:1".into()),
            },
            "ann",
        )
        .unwrap();
    eventually("a node in CrashLoopBackOff", || {
        node_states(&rt).contains(&NodeRunState::CrashLoopBackOff)
    })
    .await;
    let states = node_states(&rt);
    assert!(states.contains(&NodeRunState::Ready), "{states:?}");
    let serving = pods(&api).values().filter(|p| p.ready).count();
    assert!(serving >= 1, "{:#?}", pods(&api));

    // A good deploy supersedes it and recovers both nodes.
    let good = rt
        .submit(
            "alpha",
            OpKind::Deploy {
                version: "3.37.0".parse().unwrap(),
                image: None,
            },
            "ann",
        )
        .unwrap();
    let bad = finished(&rt, bad.id).await;
    assert!(bad.error.unwrap_or_default().contains("superseded"));
    assert_eq!(finished(&rt, good.id).await.status, OpStatus::Completed);
    assert!(node_states(&rt).iter().all(|s| *s == NodeRunState::Ready));
    eventually("both pods ready on the good image", || {
        let p = pods(&api);
        p.len() == 2 && p.values().all(|p| p.ready && !p.terminating)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_adds_and_removes_pods_as_the_operation_asks() {
    let (api, _sim, rt) = runtime_on_cluster().await;
    let (_, first) = rt
        .create(
            CreateDeployment {
                node_cpus: 1,
                ..request()
            },
            "ann",
        )
        .unwrap();
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    assert_eq!(pods(&api).len(), 1);

    // Up: the second node's pod is created when the operation starts it, not after.
    let up = rt
        .submit(
            "alpha",
            OpKind::Scale {
                node_cpus: 2,
                db_cpus: 1,
            },
            "ann",
        )
        .unwrap();
    assert_eq!(finished(&rt, up.id).await.status, OpStatus::Completed);
    assert_eq!(node_states(&rt), [NodeRunState::Ready, NodeRunState::Ready]);
    let p = pods(&api);
    assert!(p.len() == 2 && p.values().all(|p| p.ready), "{p:#?}");

    // Down: the removed node's pod goes and is not made again.
    let down = rt
        .submit(
            "alpha",
            OpKind::Scale {
                node_cpus: 1,
                db_cpus: 1,
            },
            "ann",
        )
        .unwrap();
    assert_eq!(finished(&rt, down.id).await.status, OpStatus::Completed);
    assert_eq!(node_states(&rt), [NodeRunState::Ready]);
    eventually("one node pod left", || {
        let p = pods(&api);
        p.len() == 1 && p.contains_key("alpha-0")
    })
    .await;
}

/// The pods' `terminationGracePeriodSeconds` is the deployment's `shutdown_grace_sec` (Nakama's
/// default, 0 s, when unset) plus the preStop pause; a change of it is a changed pod template,
/// which the set-config operation rolls out pod by pod like any config, and pods deleted
/// afterwards are deleted with that grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_shutdown_grace_rolls_out_the_pods_termination_grace() {
    let (api, _sim, rt) = runtime_on_cluster().await;
    let (_, first) = rt.create(request(), "ann").unwrap();
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    let template_grace = || {
        api.get(Kind::StatefulSet, "kanmon-alpha", "alpha").unwrap()["spec"]["template"]["spec"]
            ["terminationGracePeriodSeconds"]
            .clone()
    };
    // KubeSettings::default(): a 5 s preStop pause, a 30 s cap.
    assert_eq!(template_grace(), 5);
    let before = pods(&api);

    let set = rt
        .submit(
            "alpha",
            OpKind::SetConfig {
                config: BTreeMap::from([("shutdown_grace_sec".into(), "20".into())]),
                secret_config: BTreeMap::new(),
                remove_config: Default::default(),
                remove_secret_config: Default::default(),
            },
            "ann",
        )
        .unwrap();
    assert_eq!(finished(&rt, set.id).await.status, OpStatus::Completed);
    assert_eq!(template_grace(), 25);
    let after = pods(&api);
    assert_eq!(after.len(), 2, "{after:#?}");
    for (node, p) in &after {
        assert_ne!(before[node].uid, p.uid, "{node} was not replaced");
        assert!(p.ready, "{node}: {p:?}");
        let pod = api.get(Kind::Pod, "kanmon-alpha", node).unwrap();
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 25, "{node}");
    }

    // The next rolling step deletes a pod with the new grace.
    let deleted = Arc::new(Mutex::new(None));
    let watch = {
        let (api, deleted) = (api.clone(), deleted.clone());
        tokio::spawn(async move {
            for _ in 0..10_000 {
                let found = api.list(Kind::Pod).into_iter().find(|p| {
                    p["metadata"]["labels"]["kanmon.dev/component"] == "node"
                        && !p["metadata"]["deletionTimestamp"].is_null()
                });
                if let Some(p) = found {
                    *deleted.lock().unwrap() =
                        Some(p["metadata"]["deletionGracePeriodSeconds"].clone());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let reboot = rt.submit("alpha", OpKind::Reboot, "ann").unwrap();
    assert_eq!(finished(&rt, reboot.id).await.status, OpStatus::Completed);
    watch.abort();
    let seen = deleted.lock().unwrap().clone();
    assert_eq!(seen, Some(serde_json::json!(25)), "the deleted pod's grace");
}
