//! The operator's choices for the Kubernetes driver (the `--driver kubernetes` options).

use std::time::Duration;

/// Container port of the node's HTTP API and WebSocket (Nakama's 7350).
pub const HTTP_PORT: i32 = 7350;
/// Container port of the node's gRPC API (Nakama's 7349, the HTTP port minus one).
pub const GRPC_PORT: i32 = 7349;
/// Container port of the node's console (Nakama's 7351), reached only through the edge.
pub const CONSOLE_PORT: i32 = 7351;

/// How deployments are laid out in the cluster. Validated once where it is parsed (the CLI);
/// the object builders only read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// Namespace of a deployment: this prefix plus the instance name. Must match the edge's
    /// `discovery.instance_namespace` (`kanmon-{instance}` by default), or the edge refuses the
    /// deployment's Service as foreign.
    pub namespace_prefix: String,
    /// Node image; `{version}` is replaced by the game-server version. A spec's image override
    /// replaces it whole.
    pub image: String,
    /// Arguments given to the node container (the node contract of the local driver, on the
    /// pod's own network namespace).
    pub node_args: Vec<String>,
    /// StorageClass of database volumes (`None`: the cluster's default class). Like
    /// `database_storage`, it is part of the database StatefulSet's volumeClaimTemplates, which
    /// Kubernetes does not let change: changing either later makes the apply of existing
    /// deployments fail (422) until they are given their original values back.
    pub storage_class: Option<String>,
    /// Size of a database volume (a Kubernetes quantity).
    pub database_storage: String,
    /// PostgreSQL image of the database StatefulSet and the export Job.
    pub database_image: String,
    /// Namespace of the edge (kanmon-proxy): the only one whose pods may open connections to
    /// nodes.
    pub edge_namespace: String,
    /// Namespace of the control plane: may reach nodes (health, logs) and databases (export).
    pub control_namespace: String,
    /// Namespace of the CloudNativePG operator, which must reach its instances' status port.
    pub cnpg_operator_namespace: String,
    /// Memory per CPU of nodes and databases, in MiB.
    pub memory_per_cpu_mib: u32,
    /// The platform's cap on a deployment's shutdown grace (the serve `--grace`): a pod
    /// drains for its deployment's `shutdown_grace_sec` after the preStop pause, at most this.
    pub grace: Duration,
    /// How long a deleted pod keeps accepting before it is sent SIGTERM: long enough for the
    /// EndpointSlice controller to mark its endpoint `serving && terminating` and for every edge
    /// replica's watch to see it (see configs/kubernetes/README.md, "Timing").
    pub pre_stop: Duration,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            namespace_prefix: "kanmon-".into(),
            image: "kanmon/game-node:{version}".into(),
            node_args: vec![
                "--listen".into(),
                format!("0.0.0.0:{HTTP_PORT}"),
                "--grpc-listen".into(),
                format!("0.0.0.0:{GRPC_PORT}"),
                "--console-listen".into(),
                format!("0.0.0.0:{CONSOLE_PORT}"),
            ],
            storage_class: None,
            database_storage: "10Gi".into(),
            database_image: "postgres:17".into(),
            edge_namespace: "kanmon-system".into(),
            control_namespace: "kanmon-control".into(),
            cnpg_operator_namespace: "cnpg-system".into(),
            memory_per_cpu_mib: 1024,
            grace: Duration::from_secs(30),
            pre_stop: Duration::from_secs(5),
        }
    }
}

impl KubeSettings {
    /// The namespace of `instance`.
    pub fn namespace(&self, instance: &str) -> String {
        format!("{}{instance}", self.namespace_prefix)
    }

    /// `terminationGracePeriodSeconds` of a node whose shutdown grace is `shutdown_grace`
    /// ([`crate::domain::NodeLaunch::shutdown_grace`], the deployment's, capped): Kubernetes
    /// counts the preStop pause inside it, so the node gets its whole grace after the pause.
    pub fn termination_grace_seconds(&self, shutdown_grace: Duration) -> i64 {
        let total = shutdown_grace + self.pre_stop;
        i64::try_from(total.as_secs() + u64::from(total.subsec_nanos() > 0)).unwrap_or(i64::MAX)
    }
}
