//! The `kanmon up` driver: local processes, each deployment with its own database.

use std::sync::Arc;

use async_trait::async_trait;

use super::postgres::Databases;
use crate::{
    domain::NodeLaunch,
    driver::{DriverError, Endpoints, LocalDriver, NodeHealth, Processes},
};

/// A [`LocalDriver`] whose nodes get their deployment's database as `DATABASE_URL`; the
/// database is created and started before the deployment's first node, and resized to the
/// node's `db_cpus` tier before a node of a scaled deployment starts.
#[derive(Debug)]
pub struct DatabaseDriver {
    local: Arc<LocalDriver>,
    databases: Option<Arc<Databases>>,
}

impl DatabaseDriver {
    /// Nodes from `local`, databases from `databases` (none: nodes get no `DATABASE_URL`).
    pub fn new(local: Arc<LocalDriver>, databases: Option<Arc<Databases>>) -> Self {
        Self { local, databases }
    }
}

#[async_trait]
impl Processes for DatabaseDriver {
    async fn start_node(
        &self,
        instance: &str,
        spec: &NodeLaunch,
    ) -> Result<Endpoints, DriverError> {
        if self.local.is_closed() {
            // Shutting down: start neither the database nor the node.
            std::future::pending::<()>().await;
        }
        if let Some(dbs) = &self.databases {
            let (dbs, name, db_cpus) = (dbs.clone(), instance.to_string(), spec.db_cpus);
            let url = tokio::task::spawn_blocking(move || dbs.ensure(&name, db_cpus))
                .await
                .map_err(|e| DriverError::Other(format!("database task: {e}")))?
                .map_err(|e| DriverError::Other(format!("database of {instance}: {e}")))?;
            self.local
                .set_instance_env(instance, vec![("DATABASE_URL".to_string(), url)]);
        }
        self.local.start_node(instance, spec).await
    }

    async fn stop_node(&self, instance: &str, node: &str) -> Result<(), DriverError> {
        self.local.stop_node(instance, node).await
    }

    async fn health(&self, instance: &str, node: &str) -> NodeHealth {
        self.local.health(instance, node).await
    }

    async fn exit_code(&self, instance: &str, node: &str) -> Option<i32> {
        self.local.exit_code(instance, node).await
    }
}
