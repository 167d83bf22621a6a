use std::net::SocketAddr;

use super::*;
use crate::{domain::sim::running_deployment, k8s::observe::NodeEndpoints};

fn node(incarnation: u64, phase: NodePhase) -> DesiredNode {
    let dep = running_deployment();
    let mut launch = dep.launch(0, &dep.spec, 1, std::time::Duration::from_secs(30));
    launch.incarnation = incarnation;
    DesiredNode { launch, phase }
}

fn pod(uid: &str, what: NodeObservation) -> PodObservation {
    PodObservation {
        node: "alpha-0".into(),
        incarnation: uid.into(),
        generation: Some(1),
        what,
    }
}

fn started(uid: &str) -> PodObservation {
    let addr: SocketAddr = "10.0.0.1:7350".parse().unwrap();
    pod(
        uid,
        NodeObservation::Started(NodeEndpoints {
            addr,
            grpc: None,
            console: None,
        }),
    )
}

fn incarnations(obs: &[Observation]) -> Vec<u64> {
    obs.iter()
        .map(|o| match o {
            Observation::Started { incarnation, .. }
            | Observation::Ready { incarnation, .. }
            | Observation::Draining { incarnation, .. }
            | Observation::Exited { incarnation, .. }
            | Observation::Restarting { incarnation, .. } => *incarnation,
        })
        .collect()
}

#[test]
fn a_pod_of_a_removed_node_never_speaks_for_its_namesake() {
    let mut book = Book::default();
    book.want(&[node(1, NodePhase::Run)]);
    assert_eq!(incarnations(&book.observe(started("u1"))), [1]);
    assert_eq!(
        incarnations(&book.observe(pod("u1", NodeObservation::Ready))),
        [1]
    );
    // Scaled down: the node leaves the deployment while its pod still terminates.
    book.want(&[]);
    // Scaled up again: the same node id, incarnation 1 once more.
    book.want(&[node(1, NodePhase::Run)]);
    for late in [
        pod("u1", NodeObservation::Draining),
        pod("u1", NodeObservation::Exited { code: Some(0) }),
        pod("u1", NodeObservation::Gone),
    ] {
        assert!(book.observe(late).is_empty(), "stale pod reported");
    }
    // Its successor is the new incarnation 1.
    assert_eq!(incarnations(&book.observe(started("u2"))), [1]);
}

#[test]
fn a_successor_created_before_it_is_asked_for_is_replayed_then() {
    let mut book = Book::default();
    book.want(&[node(1, NodePhase::Run)]);
    book.observe(started("u1"));
    book.observe(pod("u1", NodeObservation::Ready));
    let plan = book.want(&[node(1, NodePhase::Gone)]);
    assert_eq!(
        plan.delete,
        [Deletion {
            node: "alpha-0".into(),
            uid: "u1".into()
        }]
    );
    assert!(plan.report.is_empty(), "the pod reports its own exit");
    book.observe(pod("u1", NodeObservation::Draining));
    let exit = book.observe(pod("u1", NodeObservation::Exited { code: Some(0) }));
    assert_eq!(incarnations(&exit), [1]);
    book.observe(pod("u1", NodeObservation::Gone));
    // The StatefulSet controller replaces the pod before the domain starts incarnation 2.
    assert!(book.observe(started("u2")).is_empty());
    assert!(book.observe(pod("u2", NodeObservation::Ready)).is_empty());
    let plan = book.want(&[node(2, NodePhase::Run)]);
    assert!(plan.delete.is_empty(), "{plan:?}");
    assert_eq!(incarnations(&plan.report), [2, 2]);
    assert!(matches!(plan.report[1], Observation::Ready { .. }));
}

#[test]
fn a_restarted_incarnation_is_replaced_and_a_podless_stop_answered_once() {
    let mut book = Book::default();
    book.want(&[node(1, NodePhase::Run)]);
    book.observe(started("u1"));
    let died = book.observe(pod(
        "u1",
        NodeObservation::Restarting {
            restarts: 1,
            last_exit: Some(1),
        },
    ));
    assert_eq!(incarnations(&died), [1]);
    // Its later reports are the dead incarnation's: dropped.
    assert!(book.observe(pod("u1", NodeObservation::Ready)).is_empty());
    // The domain starts incarnation 2: the crash-looping pod is deleted for a fresh one.
    let plan = book.want(&[node(2, NodePhase::Run)]);
    assert_eq!(plan.delete.len(), 1);
    // A stop of a node without any pod is answered with an exit, once.
    let mut empty = Book::default();
    let plan = empty.want(&[node(3, NodePhase::Gone)]);
    assert_eq!(incarnations(&plan.report), [3]);
    assert!(empty.want(&[node(3, NodePhase::Gone)]).report.is_empty());
}

#[test]
fn closing_a_deleted_deployment_answers_each_incarnation_not_yet_exited() {
    let mut book = Book::default();
    book.want(&[node(1, NodePhase::Run)]);
    book.observe(started("u1"));
    book.observe(pod("u1", NodeObservation::Exited { code: Some(0) }));
    // Incarnation 1 reported its exit; incarnation 2 never did.
    assert!(book.close(&[node(1, NodePhase::Gone)]).is_empty());
    assert_eq!(incarnations(&book.close(&[node(2, NodePhase::Gone)])), [2]);
    assert!(book.close(&[node(2, NodePhase::Gone)]).is_empty(), "once");
}
