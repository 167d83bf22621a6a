//! Every metric the control plane exports, in one place (the proxy's `metrics.rs` is the
//! model).
//!
//! One [`ControlMetrics`] per [`crate::runtime::Runtime`], in a registry of its own, so tests
//! read a counter and two control planes in one process (`kanmon up` embeds the proxy, which
//! has its own registry) never collide. Label values come only from bounded sets: operation
//! kinds and outcomes, deployments and nodes the control plane created, axum route templates
//! and status codes. Gauges of the current state (queue depth, nodes by state, node CPU and
//! memory, database load) are set at scrape time from a snapshot, so a deleted deployment, a
//! stopped node or a query that left a database's top list leaves the output with nothing to
//! forget.

pub mod certs;
pub mod database;
pub mod procfs;
mod serve;

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use database::DatabaseSample;
pub use serve::{count_requests, router, serve, DatabaseSource, MetricsSources};

use crate::domain::{Deployment, NodeRunState, OpStatus, Operation};

/// Metric names: the contract the dashboards and alerts rely on.
pub mod names {
    /// Finished operations by kind and outcome.
    pub const OPERATIONS: &str = "kanmon_control_operations_total";
    /// Time from queueing to the end of an operation, by kind.
    pub const OPERATION_DURATION: &str = "kanmon_control_operation_duration_seconds";
    /// Operations waiting behind the running one, by deployment.
    pub const QUEUE_DEPTH: &str = "kanmon_control_queue_depth";
    /// Nodes by recorded state, by deployment.
    pub const NODES: &str = "kanmon_control_nodes";
    /// Times a node entered CrashLoopBackOff, by deployment.
    pub const CRASHLOOP_RESTARTS: &str = "kanmon_control_crashloop_restarts_total";
    /// Notification delivery tries by `channel` (webhook, email) and `outcome` (delivered,
    /// retrying, failed).
    pub const NOTIFICATIONS: &str = "kanmon_control_notification_attempts_total";
    /// API requests by route template and status.
    pub const API_REQUESTS: &str = "kanmon_control_api_requests_total";
    /// Refused authentications (the counter of `api::refusals`).
    pub const AUTH_FAILURES: &str = crate::api::refusals::AUTH_FAILURES_TOTAL;
    /// CPU time (user + system) of a node process under the local driver.
    pub const NODE_CPU: &str = "kanmon_node_cpu_seconds_total";
    /// Resident memory of a node process under the local driver.
    pub const NODE_MEMORY: &str = "kanmon_node_memory_bytes";
    /// How node CPU limits are enforced under the local driver: 1 for the mode in use.
    pub const NODE_CPU_LIMIT_MODE: &str = "kanmon_node_cpu_limit_mode";
    /// CPU time of a deployment's PostgreSQL server processes (postmaster and children).
    pub const DATABASE_CPU: &str = "kanmon_database_cpu_seconds_total";
    /// Statements a deployment's database executed (`pg_stat_statements` calls).
    pub const DATABASE_CALLS: &str = "kanmon_database_calls_total";
    /// Execution time of those statements.
    pub const DATABASE_QUERY_SECONDS: &str = "kanmon_database_query_seconds_total";
    /// Calls of one of a deployment's top queries, by `queryid` and normalised text.
    pub const DATABASE_TOP_QUERY_CALLS: &str = "kanmon_database_top_query_calls_total";
    /// Execution time of one of a deployment's top queries.
    pub const DATABASE_TOP_QUERY_SECONDS: &str = "kanmon_database_top_query_seconds_total";
}

/// Every operation kind (the `kind` label), so its counters exist at 0 from start.
pub const OP_KINDS: [&str; 9] = [
    "deploy",
    "reboot",
    "scale",
    "set-vars",
    "set-config",
    "rotate-key",
    "export",
    "certificate",
    "delete",
];

/// Node states as labelled (the `state` label), all set for every deployment.
const NODE_STATES: [(NodeRunState, &str); 5] = [
    (NodeRunState::Starting, "starting"),
    (NodeRunState::Ready, "ready"),
    (NodeRunState::Draining, "draining"),
    (NodeRunState::Stopped, "stopped"),
    (NodeRunState::CrashLoopBackOff, "crash_loop_back_off"),
];

/// The route label of a request axum matched to no route (a 404 or 405 of a path a client
/// made up must not become a series of its own).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// One node process as sampled from `/proc`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSample {
    /// Deployment (instance name).
    pub deployment: String,
    /// Node id.
    pub node: String,
    /// CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub memory_bytes: u64,
}

/// The control plane's metric handles.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    registry: Registry,
    operations: IntCounterVec,
    operation_duration: HistogramVec,
    queue_depth: IntGaugeVec,
    nodes: IntGaugeVec,
    crashloop_restarts: IntCounterVec,
    notifications: IntCounterVec,
    api_requests: IntCounterVec,
    auth_failures: IntCounter,
    node_cpu: CounterVec,
    node_memory: IntGaugeVec,
    cpu_limit_mode: IntGaugeVec,
    database_cpu: CounterVec,
    database_calls: CounterVec,
    database_query_seconds: CounterVec,
    top_query_calls: CounterVec,
    top_query_seconds: CounterVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl ControlMetrics {
    /// Fresh handles in a registry of their own.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = Self {
            operations: IntCounterVec::new(
                opts(names::OPERATIONS, "Finished operations by kind and outcome (completed, failed)."),
                &["kind", "outcome"],
            )?,
            operation_duration: HistogramVec::new(
                HistogramOpts::new(
                    names::OPERATION_DURATION,
                    "Seconds from queueing to the end of an operation (rolling operations wait for drains and health).",
                )
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0]),
                &["kind"],
            )?,
            queue_depth: IntGaugeVec::new(
                opts(names::QUEUE_DEPTH, "Operations queued behind the running one, by deployment."),
                &["deployment"],
            )?,
            nodes: IntGaugeVec::new(
                opts(names::NODES, "Nodes by the state the control plane recorded, by deployment."),
                &["deployment", "state"],
            )?,
            notifications: IntCounterVec::new(
                opts(
                    names::NOTIFICATIONS,
                    "Notification delivery tries by channel and outcome (delivered, retrying, failed).",
                ),
                &["channel", "outcome"],
            )?,
            crashloop_restarts: IntCounterVec::new(
                opts(names::CRASHLOOP_RESTARTS, "Times a node entered CrashLoopBackOff (it will be restarted after a delay), by deployment."),
                &["deployment"],
            )?,
            api_requests: IntCounterVec::new(
                opts(names::API_REQUESTS, "API requests by route template and status code."),
                &["route", "status"],
            )?,
            auth_failures: IntCounter::with_opts(opts(
                names::AUTH_FAILURES,
                "API requests refused before authentication (missing, malformed or rejected token).",
            ))?,
            node_cpu: CounterVec::new(
                opts(names::NODE_CPU, "CPU seconds (user + system) of a node process under the local driver."),
                &["deployment", "node"],
            )?,
            node_memory: IntGaugeVec::new(
                opts(names::NODE_MEMORY, "Resident memory of a node process under the local driver."),
                &["deployment", "node"],
            )?,
            cpu_limit_mode: IntGaugeVec::new(
                opts(names::NODE_CPU_LIMIT_MODE, "1 for the way node CPU limits are enforced under the local driver (cgroup_v2, cgroup_v1, or none: no writable cgroup, nodes run unlimited)."),
                &["mode"],
            )?,
            database_cpu: CounterVec::new(
                opts(names::DATABASE_CPU, "CPU seconds (user + system) of a deployment's PostgreSQL server processes under kanmon up."),
                &["deployment"],
            )?,
            database_calls: CounterVec::new(
                opts(names::DATABASE_CALLS, "Statements a deployment's database executed (pg_stat_statements), since the control plane started."),
                &["deployment"],
            )?,
            database_query_seconds: CounterVec::new(
                opts(names::DATABASE_QUERY_SECONDS, "Execution time of the statements a deployment's database executed (pg_stat_statements)."),
                &["deployment"],
            )?,
            top_query_calls: CounterVec::new(
                opts(names::DATABASE_TOP_QUERY_CALLS, "Calls of a deployment's most expensive queries (top N by total time; normalised text, never a literal value)."),
                &["deployment", "queryid", "query"],
            )?,
            top_query_seconds: CounterVec::new(
                opts(names::DATABASE_TOP_QUERY_SECONDS, "Total execution time of a deployment's most expensive queries (top N by total time)."),
                &["deployment", "queryid", "query"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.operations.clone()))?;
        m.registry
            .register(Box::new(m.operation_duration.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry.register(Box::new(m.nodes.clone()))?;
        m.registry
            .register(Box::new(m.crashloop_restarts.clone()))?;
        m.registry.register(Box::new(m.api_requests.clone()))?;
        m.registry.register(Box::new(m.notifications.clone()))?;
        m.registry.register(Box::new(m.auth_failures.clone()))?;
        m.registry.register(Box::new(m.node_cpu.clone()))?;
        m.registry.register(Box::new(m.node_memory.clone()))?;
        m.registry.register(Box::new(m.cpu_limit_mode.clone()))?;
        for c in [
            &m.database_cpu,
            &m.database_calls,
            &m.database_query_seconds,
            &m.top_query_calls,
            &m.top_query_seconds,
        ] {
            m.registry.register(Box::new(c.clone()))?;
        }
        for kind in OP_KINDS {
            for outcome in [OpStatus::Completed, OpStatus::Failed] {
                m.operations.with_label_values(&[kind, outcome.as_str()]);
            }
        }
        Ok(m)
    }

    /// Counts an operation that reached a final status (others are ignored).
    pub fn operation_finished(&self, op: &Operation) {
        if !op.status.is_final() {
            return;
        }
        let kind = op.kind.name();
        self.operations
            .with_label_values(&[kind, op.status.as_str()])
            .inc();
        if let Some(end) = op.finished_at {
            let secs = end.0.saturating_sub(op.requested_at.0) as f64 / 1000.0;
            self.operation_duration
                .with_label_values(&[kind])
                .observe(secs);
        }
    }

    /// Counts one notification delivery try over `channel` (`webhook` or `email`).
    pub fn notification_sent(&self, channel: &'static str, delivered: bool, retrying: bool) {
        let outcome = match (delivered, retrying) {
            (true, _) => "delivered",
            (false, true) => "retrying",
            (false, false) => "failed",
        };
        self.notifications
            .with_label_values(&[channel, outcome])
            .inc();
    }

    /// Counts `n` nodes of `deployment` entering CrashLoopBackOff.
    pub fn crashloop_entered(&self, deployment: &str, n: u64) {
        self.crashloop_restarts
            .with_label_values(&[deployment])
            .inc_by(n);
    }

    /// Counts one API request; `route` is the matched template or [`UNMATCHED_ROUTE`].
    pub fn api_request(&self, route: &str, status: u16) {
        self.api_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
    }

    /// The value of an API request counter (for tests and checks).
    pub fn api_requests(&self, route: &str, status: u16) -> u64 {
        self.api_requests
            .with_label_values(&[route, &status.to_string()])
            .get()
    }

    /// Times nodes of `deployment` entered CrashLoopBackOff.
    pub fn crashloop_restarts(&self, deployment: &str) -> u64 {
        self.crashloop_restarts
            .with_label_values(&[deployment])
            .get()
    }

    /// The value of an operations counter.
    pub fn operations(&self, kind: &str, outcome: &str) -> u64 {
        self.operations.with_label_values(&[kind, outcome]).get()
    }

    /// Sets the state gauges from `deployments` (a snapshot with each one's queue depth):
    /// deleted deployments, and the series of ones no longer listed, leave.
    pub fn observe_deployments<'a>(
        &self,
        deployments: impl IntoIterator<Item = (&'a Deployment, usize)>,
    ) {
        self.queue_depth.reset();
        self.nodes.reset();
        for (dep, queued) in deployments {
            let name = dep.instance.as_str();
            if dep.deleted {
                // Counters keyed by deployment leave with it (an error: it had none yet).
                if self
                    .crashloop_restarts
                    .remove_label_values(&[name])
                    .is_err()
                {
                    tracing::trace!(deployment = name, "no crash-loop series to remove");
                }
                continue;
            }
            self.queue_depth
                .with_label_values(&[name])
                .set(queued as i64);
            for (state, label) in NODE_STATES {
                let n = dep.nodes.iter().filter(|n| n.state == state).count();
                self.nodes.with_label_values(&[name, label]).set(n as i64);
            }
        }
    }

    /// Sets the CPU limit mode series: 1 for `mode`, 0 for the others.
    pub fn observe_cpu_limit_mode(&self, mode: crate::driver::CpuLimitMode) {
        for m in crate::driver::CpuLimitMode::ALL {
            self.cpu_limit_mode
                .with_label_values(&[m.as_str()])
                .set(i64::from(m == mode));
        }
    }

    /// Sets the node process series from `samples`: a node not sampled (stopped) leaves.
    pub fn observe_processes(&self, samples: &[NodeSample]) {
        self.node_cpu.reset();
        self.node_memory.reset();
        for s in samples {
            let labels = [s.deployment.as_str(), s.node.as_str()];
            self.node_cpu
                .with_label_values(&labels)
                .inc_by(s.cpu_seconds);
            self.node_memory
                .with_label_values(&labels)
                .set(i64::try_from(s.memory_bytes).unwrap_or(i64::MAX));
        }
    }

    /// Sets the database series from `samples`: a deployment not sampled (its database
    /// stopped) and a query no longer in its top list leave.
    pub fn observe_databases(&self, samples: &[DatabaseSample]) {
        for c in [
            &self.database_cpu,
            &self.database_calls,
            &self.database_query_seconds,
            &self.top_query_calls,
            &self.top_query_seconds,
        ] {
            c.reset();
        }
        for s in samples {
            let dep = [s.deployment.as_str()];
            if let Some(cpu) = s.cpu_seconds {
                self.database_cpu.with_label_values(&dep).inc_by(cpu);
            }
            self.database_calls
                .with_label_values(&dep)
                .inc_by(s.calls as f64);
            self.database_query_seconds
                .with_label_values(&dep)
                .inc_by(s.query_seconds);
            for q in &s.top {
                let labels = [s.deployment.as_str(), q.queryid.as_str(), q.query.as_str()];
                self.top_query_calls
                    .with_label_values(&labels)
                    .inc_by(q.calls as f64);
                self.top_query_seconds
                    .with_label_values(&labels)
                    .inc_by(q.seconds);
            }
        }
    }

    /// Brings the refused-authentications counter up to `total` (the API's own count, which
    /// only grows).
    pub fn observe_auth_failures(&self, total: u64) {
        let seen = self.auth_failures.get();
        if total > seen {
            self.auth_failures.inc_by(total - seen);
        }
    }

    /// The Prometheus text format of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding control-plane metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(node: &str) -> NodeSample {
        NodeSample {
            deployment: "alpha".into(),
            node: node.into(),
            cpu_seconds: 1.5,
            memory_bytes: 4096,
        }
    }

    #[test]
    fn a_node_not_sampled_any_more_leaves() {
        let m = ControlMetrics::new().unwrap();
        m.observe_processes(&[sample("alpha-0"), sample("alpha-1")]);
        let both = m.render();
        assert!(both
            .contains(r#"kanmon_node_cpu_seconds_total{deployment="alpha",node="alpha-1"} 1.5"#));
        assert!(
            both.contains(r#"kanmon_node_memory_bytes{deployment="alpha",node="alpha-1"} 4096"#)
        );
        m.observe_processes(&[sample("alpha-0")]);
        let one = m.render();
        assert!(!one.contains("alpha-1"), "{one}");
        assert!(one.contains(r#"node="alpha-0""#));
    }

    fn db(top: &[(&str, &str)]) -> DatabaseSample {
        DatabaseSample {
            deployment: "alpha".into(),
            cpu_seconds: Some(2.5),
            calls: 7,
            query_seconds: 0.5,
            top: top
                .iter()
                .map(|(id, q)| database::TopQuery {
                    queryid: id.to_string(),
                    query: q.to_string(),
                    calls: 3,
                    seconds: 0.25,
                })
                .collect(),
        }
    }

    #[test]
    fn queries_that_leave_the_top_list_leave_the_output() {
        let m = ControlMetrics::new().unwrap();
        m.observe_databases(&[db(&[("11", "SELECT $1"), ("22", "SELECT * FROM t")])]);
        let before = m.render();
        assert!(before.contains(
            r#"kanmon_database_top_query_seconds_total{deployment="alpha",query="SELECT * FROM t",queryid="22"} 0.25"#
        ), "{before}");
        assert!(before.contains(r#"kanmon_database_cpu_seconds_total{deployment="alpha"} 2.5"#));
        assert!(before.contains(r#"kanmon_database_calls_total{deployment="alpha"} 7"#));
        m.observe_databases(&[db(&[("11", "SELECT $1"), ("33", "DELETE FROM t")])]);
        let after = m.render();
        assert!(!after.contains(r#"queryid="22""#), "{after}");
        assert!(after.contains(r#"queryid="33""#), "{after}");
        // The same query's counter is set, not added to.
        assert!(after.contains(r#"kanmon_database_calls_total{deployment="alpha"} 7"#));
        // A database that stopped leaves entirely.
        m.observe_databases(&[]);
        assert!(!m.render().contains(r#"deployment="alpha""#));
    }

    #[test]
    fn auth_failures_follow_the_api_count_without_double_counting() {
        let m = ControlMetrics::new().unwrap();
        m.observe_auth_failures(3);
        m.observe_auth_failures(3);
        m.observe_auth_failures(5);
        assert_eq!(m.auth_failures.get(), 5);
    }

    #[test]
    fn every_kind_and_outcome_exists_at_zero() {
        let text = ControlMetrics::new().unwrap().render();
        for kind in OP_KINDS {
            for outcome in ["completed", "failed"] {
                let series = format!(
                    "kanmon_control_operations_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} 0"
                );
                assert!(text.contains(&series), "{series} missing:\n{text}");
            }
        }
    }
}
