//! Builders shared by the router's integration tests.
#![allow(dead_code, unreachable_pub)]

use kanmon_router::{DeploymentSpec, InstanceName, NodeSpec, NodeState, Zone};

pub fn node(i: usize, state: NodeState) -> NodeSpec {
    NodeSpec {
        id: format!("n{i}"),
        addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
        grpc: None,
        console: None,
        state,
    }
}

pub fn deployment(instance: &str, states: &[NodeState]) -> DeploymentSpec {
    DeploymentSpec {
        instance: InstanceName::parse(instance).unwrap(),
        zone: Zone::parse("us-east1").unwrap(),
        nodes: states
            .iter()
            .enumerate()
            .map(|(i, s)| node(i, *s))
            .collect(),
        fallback_to_draining: false,
        max_connections: None,
        console_allow: Vec::new(),
    }
}
