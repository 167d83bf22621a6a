//! Publishing node states into the embedded proxy (`kanmon up`).

use std::sync::Arc;

use kanmon_proxy::discovery::Publisher;
use kanmon_router::{DeploymentSpec, InstanceName, Zone};

use super::postgres::Databases;
use crate::driver::{NodeStatePublisher, PublishError};

/// Discovery source label of the in-process control plane in the proxy's metrics.
pub const SOURCE: &str = "inprocess";

/// Publishes through the embedded proxy's [`Publisher`]: the table swap is immediate (a
/// draining mark reaches the router before the next connection) and the proxy's
/// `kanmon_nodes` metric and `/readyz` follow.
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

/// Forwards to another publisher and, when a deployment is removed (deleted), stops its
/// database and removes its data.
pub(super) struct DatabaseCleanup {
    pub(super) inner: Arc<dyn NodeStatePublisher>,
    pub(super) databases: Arc<Databases>,
}

impl NodeStatePublisher for DatabaseCleanup {
    fn publish(&self, spec: DeploymentSpec) -> Result<(), PublishError> {
        self.inner.publish(spec)
    }

    fn remove(&self, instance: &InstanceName) -> Result<(), PublishError> {
        let result = self.inner.remove(instance);
        let (dbs, name) = (self.databases.clone(), instance.to_string());
        // Stopping the server blocks (up to its shutdown timeout); the caller holds the
        // runtime's lock.
        std::thread::spawn(move || {
            if let Err(e) = dbs.destroy(&name) {
                tracing::error!(instance = name, error = %e, "removing database failed");
            }
        });
        result
    }

    fn active_connections(&self, instance: &InstanceName, zone: &Zone, node: &str) -> Option<u64> {
        self.inner.active_connections(instance, zone, node)
    }
}
