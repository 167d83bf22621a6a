//! Discovery: where the node health table comes from.
//!
//! A source (file, Kubernetes, the in-process control plane) only produces deployment specs;
//! the [`Publisher`] puts them into the table and keeps the metrics and readiness in step, so
//! every source behaves the same way towards operators.

pub mod file;
pub mod kubernetes;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use kanmon_router::{DeploymentSpec, HealthTable, NodeState};
use tokio::sync::watch;

use crate::{metrics::Metrics, node_series};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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
    contact: Arc<Mutex<Contact>>,
    /// The zone each instance's `kanmon_nodes` gauges are exported under, so a per-deployment
    /// publish updates three gauges instead of rebuilding them all (O(table) per event).
    gauge_zones: Arc<Mutex<HashMap<String, String>>>,
}

/// Whether a remote source (the Kubernetes API) can be reached, for the "stale" readiness.
#[derive(Debug, Default)]
struct Contact {
    /// How long the source may be out of contact before the table counts as stale.
    stale_after: Option<Duration>,
    /// Since when it has been out of contact.
    lost_since: Option<Instant>,
}

/// The table in force is out of date: the source has not reached its origin for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// How long contact has been lost.
    pub for_: Duration,
    /// The configured limit that was passed.
    pub after: Duration,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "discovery source unreachable for {}s (stale after {}s); serving the last good node table",
            self.for_.as_secs(),
            self.after.as_secs()
        )
    }
}

impl Publisher {
    /// A publisher into `table`.
    pub fn new(table: Arc<HealthTable>, metrics: Metrics) -> Self {
        Self {
            table,
            metrics,
            loaded: Arc::new(AtomicBool::new(false)),
            contact: Arc::default(),
            gauge_zones: Arc::default(),
        }
    }

    fn contact(&self) -> std::sync::MutexGuard<'_, Contact> {
        // The guarded data is two plain fields: a panic elsewhere cannot leave it half-written.
        self.contact.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes readiness report "stale" once the source has been out of contact for longer
    /// than `after` (sources that poll a remote API call this once when they start).
    pub fn set_stale_after(&self, after: Duration) {
        self.contact().stale_after = Some(after);
    }

    /// Reports that the source cannot reach its origin: counted like [`Publisher::error`],
    /// and the start of the outage is remembered for [`Publisher::stale`].
    pub fn unreachable(&self, source: &'static str, error: &dyn std::fmt::Display) {
        self.contact().lost_since.get_or_insert_with(Instant::now);
        self.error(source, error);
    }

    /// Reports that the source is in contact and in step with its origin again, even if
    /// nothing changed (so the last-success gauge moves while the cluster is quiet).
    pub fn in_sync(&self, source: &'static str) {
        let recovered = self.contact().lost_since.take();
        if let Some(since) = recovered {
            tracing::info!(
                source,
                outage_ms = since.elapsed().as_millis() as u64,
                "discovery source reachable again"
            );
        }
        self.metrics
            .discovery_last_success
            .with_label_values(&[source])
            .set(unix_now() as i64);
    }

    /// `Some` when the table is stale: contact lost for longer than the configured limit.
    pub fn stale(&self) -> Option<Stale> {
        let contact = self.contact();
        let after = contact.stale_after?;
        let for_ = contact.lost_since?.elapsed();
        (for_ >= after).then_some(Stale { for_, after })
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
        let before = self.table.load_full();
        let generation = self.table.publish_all(specs);
        self.after_publish(source, generation);
        self.refresh_node_gauges();
        node_series::prune_departed(&self.metrics, &before, &self.table.load(), None);
        tracing::info!(source, generation, deployments, "node table published");
        generation
    }

    /// Replaces one deployment.
    pub fn publish_deployment(&self, source: &'static str, spec: DeploymentSpec) -> u64 {
        let instance = spec.instance.to_string();
        let zone = spec.zone.to_string();
        let before = self.table.load_full();
        let generation = self.table.publish_deployment(spec);
        self.after_publish(source, generation);
        self.update_node_gauges(&instance, Some(&zone));
        let after = self.table.load();
        node_series::prune_departed(&self.metrics, &before, &after, Some(&instance));
        tracing::debug!(source, generation, instance, "deployment published");
        generation
    }

    /// Removes one deployment.
    pub fn remove_deployment(&self, source: &'static str, instance: &str) -> u64 {
        let before = self.table.load_full();
        let generation = self.table.remove_deployment(instance);
        self.after_publish(source, generation);
        self.update_node_gauges(instance, None);
        node_series::prune_departed(&self.metrics, &before, &self.table.load(), Some(instance));
        generation
    }

    /// Creates `source`'s counters at 0 when the source starts, so that `increase()` and
    /// `rate()` see its first update and its first error (Prometheus' guidance: a labelled
    /// series that appears only at its first increment loses that increment).
    pub fn announce(&self, source: &'static str) {
        self.metrics.init_discovery_source(source, &[]);
    }

    /// Reports a failure; the table is left as it is.
    pub fn error(&self, source: &'static str, error: &dyn std::fmt::Display) {
        self.metrics
            .discovery_errors
            .with_label_values(&[source])
            .inc();
        tracing::warn!(source, error = %error, "discovery failed; keeping the last good node table");
    }

    /// Creates the source's counters at zero (with these `reason`s of
    /// `kanmon_discovery_rejected_total`), before anything happens to count.
    pub fn register(&self, source: &'static str, reasons: &[&str]) {
        self.metrics.init_discovery_source(source, reasons);
    }

    /// Reports something the source's policy refused to route: counted and logged at warning
    /// (someone published it; an operator should know it is not being served).
    pub fn rejected(
        &self,
        source: &'static str,
        reason: &'static str,
        object: &dyn std::fmt::Display,
        detail: &str,
    ) {
        self.metrics
            .discovery_checks
            .rejected
            .with_label_values(&[source, reason])
            .inc();
        tracing::warn!(source, reason, object = %object, detail, "discovery refused an object; it is not routed");
    }

    /// Sets whether the cluster lacks a feature routing relies on (see the Kubernetes
    /// source's requirements).
    pub fn conditions_missing(&self, missing: bool) {
        self.metrics
            .discovery_checks
            .conditions_missing
            .set(i64::from(missing));
    }

    fn after_publish(&self, source: &'static str, generation: u64) {
        self.loaded.store(true, Ordering::Release);
        self.metrics
            .discovery_updates
            .with_label_values(&[source])
            .inc();
        self.metrics
            .discovery_last_success
            .with_label_values(&[source])
            .set(unix_now() as i64);
        self.metrics.generation.set(generation as i64);
    }

    fn gauge_zones(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A plain map updated in one step per call: a panic cannot leave it half-written.
        self.gauge_zones.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets `kanmon_nodes` for one instance now in `zone` (`None`: removed).
    fn update_node_gauges(&self, instance: &str, zone: Option<&str>) {
        let mut zones = self.gauge_zones();
        let previous = match zone {
            Some(z) => zones.insert(instance.to_string(), z.to_string()),
            None => zones.remove(instance),
        };
        if let Some(old) = previous.filter(|old| Some(old.as_str()) != zone) {
            for state in NodeState::ALL {
                // Absent series are fine: nothing to remove.
                let _absent = self.metrics.nodes.remove_label_values(&[
                    instance,
                    old.as_str(),
                    state.as_str(),
                ]);
            }
        }
        let Some(zone) = zone else { return };
        let snapshot = self.table.load();
        let Some(dep) = snapshot.find(instance, zone) else {
            return;
        };
        for state in NodeState::ALL {
            self.metrics
                .nodes
                .with_label_values(&[instance, zone, state.as_str()])
                .set(dep.count(state) as i64);
        }
    }

    /// Rebuilds `kanmon_nodes` from the table in force.
    fn refresh_node_gauges(&self) {
        let snapshot = self.table.load_full();
        self.metrics.nodes.reset();
        let mut zones = self.gauge_zones();
        zones.clear();
        for dep in snapshot.deployments() {
            zones.insert(dep.instance().to_string(), dep.zone().to_string());
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
