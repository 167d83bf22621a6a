use std::{sync::Arc, time::Duration};

use kanmon_router::{HealthTable, InstanceName, NodeState, Zone};

use super::*;
use crate::{
    domain::{DeploymentType, NodeRunState, OpStatus, Timings},
    driver::{LoopbackDriver, ProcessDriver, ProxyPublisher, CRASH_IMAGE},
};

/// The edge publisher `kanmon up` uses, over `table`.
fn edge(table: &Arc<HealthTable>) -> Arc<ProxyPublisher> {
    let metrics = kanmon_proxy::metrics::Metrics::new().unwrap();
    let publisher = kanmon_proxy::discovery::Publisher::new(table.clone(), metrics);
    Arc::new(ProxyPublisher::new(publisher))
}

fn settings() -> Settings {
    Settings {
        timings: Timings {
            grace: Duration::from_secs(5),
            health_timeout: Duration::from_secs(5),
            crashloop_timeout: Duration::from_secs(60),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(200),
        },
        health_poll: Duration::from_millis(20),
        monitor_interval: Duration::from_millis(20),
        ..Settings::default()
    }
}

fn request(kind: DeploymentType, node_cpus: u32) -> CreateDeployment {
    CreateDeployment {
        org: "acme".into(),
        title: "rpg".into(),
        instance: InstanceName::parse("alpha").unwrap(),
        zone: Zone::parse("us-east1").unwrap(),
        kind,
        version: "3.35.0".parse().unwrap(),
        node_cpus,
        db_cpus: 1,
        delete_protection: None,
    }
}

/// Waits (bounded) until operation `id` is finished.
async fn finished(rt: &Runtime, id: u64) -> Operation {
    for _ in 0..500 {
        let op = rt.store().op(id).unwrap().unwrap();
        if op.status.is_final() {
            return op;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("operation {id} did not finish");
}

/// Waits (bounded) until the edge's table shows `n` of alpha's nodes in `state`, and returns
/// how many it shows then: a step stores what it did (and makes it readable) before it
/// publishes to the edge, so what a test reads from the runtime may be a moment ahead.
async fn edge_shows(table: &HealthTable, state: NodeState, n: usize) -> usize {
    let count = || {
        table
            .load()
            .find("alpha", "us-east1")
            .map_or(0, |d| d.count(state))
    };
    wait_until(|| count() == n).await;
    count()
}

/// Polls `done` every 20 ms for at most 5 s; the caller asserts what it waited for.
async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..250 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_through_real_listeners_and_health_table() {
    let table = Arc::new(HealthTable::new());
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        settings(),
        Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
        edge(&table),
    )
    .unwrap();
    let (dep, first) = rt
        .create(request(DeploymentType::Production, 2), "ann")
        .unwrap();
    assert_eq!(dep.keys.server_key.len(), 64);
    assert_ne!(dep.keys.server_key, dep.keys.runtime_key);
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    assert_eq!(edge_shows(&table, NodeState::Ready, 2).await, 2);

    let up = rt
        .submit(
            "alpha",
            OpKind::Deploy {
                version: "3.37.0".parse().unwrap(),
                image: None,
            },
            "ann",
        )
        .unwrap();
    assert_eq!(finished(&rt, up.id).await.status, OpStatus::Completed);
    let dep = rt.deployment("alpha").unwrap();
    assert_eq!(dep.spec.version.to_string(), "3.37.0");
    assert!(dep
        .nodes
        .iter()
        .all(|n| n.state == NodeRunState::Ready && n.generation == 2));

    // A crashing image loops, then a fixed deploy supersedes it; the other node kept serving.
    let bad = rt
        .submit(
            "alpha",
            OpKind::Deploy {
                version: "3.37.1-r1".parse().unwrap(),
                image: Some(CRASH_IMAGE.into()),
            },
            "ann",
        )
        .unwrap();
    for _ in 0..500 {
        let d = rt.deployment("alpha").unwrap();
        if d.nodes
            .iter()
            .any(|n| n.state == NodeRunState::CrashLoopBackOff)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        table
            .load()
            .find("alpha", "us-east1")
            .unwrap()
            .count(NodeState::Ready),
        1
    );
    let good = rt
        .submit(
            "alpha",
            OpKind::Deploy {
                version: "3.37.1-r1".parse().unwrap(),
                image: None,
            },
            "ann",
        )
        .unwrap();
    let bad = finished(&rt, bad.id).await;
    assert!(bad.error.unwrap().contains("superseded"));
    assert_eq!(finished(&rt, good.id).await.status, OpStatus::Completed);
    let m = rt.metrics();
    // Counted in the same step as the store write `finished` saw, just after it.
    wait_until(|| m.operations("deploy", "completed") == 3).await;
    assert_eq!(
        m.operations("deploy", "completed"),
        3,
        "create, upgrade, fix"
    );
    assert_eq!(m.operations("deploy", "failed"), 1, "the superseded one");
    assert_eq!(m.operations("reboot", "completed"), 0);
    assert!(m.crashloop_restarts("alpha") >= 1);
    assert_eq!(edge_shows(&table, NodeState::Ready, 2).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_node_that_dies_is_unpublished_then_restarted() {
    let table = Arc::new(HealthTable::new());
    let driver = Arc::new(LoopbackDriver::new());
    let mut slow_restart = settings();
    // Long enough to see the node unpublished while it waits.
    slow_restart.timings.backoff_base = Duration::from_secs(1);
    slow_restart.timings.backoff_cap = Duration::from_secs(1);
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        slow_restart,
        Arc::new(ProcessDriver::new(driver.clone())),
        edge(&table),
    )
    .unwrap();
    let (_, first) = rt
        .create(request(DeploymentType::Production, 2), "ann")
        .unwrap();
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    let before = rt.deployment("alpha").unwrap().nodes[1].incarnation;
    assert!(driver.crash("alpha", "alpha-1"));
    for _ in 0..500 {
        if rt.deployment("alpha").unwrap().nodes[1].state == NodeRunState::CrashLoopBackOff {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rt.deployment("alpha").unwrap().nodes[1].state,
        NodeRunState::CrashLoopBackOff
    );
    assert_eq!(
        rt.metrics().crashloop_restarts("alpha"),
        1,
        "one node entered CrashLoopBackOff once"
    );
    assert_eq!(edge_shows(&table, NodeState::Unhealthy, 1).await, 1);
    assert_eq!(edge_shows(&table, NodeState::Ready, 1).await, 1);
    // After the restart delay it is started again, without any operation, and published.
    let mut restarted = false;
    for _ in 0..500 {
        let n = rt.deployment("alpha").unwrap().nodes[1].clone();
        if n.state == NodeRunState::Ready && n.incarnation > before {
            restarted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(restarted, "the dead node was not restarted");
    assert_eq!(edge_shows(&table, NodeState::Ready, 2).await, 2);
    // Operations still run as before.
    let reboot = rt.submit("alpha", OpKind::Reboot, "ann").unwrap();
    assert_eq!(finished(&rt, reboot.id).await.status, OpStatus::Completed);
    let dep = rt.deployment("alpha").unwrap();
    assert!(dep.nodes.iter().all(|n| n.state == NodeRunState::Ready));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_counts_the_operations_waiting_behind_the_running_one() {
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        settings(),
        Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
        edge(&Arc::new(HealthTable::new())),
    )
    .unwrap();
    let (_, first) = rt
        .create(request(DeploymentType::Production, 2), "ann")
        .unwrap();
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    // A crashing image holds the queue (in progress, crash-looping); a reboot waits behind it.
    let stuck = rt
        .submit(
            "alpha",
            OpKind::Deploy {
                version: "3.37.0".parse().unwrap(),
                image: Some(CRASH_IMAGE.into()),
            },
            "ann",
        )
        .unwrap();
    rt.submit("alpha", OpKind::Reboot, "ann").unwrap();
    let depth = |rt: &Runtime| {
        rt.queue_depths()
            .into_iter()
            .find(|(d, _)| d.instance.as_str() == "alpha")
            .map(|(_, q)| q)
    };
    assert_eq!(depth(&rt), Some(1), "the running deploy is not waiting");
    let m = rt.metrics();
    m.observe_deployments(rt.queue_depths().iter().map(|(d, q)| (d, *q)));
    assert!(
        m.render()
            .contains("kanmon_control_queue_depth{deployment=\"alpha\"} 1\n"),
        "{}",
        m.render()
    );
    assert!(!rt.store().op(stuck.id).unwrap().unwrap().status.is_final());
}

mod certificates;
mod grace;
mod isolation;

/// Fails its first applies, as a cluster API that is briefly unreachable would.
struct Flaky {
    inner: ProcessDriver<LoopbackDriver>,
    failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl crate::driver::Driver for Flaky {
    async fn apply(
        &self,
        desired: &crate::driver::DesiredState,
        observer: &crate::driver::Observer,
    ) -> Result<(), crate::driver::DriverError> {
        let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(crate::driver::DriverError::Other(
                "cluster unreachable".into(),
            ));
        }
        self.inner.apply(desired, observer).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_is_tried_again_until_the_nodes_run() {
    let table = Arc::new(HealthTable::new());
    let driver = Arc::new(Flaky {
        inner: ProcessDriver::new(Arc::new(LoopbackDriver::new())),
        failures: std::sync::atomic::AtomicU32::new(1),
    });
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        settings(),
        driver.clone(),
        edge(&table),
    )
    .unwrap();
    let (_, first) = rt
        .create(request(DeploymentType::Production, 2), "ann")
        .unwrap();
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    assert_eq!(driver.failures.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(edge_shows(&table, NodeState::Ready, 2).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_names_are_reserved_and_the_allow_list_reaches_the_edge_and_the_store() {
    let table = Arc::new(HealthTable::new());
    let store = Arc::new(Store::in_memory().unwrap());
    let rt = Runtime::start(
        store.clone(),
        settings(),
        Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
        edge(&table),
    )
    .unwrap();
    // `alpha-console` would read as alpha's console hostname: refused by name.
    let reserved = CreateDeployment {
        instance: InstanceName::parse("alpha-console").unwrap(),
        ..request(DeploymentType::Development, 1)
    };
    let err = rt.create(reserved, "ann").unwrap_err();
    assert!(
        matches!(err, RuntimeError::Domain(DomainError::ReservedName { .. })),
        "{err}"
    );
    let (dep, first) = rt
        .create(request(DeploymentType::Development, 1), "ann")
        .unwrap();
    assert!(dep.console_allow.is_empty(), "a new console must be closed");
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    let allow: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    rt.set_console_allow("alpha", allow.clone()).unwrap();
    let snap = table.load();
    assert_eq!(
        snap.find("alpha", "us-east1").unwrap().console_allow(),
        &allow[..]
    );
    let stored = store.deployments().unwrap();
    let stored = stored
        .iter()
        .find(|d| d.instance.as_str() == "alpha")
        .unwrap();
    assert_eq!(stored.console_allow, allow);
}
