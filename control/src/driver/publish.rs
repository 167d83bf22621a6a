//! Building the router's view of a deployment, and the in-process publisher.

use kanmon_proxy::discovery::Publisher;
use kanmon_router::{DeploymentSpec, InstanceName, NodeSpec, NodeState, Zone};

use super::{NodeStatePublisher, PublishError};
use crate::domain::{Deployment, NodeRunState};

/// The proxy's view of `dep`: nodes without a known address are left out (nothing to route
/// to); only `Ready` is ready, only `Draining` is draining, anything else is unhealthy.
pub fn deployment_spec(dep: &Deployment) -> DeploymentSpec {
    let nodes = dep
        .nodes
        .iter()
        .filter_map(|n| {
            Some(NodeSpec {
                id: n.id.clone(),
                addr: n.addr?,
                grpc: n.grpc,
                console: n.console,
                state: match n.state {
                    NodeRunState::Ready => NodeState::Ready,
                    NodeRunState::Draining => NodeState::Draining,
                    _ => NodeState::Unhealthy,
                },
            })
        })
        .collect();
    DeploymentSpec {
        instance: dep.instance.clone(),
        zone: dep.zone.clone(),
        nodes,
        fallback_to_draining: dep.fallback_to_draining,
        max_connections: None,
        console_allow: dep.console_allow.clone(),
    }
}

/// Discovery source label of the in-process control plane in the proxy's metrics.
pub const SOURCE: &str = "inprocess";

/// Publishes into a proxy in the same process through its discovery [`Publisher`]: the table
/// swap is immediate (a draining mark reaches the router before the next connection) and the
/// proxy's `kanmon_nodes` gauges, departed node series and `/readyz` follow. The only way the
/// control plane writes an in-process proxy's table, so they can never disagree.
#[derive(Clone)]
pub struct ProxyPublisher {
    publisher: Publisher,
}

impl std::fmt::Debug for ProxyPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyPublisher").finish_non_exhaustive()
    }
}

impl ProxyPublisher {
    /// Publishes through `publisher` (from `kanmon_proxy::Proxy::publisher`).
    pub fn new(publisher: Publisher) -> Self {
        publisher.announce(SOURCE);
        Self { publisher }
    }
}

impl NodeStatePublisher for ProxyPublisher {
    fn publish(&self, spec: DeploymentSpec) -> Result<(), PublishError> {
        self.publisher.publish_deployment(SOURCE, spec);
        Ok(())
    }

    fn remove(&self, instance: &InstanceName) -> Result<(), PublishError> {
        self.publisher.remove_deployment(SOURCE, instance.as_str());
        Ok(())
    }

    fn active_connections(&self, instance: &InstanceName, zone: &Zone, node: &str) -> Option<u64> {
        let snapshot = self.publisher.table().load();
        let dep = snapshot.find(instance.as_str(), zone.as_str())?;
        let node = dep.nodes().iter().find(|n| n.id() == node)?;
        Some(node.stats().active())
    }
}

/// Publishes nowhere (no proxy attached): draining then always waits the grace period.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullPublisher;

impl NodeStatePublisher for NullPublisher {
    fn publish(&self, _spec: DeploymentSpec) -> Result<(), PublishError> {
        Ok(())
    }

    fn remove(&self, _instance: &InstanceName) -> Result<(), PublishError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kanmon_router::HealthTable;

    use super::*;
    use crate::domain::sim::running_deployment;

    #[test]
    fn the_proxy_sees_draining_at_once_and_its_gauges_follow() {
        let table = Arc::new(HealthTable::new());
        let metrics = kanmon_proxy::metrics::Metrics::new().unwrap();
        let publisher = ProxyPublisher::new(Publisher::new(table.clone(), metrics.clone()));
        let mut dep = running_deployment();
        publisher.publish(deployment_spec(&dep)).unwrap();
        dep.nodes[1].state = NodeRunState::Draining;
        publisher.publish(deployment_spec(&dep)).unwrap();
        let snap = table.load();
        let found = snap.find("alpha", "us-east1").unwrap();
        assert_eq!(found.count(NodeState::Ready), 1);
        assert_eq!(found.count(NodeState::Draining), 1);
        let text = String::from_utf8(metrics.render()).unwrap();
        let gauge = "kanmon_nodes{deployment=\"alpha\",state=\"draining\",zone=\"us-east1\"} 1";
        assert!(text.contains(gauge), "{text}");
        assert_eq!(
            publisher.active_connections(&dep.instance, &dep.zone, "alpha-1"),
            Some(0)
        );
        publisher.remove(&dep.instance).unwrap();
        assert!(table.load().find("alpha", "us-east1").is_none());
    }
}
