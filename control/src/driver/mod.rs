//! Carrying intents out: drivers run nodes, publishers tell the proxy about node states.
//!
//! Both are small traits in the pingora-load-balancing style, so the runtime does not care
//! whether nodes are tasks in this process, local processes or Kubernetes pods, nor whether the
//! proxy is in-process (`kanmon up`) or reads a nodes file.
//!
//! A [`Driver`] declares and observes: it is handed a deployment's [`DesiredState`] (the
//! whole deployment, every time the domain changes it) and streams [`Observation`]s back.
//! Drivers of processes (local children, in-process listeners) implement the imperative
//! [`Processes`] and get the declarative side from [`ProcessDriver`]; a cluster driver
//! implements [`Driver`] itself (apply objects, watch pods).

pub mod build;
pub mod build_local;
pub mod cpu_limit;
mod desired;
mod file;
pub(crate) mod lifeline;
mod local;
pub mod log_file;
pub mod log_query;
mod loopback;
pub mod node_log;
mod processes;
mod publish;

use std::net::SocketAddr;

use async_trait::async_trait;

pub use cpu_limit::CpuLimitMode;
pub use desired::{DesiredNode, DesiredState, NodePhase, Observation, Observer, Probe};
pub use file::NodesFilePublisher;
pub use local::{LocalDriver, LocalDriverConfig, CONFIG_ENV};
pub use loopback::{serve_ok, LoopbackDriver, CRASH_IMAGE};
pub use node_log::LOG_LINE_LIMIT;
pub use processes::ProcessDriver;
pub use publish::{deployment_spec, NullPublisher, ProxyPublisher, SOURCE};

use crate::domain::NodeLaunch;

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node could not be started (binding, spawning, scheduling).
    #[error("starting node {node}: {source}")]
    Start {
        /// Node id.
        node: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Anything else the driver wants to report.
    #[error("{0}")]
    Other(String),
}

/// Where a started node listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// HTTP/WebSocket address.
    pub addr: SocketAddr,
    /// gRPC address, if the node serves gRPC.
    pub grpc: Option<SocketAddr>,
    /// Console address (Nakama's 7351), if the node serves its console.
    pub console: Option<SocketAddr>,
}

/// What a health check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeHealth {
    /// Passes its health check.
    Healthy,
    /// Running but not (yet) passing.
    NotYet,
    /// The process is gone.
    Exited,
}

/// Runs a deployment's nodes the way the domain wants them.
///
/// The runtime calls [`Driver::apply`] for one deployment at a time and in order, with the
/// whole desired state after every change (never a diff: a driver compares it with what exists
/// and converges, as a controller does), and retries a failed apply with the latest state.
/// What happens to nodes, when it happens, goes to `observer`: [`Observation::Started`] when a
/// node of a `Run` incarnation exists, `Ready` when it passes its probe, `Exited` when it is
/// gone (asked by `Gone`, failed to start, crashed), each once per incarnation. After a
/// control-plane restart the same incarnations are applied again: a driver adopts a node that
/// still runs with the same incarnation and reports it started and ready again.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Makes `desired.instance`'s nodes converge to `desired`. Returns once the change is
    /// handed to the platform, not once nodes are there (that is what observations say).
    async fn apply(&self, desired: &DesiredState, observer: &Observer) -> Result<(), DriverError>;

    /// Whether stopping a node (`Gone`) is itself the drain, so a rolling step stops a node
    /// at once instead of waiting the grace with it marked draining first. True where the
    /// platform drains: a deleted pod's endpoint turns `serving && terminating` (the edge's
    /// draining) and the pod keeps its connections through its preStop pause and termination
    /// grace. False (the default) where the control plane tells the edge itself and must
    /// give the node its grace before stopping it (local processes).
    fn drains_on_stop(&self) -> bool {
        false
    }
}

/// Imperative control of one node, for drivers whose nodes are processes the control plane
/// starts itself; [`ProcessDriver`] orders these calls (one node's calls arrive in order).
#[async_trait]
pub trait Processes: Send + Sync + 'static {
    /// Starts a node and returns where it listens once it exists (healthy or not). Starting
    /// a node id that is already running with the same incarnation adopts it: the runtime
    /// re-sends starts after a control-plane restart.
    async fn start_node(&self, instance: &str, spec: &NodeLaunch)
        -> Result<Endpoints, DriverError>;

    /// Stops a node and returns once it is gone (after the driver's own shutdown grace).
    /// Stopping a node that is not running succeeds.
    async fn stop_node(&self, instance: &str, node: &str) -> Result<(), DriverError>;

    /// One health check.
    async fn health(&self, instance: &str, node: &str) -> NodeHealth;

    /// The exit code of a node that exited by itself, when known.
    async fn exit_code(&self, _instance: &str, _node: &str) -> Option<i32> {
        None
    }
}

/// Why publishing to the proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Writing the nodes file failed.
    #[error("writing nodes file {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Encoding the nodes file failed.
    #[error("encoding nodes file: {0}")]
    Encode(String),
}

/// Tells the proxy which nodes of a deployment are ready, draining or unhealthy. Called
/// synchronously the moment a node is marked draining, because the proxy must stop sending it
/// new connections before the node starts shutting down.
pub trait NodeStatePublisher: Send + Sync + 'static {
    /// Publishes the whole node list of one deployment.
    fn publish(&self, spec: kanmon_router::DeploymentSpec) -> Result<(), PublishError>;

    /// Removes a deleted deployment.
    fn remove(&self, instance: &kanmon_router::InstanceName) -> Result<(), PublishError>;

    /// Connections the proxy holds open to `node`, when it knows (in-process proxy). `None`
    /// means unknown: the runtime then waits for the grace period.
    fn active_connections(
        &self,
        _instance: &kanmon_router::InstanceName,
        _zone: &kanmon_router::Zone,
        _node: &str,
    ) -> Option<u64> {
        None
    }
}

/// An environment-variable name for a config or variable key: upper-case, non-alphanumerics as
/// `_`. One rule for every driver, so a node sees the same names locally and on Kubernetes.
pub(crate) fn env_name(prefix: &str, key: &str) -> String {
    let k: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{k}")
}

/// The entry of a node's config file that lists (comma-separated) which of its entries hold
/// secrets, so the node can report what it received without showing them.
pub const SECRET_KEYS_ENTRY: &str = "KANMON_SECRET_KEYS";

/// The config entries every driver gives a node in its `KANMON_NODE_CONFIG` file (both
/// drivers' one rule): each config key (the deployment's keys as `socket.server_key` and
/// `runtime.http_key` included) as `KANMON_CONFIG_<KEY>`, plus [`SECRET_KEYS_ENTRY`].
/// The driver adds `DATABASE_URL`.
pub(crate) fn node_config_entries(
    launch: &crate::domain::NodeLaunch,
) -> std::collections::BTreeMap<String, String> {
    let mut entries: std::collections::BTreeMap<String, String> = launch
        .config
        .iter()
        .map(|(k, v)| (env_name("KANMON_CONFIG_", k), v.clone()))
        .collect();
    let secret: Vec<String> = launch
        .secret_keys
        .iter()
        .map(|k| env_name("KANMON_CONFIG_", k))
        .collect();
    entries.insert(SECRET_KEYS_ENTRY.into(), secret.join(","));
    entries
}
