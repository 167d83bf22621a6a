//! Building the router's view of a deployment, and the in-process publisher.

use std::sync::Arc;

use kanmon_router::{DeploymentSpec, HealthTable, InstanceName, NodeSpec, NodeState, Zone};

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
    }
}

/// Publishes straight into the proxy's [`HealthTable`] (the `kanmon up` wiring, proxy in the
/// same process): a draining mark is visible to the very next connection.
#[derive(Debug, Clone)]
pub struct HealthTablePublisher {
    table: Arc<HealthTable>,
}

impl HealthTablePublisher {
    /// Publishes into `table`.
    pub fn new(table: Arc<HealthTable>) -> Self {
        Self { table }
    }
}

impl NodeStatePublisher for HealthTablePublisher {
    fn publish(&self, spec: DeploymentSpec) -> Result<(), PublishError> {
        self.table.publish_deployment(spec);
        Ok(())
    }

    fn remove(&self, instance: &InstanceName) -> Result<(), PublishError> {
        self.table.remove_deployment(instance.as_str());
        Ok(())
    }

    fn active_connections(&self, instance: &InstanceName, zone: &Zone, node: &str) -> Option<u64> {
        let snapshot = self.table.load();
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
    use super::*;
    use crate::domain::sim::running_deployment;

    #[test]
    fn health_table_sees_draining_at_once() {
        let table = Arc::new(HealthTable::new());
        let publisher = HealthTablePublisher::new(table.clone());
        let mut dep = running_deployment();
        publisher.publish(deployment_spec(&dep)).unwrap();
        dep.nodes[1].state = NodeRunState::Draining;
        publisher.publish(deployment_spec(&dep)).unwrap();
        let snap = table.load();
        let found = snap.find("alpha", "us-east1").unwrap();
        assert_eq!(found.count(NodeState::Ready), 1);
        assert_eq!(found.count(NodeState::Draining), 1);
        assert_eq!(
            publisher.active_connections(&dep.instance, &dep.zone, "alpha-1"),
            Some(0)
        );
        publisher.remove(&dep.instance).unwrap();
        assert!(table.load().find("alpha", "us-east1").is_none());
    }
}
