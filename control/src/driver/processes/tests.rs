use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::*;
use crate::{
    domain::sim::running_deployment,
    driver::{LoopbackDriver, CRASH_IMAGE},
};

const PROBE: Probe = Probe {
    interval: Duration::from_millis(20),
    timeout: Duration::from_secs(5),
    liveness: Duration::from_millis(20),
};

fn state(nodes: Vec<DesiredNode>) -> DesiredState {
    DesiredState {
        instance: "alpha".into(),
        deployment: running_deployment(),
        nodes,
        probe: PROBE,
    }
}

fn node(incarnation: u64, phase: NodePhase) -> DesiredNode {
    let dep = running_deployment();
    let mut launch = dep.launch(0, &dep.spec, 1, Duration::from_secs(30));
    launch.incarnation = incarnation;
    DesiredNode { launch, phase }
}

/// The next observation (bounded wait).
async fn next(rx: &mut UnboundedReceiver<(String, Observation)>) -> Observation {
    let got = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
    let (instance, o) = got
        .expect("an observation in time")
        .expect("observer alive");
    assert_eq!(instance, "alpha");
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_incarnation_is_reported_started_ready_draining_and_exited_once() {
    let procs = Arc::new(LoopbackDriver::new());
    let driver = ProcessDriver::new(procs.clone());
    let (observer, mut rx) = Observer::channel();
    driver
        .apply(&state(vec![node(1, NodePhase::Run)]), &observer)
        .await
        .unwrap();
    let Observation::Started { endpoints, .. } = next(&mut rx).await else {
        panic!("not started first");
    };
    assert!(endpoints.addr.ip().is_loopback());
    assert!(matches!(
        next(&mut rx).await,
        Observation::Ready { incarnation: 1, .. }
    ));
    driver
        .apply(&state(vec![node(1, NodePhase::Drain)]), &observer)
        .await
        .unwrap();
    assert!(matches!(
        next(&mut rx).await,
        Observation::Draining { incarnation: 1, .. }
    ));
    // Level-triggered: the same state applied twice reports its exit once.
    for _ in 0..2 {
        driver
            .apply(&state(vec![node(1, NodePhase::Gone)]), &observer)
            .await
            .unwrap();
    }
    assert!(matches!(
        next(&mut rx).await,
        Observation::Exited { incarnation: 1, .. }
    ));
    assert_eq!(procs.health("alpha", "alpha-0").await, NodeHealth::Exited);

    // A new incarnation starts; when it dies by itself its death is observed.
    driver
        .apply(&state(vec![node(2, NodePhase::Run)]), &observer)
        .await
        .unwrap();
    assert!(matches!(
        next(&mut rx).await,
        Observation::Started { incarnation: 2, .. }
    ));
    assert!(matches!(
        next(&mut rx).await,
        Observation::Ready { incarnation: 2, .. }
    ));
    assert!(procs.crash("alpha", "alpha-0"));
    assert!(matches!(
        next(&mut rx).await,
        Observation::Exited { incarnation: 2, .. }
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "a dead incarnation is not restarted by the driver"
    );

    // One that cannot start is reported exited; an unlisted node is stopped silently.
    let mut crash = node(3, NodePhase::Run);
    crash.launch.image = Some(CRASH_IMAGE.into());
    driver.apply(&state(vec![crash]), &observer).await.unwrap();
    assert!(matches!(
        next(&mut rx).await,
        Observation::Started { incarnation: 3, .. }
    ));
    assert!(matches!(
        next(&mut rx).await,
        Observation::Exited { incarnation: 3, .. }
    ));
    driver
        .apply(&state(vec![node(4, NodePhase::Run)]), &observer)
        .await
        .unwrap();
    assert!(matches!(
        next(&mut rx).await,
        Observation::Started { incarnation: 4, .. }
    ));
    assert!(matches!(
        next(&mut rx).await,
        Observation::Ready { incarnation: 4, .. }
    ));
    driver.apply(&state(Vec::new()), &observer).await.unwrap();
    for _ in 0..1500 {
        if procs.health("alpha", "alpha-0").await == NodeHealth::Exited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(procs.health("alpha", "alpha-0").await, NodeHealth::Exited);
}
