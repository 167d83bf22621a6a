//! Property tests: random operation sequences, event orders, crashes and time jumps.

use std::{collections::BTreeMap, time::Duration};

use proptest::prelude::*;

use super::sim::*;
use super::*;

#[derive(Debug, Clone)]
enum Action {
    Submit(u8, u8),
    Deliver(usize),
    Timer,
    Crashy(bool),
    Edit(u8),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (0u8..9, 0u8..8).prop_map(|(k, x)| Action::Submit(k, x)),
        6 => (0usize..16).prop_map(Action::Deliver),
        2 => Just(Action::Timer),
        1 => any::<bool>().prop_map(Action::Crashy),
        1 => (0u8..5).prop_map(Action::Edit),
    ]
}

fn op(k: u8, x: u8) -> OpKind {
    let versions = ["3.34.0", "3.35.0", "3.36.0", "3.37.0", "3.37.1"];
    match k {
        0 | 1 => OpKind::Deploy {
            version: v(versions[x as usize % 5]),
            image: None,
        },
        2 => OpKind::Reboot,
        3 => OpKind::Scale {
            node_cpus: u32::from(x % 4) + 1,
            db_cpus: u32::from(x % 3) + 1,
        },
        4 => OpKind::SetVars {
            vars: BTreeMap::from([(format!("k{x}"), "v".into())]),
        },
        5 => OpKind::SetConfig {
            config: BTreeMap::new(),
            secret_config: BTreeMap::new(),
            remove_config: Default::default(),
            remove_secret_config: Default::default(),
        },
        6 => OpKind::Export,
        7 => OpKind::Certificate,
        _ => OpKind::Delete,
    }
}

fn edit(x: u8) -> DeploymentEdit {
    match x {
        0 => DeploymentEdit {
            kind: Some("development".into()),
            ..Default::default()
        },
        1 => DeploymentEdit {
            zone: Some("eu-west1".into()),
            ..Default::default()
        },
        2 => DeploymentEdit {
            instance: Some("other".into()),
            ..Default::default()
        },
        3 => DeploymentEdit {
            version: Some("3.37.1".into()),
            ..Default::default()
        },
        _ => DeploymentEdit {
            delete_protection: Some(false),
            ..Default::default()
        },
    }
}

fn timings() -> Timings {
    Timings {
        crashloop_timeout: Duration::from_secs(120),
        ..Timings::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold(production in any::<bool>(), cpus in 1u32..4, actions in prop::collection::vec(action(), 1..120)) {
        let kind = if production { DeploymentType::Production } else { DeploymentType::Development };
        let mut sim = Sim::new(kind, cpus, timings());
        let first = sim.submit(OpKind::Deploy { version: v("3.35.0"), image: None }).unwrap();
        let (instance, zone) = (sim.ctl.deployment.instance.clone(), sim.ctl.deployment.zone.clone());
        let mut version = sim.ctl.deployment.spec.version;
        let mut finished = BTreeMap::new();
        for a in actions {
            match a {
                Action::Submit(k, x) => { let _ = sim.submit(op(k, x)); }
                Action::Deliver(i) => { sim.deliver(i); }
                Action::Timer => { sim.fire_timer(); }
                Action::Crashy(c) => {
                    sim.behaviour = if c { NodeBehaviour::CrashOnStart } else { NodeBehaviour::Healthy };
                }
                Action::Edit(x) => { let _ = sim.ctl.deployment.edit(&edit(x)); }
            }
            let dep = &sim.ctl.deployment;
            // Permanent choices never change; the version never goes down.
            prop_assert_eq!(&dep.instance, &instance);
            prop_assert_eq!(&dep.zone, &zone);
            prop_assert_eq!(dep.kind, kind);
            prop_assert!(dep.spec.version >= version);
            version = dep.spec.version;
            // One operation at a time, and it heads the controller's queue.
            let in_progress: Vec<_> = sim.saved.values().filter(|o| o.status == OpStatus::InProgress).collect();
            prop_assert!(in_progress.len() <= 1);
            if let Some(op) = in_progress.first() {
                prop_assert_eq!(sim.ctl.queue().next().map(|o| o.id), Some(op.id));
            }
            // Finished operations never change again.
            for o in sim.saved.values().filter(|o| o.status.is_final()) {
                if let Some(prev) = finished.insert(o.id, o.status) {
                    prop_assert_eq!(prev, o.status);
                }
            }
            // A rollout never takes down a second node.
            if production && !dep.deleted {
                prop_assert!(sim.nodes_down() <= 1, "nodes: {:?}", dep.nodes);
            }
            // Development deployments never run more than one node.
            if !production {
                prop_assert!(dep.nodes.len() <= 1);
            }
        }
        // With a healthy driver, everything queued eventually finishes.
        sim.behaviour = NodeBehaviour::Healthy;
        sim.settle();
        prop_assert!(sim.saved.values().all(|o| o.status.is_final()));
        prop_assert!(sim.saved.contains_key(&first));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The production promise on its own: whatever order the driver reports in, and however
    /// often nodes crash on start, a rolling reboot never has two nodes down at once, and with
    /// healthy nodes it ends with every node ready.
    #[test]
    fn rolling_reboot_never_takes_two_nodes_down(
        cpus in 2u32..6,
        steps in prop::collection::vec((0usize..16, 0u8..10), 1..200),
    ) {
        let mut sim = Sim::new(DeploymentType::Production, cpus, timings());
        sim.submit(OpKind::Deploy { version: v("3.35.0"), image: None }).unwrap();
        sim.settle();
        prop_assert_eq!(sim.nodes_down(), 0);
        let reboot = sim.submit(OpKind::Reboot).unwrap();
        for (pick, roll) in steps {
            match roll {
                0 => sim.behaviour = NodeBehaviour::CrashOnStart,
                1 => sim.behaviour = NodeBehaviour::Healthy,
                2 | 3 => { sim.fire_timer(); }
                _ => { sim.deliver(pick); }
            }
            prop_assert!(sim.nodes_down() <= 1, "nodes: {:?}", sim.ctl.deployment.nodes);
            prop_assert_eq!(sim.ctl.deployment.nodes.len() as u32, cpus);
        }
        sim.behaviour = NodeBehaviour::Healthy;
        sim.settle();
        let status = sim.status(reboot);
        prop_assert!(status.is_final());
        if status == OpStatus::Completed {
            prop_assert_eq!(sim.nodes_down(), 0);
        }
    }
}

/// An observation a driver might send: about any node, for its current incarnation, the one
/// before or the one after, in any order and as often as it likes.
#[derive(Debug, Clone)]
enum Seen {
    Started,
    Ready,
    Draining,
    Exited(Option<i32>),
    Restarting,
}

fn seen() -> impl Strategy<Value = Seen> {
    prop_oneof![
        1 => Just(Seen::Started),
        3 => Just(Seen::Ready),
        1 => Just(Seen::Draining),
        2 => prop::option::of(0i32..3).prop_map(Seen::Exited),
        1 => Just(Seen::Restarting),
    ]
}

#[derive(Debug, Clone)]
enum World {
    Submit(u8, u8),
    Deliver(usize),
    Timer,
    Observe(u32, i8, Seen),
}

fn world() -> impl Strategy<Value = World> {
    prop_oneof![
        1 => (0u8..6, 0u8..8).prop_map(|(k, x)| World::Submit(k, x)),
        4 => (0usize..16).prop_map(World::Deliver),
        2 => Just(World::Timer),
        4 => (0u32..4, -1i8..=1, seen()).prop_map(|(s, d, o)| World::Observe(s, d, o)),
    ]
}

fn observation(sim: &Sim, slot: u32, delta: i8, seen: Seen) -> crate::driver::Observation {
    use crate::driver::{Endpoints, Observation};
    let dep = &sim.ctl.deployment;
    let node = deployment::node_id(&dep.instance, slot);
    let current = dep
        .nodes
        .iter()
        .find(|n| n.slot == slot)
        .map_or(1, |n| n.incarnation);
    let incarnation = current.saturating_add_signed(i64::from(delta));
    match seen {
        Seen::Started => Observation::Started {
            node,
            incarnation,
            endpoints: Endpoints {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + slot as u16)),
                grpc: None,
                console: None,
            },
        },
        Seen::Ready => Observation::Ready { node, incarnation },
        Seen::Draining => Observation::Draining { node, incarnation },
        Seen::Exited(code) => Observation::Exited {
            node,
            incarnation,
            code,
        },
        Seen::Restarting => Observation::Restarting {
            node,
            incarnation,
            restarts: 1,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a driver reports (stale, early, repeated, about the wrong incarnation), mixed
    /// with operations and time: an incarnation marked draining is never published ready
    /// again (no new connection reaches it), and one deployment never runs two operations.
    #[test]
    fn no_observation_sequence_sends_traffic_to_a_draining_node(
        cpus in 1u32..4,
        steps in prop::collection::vec(world(), 1..200),
    ) {
        let mut sim = Sim::new(DeploymentType::Production, cpus.max(2), timings());
        sim.submit(OpKind::Deploy { version: v("3.35.0"), image: None }).unwrap();
        for step in steps {
            match step {
                World::Submit(k, x) => { let _ = sim.submit(op(k, x)); }
                World::Deliver(i) => { sim.deliver(i); }
                World::Timer => { sim.fire_timer(); }
                World::Observe(slot, delta, seen) => {
                    let o = observation(&sim, slot, delta, seen);
                    if let Some(ev) = crate::runtime::event_of("alpha", o) {
                        let out = sim.ctl.handle_event(ev, &sim.catalog, sim.now);
                        sim.apply(out);
                    }
                }
            }
            let dep = &sim.ctl.deployment;
            let published = crate::driver::deployment_spec(dep);
            for n in published.nodes.iter().filter(|n| n.state == kanmon_router::NodeState::Ready) {
                let record = dep.nodes.iter().find(|r| r.id == n.id).unwrap();
                prop_assert!(
                    !sim.marked.contains(&(n.id.clone(), record.generation, record.incarnation)),
                    "{} (incarnation {}) was marked draining and is published ready",
                    n.id,
                    record.incarnation
                );
            }
            let running = sim.saved.values().filter(|o| o.status == OpStatus::InProgress).count();
            prop_assert!(running <= 1, "{running} operations in progress");
        }
    }
}
