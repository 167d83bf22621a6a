//! Balancing rules: ready-only picks, draining fallback, capacity, ejection, counters that
//! survive swaps.

mod common;

use common::deployment;
use kanmon_router::{HealthTable, NodeState::*, PickError};

#[test]
fn unknown_and_no_ready() {
    let t = HealthTable::new();
    assert_eq!(
        t.pick("alpha", "us-east1", 0).unwrap_err(),
        PickError::UnknownDeployment
    );
    t.publish_all(vec![deployment("alpha", &[Draining, Unhealthy])]);
    assert_eq!(
        t.pick("alpha", "us-east1", 0).unwrap_err(),
        PickError::NoReadyNode
    );
    assert_eq!(
        t.pick("alpha", "eu-west1", 0).unwrap_err(),
        PickError::UnknownDeployment
    );
    assert_eq!(
        t.pick("beta", "us-east1", 0).unwrap_err(),
        PickError::UnknownDeployment
    );
}

#[test]
fn never_picks_draining_or_unhealthy() {
    let t = HealthTable::new();
    t.publish_all(vec![deployment(
        "alpha",
        &[Draining, Ready, Unhealthy, Ready],
    )]);
    let guards: Vec<_> = (0..1000)
        .map(|_| t.pick("alpha", "us-east1", 0).unwrap())
        .collect();
    assert!(guards.iter().all(|g| g.node().state() == Ready));
    let on = |id: &str| guards.iter().filter(|g| g.node().id() == id).count();
    assert_eq!(on("n1") + on("n3"), 1000);
    assert!(
        on("n1").abs_diff(on("n3")) <= 1,
        "p2c keeps equal nodes level"
    );
}

#[test]
fn case_insensitive_lookup_and_trailing_forms() {
    let t = HealthTable::new();
    t.publish_all(vec![deployment("alpha", &[Ready])]);
    assert!(t.pick("ALPHA", "US-EAST1", 0).is_ok());
    let long = "a".repeat(80);
    assert_eq!(
        t.pick(&long, "us-east1", 0).unwrap_err(),
        PickError::UnknownDeployment
    );
}

#[test]
fn fallback_to_draining_is_opt_in() {
    let t = HealthTable::new();
    let mut d = deployment("alpha", &[Draining]);
    d.fallback_to_draining = true;
    t.publish_all(vec![d]);
    assert_eq!(t.pick("alpha", "us-east1", 0).unwrap().node().id(), "n0");
}

#[test]
fn capacity_limit() {
    let t = HealthTable::new();
    let mut d = deployment("alpha", &[Ready, Ready]);
    d.max_connections = Some(2);
    t.publish_all(vec![d]);
    let a = t.pick("alpha", "us-east1", 0).unwrap();
    let _b = t.pick("alpha", "us-east1", 0).unwrap();
    assert_eq!(
        t.pick("alpha", "us-east1", 0).unwrap_err(),
        PickError::AtCapacity
    );
    drop(a);
    assert!(t.pick("alpha", "us-east1", 0).is_ok());
}

#[test]
fn ejection_skips_node_for_its_period_but_never_below_one() {
    let t = HealthTable::new();
    t.publish_all(vec![deployment("alpha", &[Ready, Ready])]);
    let snap = t.load_full();
    let dep = snap.find("alpha", "us-east1").unwrap();
    dep.nodes()[0].stats().eject(1_000, 5_000);
    for _ in 0..100 {
        assert_eq!(
            t.pick("alpha", "us-east1", 2_000).unwrap().node().id(),
            "n1"
        );
    }
    // After the period both are used again.
    let ids: std::collections::HashSet<_> = (0..100)
        .map(|_| {
            t.pick("alpha", "us-east1", 6_001)
                .unwrap()
                .node()
                .id()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 2);
    // All ejected: still serve from the ready pool.
    dep.nodes()[1].stats().eject(6_001, 5_000);
    dep.nodes()[0].stats().eject(6_001, 5_000);
    assert!(t.pick("alpha", "us-east1", 7_000).is_ok());
}

#[test]
fn retry_excludes_the_failed_node() {
    let t = HealthTable::new();
    t.publish_all(vec![deployment("alpha", &[Ready, Ready, Ready])]);
    for _ in 0..100 {
        let g = t
            .pick_excluding("alpha", "us-east1", 0, Some("n1"))
            .unwrap();
        assert_ne!(g.node().id(), "n1");
    }
    let t1 = HealthTable::new();
    t1.publish_all(vec![deployment("alpha", &[Ready])]);
    assert_eq!(
        t1.pick_excluding("alpha", "us-east1", 0, Some("n0"))
            .unwrap()
            .node()
            .id(),
        "n0"
    );
}

#[test]
fn counters_survive_swaps_and_removal() {
    let t = HealthTable::new();
    t.publish_all(vec![deployment("alpha", &[Ready])]);
    let g = t.pick("alpha", "us-east1", 0).unwrap();
    // The node turns draining: the open connection is still counted on it.
    t.publish_deployment(deployment("alpha", &[Draining]));
    let active = |t: &HealthTable| {
        t.load().find("alpha", "us-east1").unwrap().nodes()[0]
            .stats()
            .active()
    };
    assert_eq!(active(&t), 1);
    // Removed and re-added while the connection is open: the count is still there.
    t.remove_deployment("alpha");
    assert!(t.load().find("alpha", "us-east1").is_none());
    t.publish_deployment(deployment("alpha", &[Ready]));
    assert_eq!(active(&t), 1);
    assert_eq!(
        t.load().find("alpha", "us-east1").unwrap().stats().active(),
        1
    );
    drop(g);
    assert_eq!(active(&t), 0);
}

#[test]
fn generations_increase_per_publish() {
    let t = HealthTable::new();
    assert_eq!(t.load().generation(), 0);
    assert_eq!(t.publish_all(vec![deployment("alpha", &[Ready])]), 1);
    assert_eq!(t.publish_deployment(deployment("beta", &[Ready])), 2);
    assert_eq!(t.remove_deployment("alpha"), 3);
    assert_eq!(t.load().generation(), 3);
    assert_eq!(t.load().len(), 1);
}

#[test]
fn a_pick_allocates_nothing() {
    let t = HealthTable::new();
    let many: Vec<_> = (0..100)
        .map(|i| deployment(&format!("dep{i}"), &[Ready; 16]))
        .collect();
    t.publish_all(many);
    // Warm up thread-local state of arc-swap before counting.
    drop(t.pick("dep7", "us-east1", 0).unwrap());
    let info = allocation_counter::measure(|| {
        for i in 0..1000 {
            let g = t.pick("dep42", "us-east1", i).unwrap();
            std::hint::black_box(&g);
        }
    });
    assert_eq!(info.count_total, 0, "picks allocated: {info:?}");
}
