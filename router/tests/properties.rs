//! Property tests: for any table and any sequence of picks, swaps and guard drops, no pick lands
//! on a non-ready node, counters return to zero, and equal nodes stay level.

mod common;

use kanmon_router::{
    ConnectionGuard, DeploymentSpec, HealthTable, InstanceName, NodeSpec, NodeState, Zone,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Pick,
    Drop(u8),
    Swap(Vec<NodeState>),
    Remove,
}

fn state() -> impl Strategy<Value = NodeState> {
    prop_oneof![
        Just(NodeState::Ready),
        Just(NodeState::Draining),
        Just(NodeState::Unhealthy)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Pick),
        3 => any::<u8>().prop_map(Op::Drop),
        1 => prop::collection::vec(state(), 0..6).prop_map(Op::Swap),
        1 => Just(Op::Remove),
    ]
}

fn spec(states: &[NodeState]) -> DeploymentSpec {
    DeploymentSpec {
        instance: InstanceName::parse("alpha").unwrap(),
        zone: Zone::parse("us-east1").unwrap(),
        nodes: states
            .iter()
            .enumerate()
            .map(|(i, s)| NodeSpec {
                id: format!("n{i}"),
                addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                grpc: None,
                console: None,
                state: *s,
            })
            .collect(),
        fallback_to_draining: false,
        max_connections: None,
        console_allow: Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn picks_are_ready_and_counters_return_to_zero(
        initial in prop::collection::vec(state(), 0..6),
        ops in prop::collection::vec(op(), 0..200),
    ) {
        let t = HealthTable::new();
        t.publish_all(vec![spec(&initial)]);
        let mut held: Vec<ConnectionGuard> = Vec::new();
        for op in ops {
            match op {
                Op::Pick => {
                    let snap = t.load_full();
                    if let Ok(g) = t.pick("alpha", "us-east1", 0) {
                        // The pick was made against the snapshot current at that moment.
                        let now = snap.find("alpha", "us-east1").unwrap();
                        let n = now.nodes().iter().find(|n| n.id() == g.node().id()).unwrap();
                        prop_assert_eq!(n.state(), NodeState::Ready);
                        held.push(g);
                    }
                }
                Op::Drop(i) => {
                    if !held.is_empty() {
                        held.swap_remove(i as usize % held.len());
                    }
                }
                Op::Swap(states) => { t.publish_deployment(spec(&states)); }
                Op::Remove => { t.remove_deployment("alpha"); }
            }
            // Every counter equals the guards held against it.
            if let Some(dep) = t.load().find("alpha", "us-east1") {
                for n in dep.nodes() {
                    let held_here = held.iter().filter(|g| g.node().id() == n.id()).count() as u64;
                    prop_assert_eq!(n.stats().active(), held_here);
                }
                prop_assert_eq!(dep.stats().active(), held.len() as u64);
            }
        }
        let stats: Vec<_> = held.iter().map(|g| g.node().stats().clone()).collect();
        drop(held);
        prop_assert!(stats.iter().all(|s| s.active() == 0));
    }

    #[test]
    fn equal_nodes_stay_level(n in 2usize..12, picks in 1usize..600) {
        let t = HealthTable::new();
        t.publish_all(vec![spec(&vec![NodeState::Ready; n])]);
        let held: Vec<_> = (0..picks).map(|_| t.pick("alpha", "us-east1", 0).unwrap()).collect();
        let dep = t.load_full();
        let dep = dep.find("alpha", "us-east1").unwrap();
        let counts: Vec<u64> = dep.nodes().iter().map(|n| n.stats().active()).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // Power of two choices keeps the spread tiny; a gap of a few connections at most (O(log log n)).
        prop_assert!(max - min <= 6, "spread {:?}", counts);
        drop(held);
    }
}
