//! When a node's own series leave the metrics: once the node has left the table and its last
//! connection has ended.
//!
//! `kanmon_websocket_connections` and `kanmon_upstream_connect_failures_total` are labelled by
//! node, and in Kubernetes every rollout brings new pod names: kept forever, they would grow
//! the scrape with every deploy. A departed node's connect-failure counter goes at once (no
//! connection can add to it); its WebSocket gauge stays while it still counts open tunnels
//! (existing connections outlive a node's removal) and goes when the last one closes.
//!
//! Two sides decide, and either may see the other first: the publisher (after a table swap,
//! for each departed node whose gauge is 0) and the tunnel (after its `dec`, if its node is no
//! longer in the table). Each acts after its own change is visible, so one of them always sees
//! both and removes the series; removing twice is harmless.

use std::collections::HashSet;

use kanmon_router::{Deployment, HealthTable, Snapshot};
use prometheus::IntGauge;

use crate::metrics::Metrics;

/// Removes the series of nodes that were in `before` but are not in `after`, for the
/// deployment `only` or (with `None`) the whole table.
pub fn prune_departed(metrics: &Metrics, before: &Snapshot, after: &Snapshot, only: Option<&str>) {
    let departed = |old: &Deployment| {
        let now = after.find(old.instance().as_str(), old.zone().as_str());
        let still: HashSet<&str> = now
            .map(|d| d.nodes().iter().map(|n| n.id()).collect())
            .unwrap_or_default();
        for node in old.nodes().iter().filter(|n| !still.contains(n.id())) {
            let labels = [old.instance().as_str(), old.zone().as_str(), node.id()];
            // An absent series (the node never failed a connect) is nothing to remove.
            let _absent = metrics.upstream_failures.remove_label_values(&labels);
            remove_idle_gauge(metrics, &labels);
        }
    };
    match only {
        Some(instance) => before
            .by_instance(instance)
            .into_iter()
            .for_each(|d| departed(d)),
        None => before.deployments().for_each(|d| departed(d)),
    }
}

/// After a tunnel of `node` has closed (its `gauge` already decremented): removes the node's
/// WebSocket series if that was its last connection and the node has left the table.
pub fn websocket_closed(
    metrics: &Metrics,
    table: &HealthTable,
    dep: &Deployment,
    node: &str,
    gauge: &IntGauge,
) {
    if gauge.get() != 0 {
        return;
    }
    let snapshot = table.load();
    let present = snapshot
        .find(dep.instance().as_str(), dep.zone().as_str())
        .is_some_and(|d| d.nodes().iter().any(|n| n.id() == node));
    if !present {
        remove_idle_gauge(
            metrics,
            &[dep.instance().as_str(), dep.zone().as_str(), node],
        );
    }
}

fn remove_idle_gauge(metrics: &Metrics, labels: &[&str; 3]) {
    let idle = metrics
        .websockets
        .get_metric_with_label_values(labels)
        .is_ok_and(|g| g.get() == 0);
    if idle {
        let _absent = metrics.websockets.remove_label_values(labels);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kanmon_router::{DeploymentSpec, InstanceName, NodeSpec, NodeState, Zone};

    use super::*;
    use crate::discovery::Publisher;

    fn spec(nodes: &[&str]) -> DeploymentSpec {
        DeploymentSpec {
            instance: InstanceName::parse("alpha").unwrap(),
            zone: Zone::parse("us-east1").unwrap(),
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, id)| NodeSpec {
                    id: (*id).to_string(),
                    addr: format!("127.0.0.1:{}", 7350 + i).parse().unwrap(),
                    grpc: None,
                    console: None,
                    state: NodeState::Ready,
                })
                .collect(),
            fallback_to_draining: false,
            max_connections: None,
            console_allow: Vec::new(),
        }
    }

    fn series(metrics: &Metrics, name: &str, node: &str) -> bool {
        let text = String::from_utf8(metrics.render()).unwrap();
        let line = format!(r#"{name}{{deployment="alpha",node="{node}",zone="us-east1"}}"#);
        text.lines().any(|l| l.starts_with(&line))
    }

    #[test]
    fn a_departed_node_leaves_the_metrics_after_its_last_connection() {
        let metrics = Metrics::new().unwrap();
        let table = Arc::new(HealthTable::new());
        let publisher = Publisher::new(Arc::clone(&table), metrics.clone());
        publisher.publish_deployment("file", spec(&["alpha-0", "alpha-1", "alpha-2"]));
        let labels = |node| ["alpha", "us-east1", node];
        for node in ["alpha-0", "alpha-1", "alpha-2"] {
            metrics
                .upstream_failures
                .with_label_values(&labels(node))
                .inc();
        }
        // alpha-1 has an open WebSocket; alpha-2 had one that closed.
        let open = metrics.websockets.with_label_values(&labels("alpha-1"));
        open.inc();
        metrics.websockets.with_label_values(&labels("alpha-2"));

        // alpha-1 and alpha-2 leave (a rollout): their failure counters go at once, the idle
        // gauge too; the gauge still counting a tunnel stays.
        publisher.publish_deployment("file", spec(&["alpha-0"]));
        let ws = crate::metrics::names::WEBSOCKET_CONNECTIONS;
        let failures = crate::metrics::names::UPSTREAM_CONNECT_FAILURES;
        assert!(series(&metrics, failures, "alpha-0"));
        assert!(!series(&metrics, failures, "alpha-1"));
        assert!(!series(&metrics, failures, "alpha-2"));
        assert!(!series(&metrics, ws, "alpha-2"));
        assert!(
            series(&metrics, ws, "alpha-1"),
            "an open tunnel's gauge was removed"
        );

        // Its last tunnel closes: now it goes.
        open.dec();
        let dep = Arc::clone(table.load().by_instance("alpha").unwrap());
        websocket_closed(&metrics, &table, &dep, "alpha-1", &open);
        assert!(!series(&metrics, ws, "alpha-1"));

        // A tunnel of a node still in the table keeps its series at 0.
        let kept = metrics.websockets.with_label_values(&labels("alpha-0"));
        kept.inc();
        kept.dec();
        websocket_closed(&metrics, &table, &dep, "alpha-0", &kept);
        assert!(series(&metrics, ws, "alpha-0"));

        // Removing the deployment, or a whole-table publish without it, removes the rest.
        publisher.publish_all("file", vec![]);
        assert!(!series(&metrics, failures, "alpha-0"));
        assert!(!series(&metrics, ws, "alpha-0"));
    }
}
