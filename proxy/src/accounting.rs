//! Request accounting, one policy for both HTTP paths (kanmon's HTTP/1.1 lane and pingora's
//! HTTP/2 service): which `deployment`/`zone` a request is counted under, and the counter and
//! histogram it lands in.
//!
//! A request is counted under the deployment its connection's SNI names whenever that name is
//! a deployment in the table, refused or not, so a deployment's 503s during a reboot, its 421s
//! and its 431s show on its own panel and alert. Names that are no deployment count as
//! `deployment="unknown"`: label values come only from the table, never from the client.

use std::sync::Arc;

use kanmon_router::Deployment;
use prometheus::{Histogram, IntCounter};

use crate::{metrics::Metrics, routing::status_label};

/// The label value of requests whose SNI names no deployment.
pub const UNKNOWN: &str = "unknown";

/// The metric handles of a connection's requests. Every request on a connection goes to the
/// deployment its SNI names, and most get the same status, so the labelled lookups (which hash
/// every label under a lock) happen once per connection and status, not per request.
#[derive(Default)]
pub struct RequestAccount {
    deployment: Option<(Option<Arc<Deployment>>, Histogram)>,
    status: Option<(u16, IntCounter)>,
}

/// `(deployment, zone)` label values for `dep`.
pub fn labels(dep: Option<&Deployment>) -> (&str, &str) {
    dep.map_or((UNKNOWN, UNKNOWN), |d| {
        (d.instance().as_str(), d.zone().as_str())
    })
}

fn same(a: Option<&Arc<Deployment>>, b: Option<&Arc<Deployment>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            Arc::ptr_eq(a, b) || (a.instance() == b.instance() && a.zone() == b.zone())
        }
        _ => false,
    }
}

impl RequestAccount {
    /// Counts one request of `dep` (`None`: no deployment) that ended with `status` after
    /// `seconds`.
    pub fn record(
        &mut self,
        metrics: &Metrics,
        dep: Option<&Arc<Deployment>>,
        status: u16,
        seconds: f64,
    ) {
        if self
            .deployment
            .as_ref()
            .is_none_or(|(d, _)| !same(d.as_ref(), dep))
        {
            let (deployment, zone) = labels(dep.map(|d| &**d));
            let histogram = metrics.duration.with_label_values(&[deployment, zone]);
            self.deployment = Some((dep.cloned(), histogram));
            self.status = None;
        }
        if self.status.as_ref().is_none_or(|(s, _)| *s != status) {
            let (deployment, zone) = labels(dep.map(|d| &**d));
            let counter =
                metrics
                    .requests
                    .with_label_values(&[deployment, zone, status_label(status)]);
            self.status = Some((status, counter));
        }
        if let Some((_, counter)) = &self.status {
            counter.inc();
        }
        if let Some((_, histogram)) = &self.deployment {
            histogram.observe(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use kanmon_router::{DeploymentSpec, HealthTable, InstanceName, NodeSpec, NodeState, Zone};

    use super::*;

    fn deployment(instance: &str) -> Arc<Deployment> {
        let table = HealthTable::new();
        table.publish_all(vec![DeploymentSpec {
            instance: InstanceName::parse(instance).unwrap(),
            zone: Zone::parse("us-east1").unwrap(),
            nodes: vec![NodeSpec {
                id: format!("{instance}-0"),
                addr: "127.0.0.1:1".parse().unwrap(),
                grpc: None,
                console: None,
                state: NodeState::Ready,
            }],
            fallback_to_draining: false,
            max_connections: None,
            console_allow: Vec::new(),
        }]);
        let snapshot = table.load_full();
        Arc::clone(snapshot.find(instance, "us-east1").unwrap())
    }

    fn count(metrics: &Metrics, deployment: &str, zone: &str, status: &str) -> u64 {
        metrics
            .requests
            .with_label_values(&[deployment, zone, status])
            .get()
    }

    #[test]
    fn counts_under_the_deployment_or_unknown_and_switches_labels() {
        let metrics = Metrics::new().unwrap();
        let alpha = deployment("alpha");
        let beta = deployment("beta");
        let mut account = RequestAccount::default();
        account.record(&metrics, Some(&alpha), 200, 0.01);
        account.record(&metrics, Some(&alpha), 200, 0.01);
        account.record(&metrics, Some(&alpha), 503, 0.0);
        account.record(&metrics, Some(&beta), 503, 0.0);
        account.record(&metrics, None, 404, 0.0);
        assert_eq!(count(&metrics, "alpha", "us-east1", "200"), 2);
        assert_eq!(count(&metrics, "alpha", "us-east1", "503"), 1);
        assert_eq!(count(&metrics, "beta", "us-east1", "503"), 1);
        assert_eq!(count(&metrics, UNKNOWN, UNKNOWN, "404"), 1);
        let observed = |d: &str, z: &str| {
            metrics
                .duration
                .with_label_values(&[d, z])
                .get_sample_count()
        };
        assert_eq!(observed("alpha", "us-east1"), 3);
        assert_eq!(observed("beta", "us-east1"), 1);
        assert_eq!(observed(UNKNOWN, UNKNOWN), 1);
    }
}
