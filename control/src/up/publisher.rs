//! Publishing for `kanmon up`: a deployment removed from the edge loses its database too.

use std::sync::Arc;

use kanmon_router::{DeploymentSpec, InstanceName, Zone};

use super::postgres::Databases;
use crate::driver::{NodeStatePublisher, PublishError};

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
