//! Discovery: where the node health table comes from.
//!
//! A source (file, Kubernetes, the in-process control plane) only produces deployment specs;
//! the [`Publisher`] puts them into the table and keeps the metrics and readiness in step, so
//! every source behaves the same way towards operators.

pub mod file;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use kanmon_router::{DeploymentSpec, HealthTable, NodeState};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// A discovery source: runs until `shutdown` turns true, publishing through `publisher`.
#[async_trait::async_trait]
pub trait DiscoverySource: Send + Sync + 'static {
    /// Label value for the `source` metric label (`file`, `kubernetes`).
    fn name(&self) -> &'static str;
    /// Runs the source. It must never empty the table because of its own failure: on error
    /// it reports through [`Publisher::error`] and keeps the last good table.
    async fn run(&self, publisher: Publisher, shutdown: watch::Receiver<bool>);
}

/// Publishes discovery results into the table, the metrics and readiness.
#[derive(Clone)]
pub struct Publisher {
    table: Arc<HealthTable>,
    metrics: Metrics,
    loaded: Arc<AtomicBool>,
}

impl Publisher {
    /// A publisher into `table`.
    pub fn new(table: Arc<HealthTable>, metrics: Metrics) -> Self {
        Self {
            table,
            metrics,
            loaded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a first table was published (part of `/readyz`).
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The table this publisher writes.
    pub fn table(&self) -> &Arc<HealthTable> {
        &self.table
    }

    /// Replaces the whole table.
    pub fn publish_all(&self, source: &'static str, specs: Vec<DeploymentSpec>) -> u64 {
        let deployments = specs.len();
        let generation = self.table.publish_all(specs);
        self.after_publish(source, generation);
        tracing::info!(source, generation, deployments, "node table published");
        generation
    }

    /// Replaces one deployment.
    pub fn publish_deployment(&self, source: &'static str, spec: DeploymentSpec) -> u64 {
        let instance = spec.instance.to_string();
        let generation = self.table.publish_deployment(spec);
        self.after_publish(source, generation);
        tracing::debug!(source, generation, instance, "deployment published");
        generation
    }

    /// Removes one deployment.
    pub fn remove_deployment(&self, source: &'static str, instance: &str) -> u64 {
        let generation = self.table.remove_deployment(instance);
        self.after_publish(source, generation);
        generation
    }

    /// Reports a failure; the table is left as it is.
    pub fn error(&self, source: &'static str, error: &dyn std::fmt::Display) {
        self.metrics
            .discovery_errors
            .with_label_values(&[source])
            .inc();
        tracing::warn!(source, error = %error, "discovery failed; keeping the last good node table");
    }

    fn after_publish(&self, source: &'static str, generation: u64) {
        self.loaded.store(true, Ordering::Release);
        self.metrics
            .discovery_updates
            .with_label_values(&[source])
            .inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.metrics
            .discovery_last_success
            .with_label_values(&[source])
            .set(now as i64);
        self.metrics.generation.set(generation as i64);
        self.refresh_node_gauges();
    }

    /// Rebuilds `kanmon_nodes` from the table in force.
    fn refresh_node_gauges(&self) {
        let snapshot = self.table.load_full();
        self.metrics.nodes.reset();
        for dep in snapshot.deployments() {
            for state in NodeState::ALL {
                self.metrics
                    .nodes
                    .with_label_values(&[
                        dep.instance().as_str(),
                        dep.zone().as_str(),
                        state.as_str(),
                    ])
                    .set(dep.count(state) as i64);
            }
        }
    }
}
