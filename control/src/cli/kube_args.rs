//! The `kanmon serve --driver kubernetes` options: how deployments are laid out in the cluster
//! (see configs/kubernetes/README.md). They become a [`KubeSettings`].

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::k8s::KubeSettings;

/// Options of the Kubernetes driver (used only with `--driver kubernetes`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kubernetes driver (--driver kubernetes)")]
pub struct KubeArgs {
    /// Kubeconfig file of the cluster. Without it: the pod's service account when the control
    /// plane runs in the cluster, else $KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Each deployment lives in the namespace PREFIX + instance name; must match the edge's
    /// `discovery.instance_namespace`, or the edge ignores the deployment's Service.
    #[arg(long, default_value = "kanmon-")]
    pub namespace_prefix: String,
    /// Game-node image; `{version}` becomes the deployment's game-server version (a
    /// deployment's own image override replaces it whole).
    #[arg(long, default_value = "kanmon/game-node:{version}")]
    pub node_image: String,
    /// StorageClass of database volumes (default: the cluster's default class). Fixed once a
    /// deployment exists: Kubernetes refuses to change a volume claim template.
    #[arg(long)]
    pub storage_class: Option<String>,
    /// Size of each deployment's database volume (a Kubernetes quantity); fixed like
    /// --storage-class.
    #[arg(long, default_value = "10Gi")]
    pub database_storage: String,
    /// PostgreSQL image of the per-deployment database and its export Job.
    #[arg(long, default_value = "postgres:17")]
    pub database_image: String,
    /// Namespace of the edge (kanmon-proxy): the only pods allowed to connect to nodes.
    #[arg(long, default_value = "kanmon-system")]
    pub edge_namespace: String,
    /// Namespace the control plane runs in (may reach nodes and databases).
    #[arg(long, default_value = "kanmon-control")]
    pub control_namespace: String,
    /// Namespace of the CloudNativePG operator (used when its Cluster CRD is installed).
    #[arg(long, default_value = "cnpg-system")]
    pub cnpg_operator_namespace: String,
    /// Memory requested per CPU of nodes and databases, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory_per_cpu_mib: u32,
    /// How long a deleted pod keeps accepting before SIGTERM (its preStop pause): long enough
    /// for every edge replica to see its endpoint `serving && terminating`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub pre_stop: Duration,
}

impl KubeArgs {
    /// The driver's settings; `grace` (the serve `--grace`) caps how long a deleted pod may
    /// drain after its preStop pause (its deployment's `shutdown_grace_sec` decides within).
    pub fn settings(&self, grace: Duration) -> KubeSettings {
        KubeSettings {
            namespace_prefix: self.namespace_prefix.clone(),
            image: self.node_image.clone(),
            storage_class: self.storage_class.clone(),
            database_storage: self.database_storage.clone(),
            database_image: self.database_image.clone(),
            edge_namespace: self.edge_namespace.clone(),
            control_namespace: self.control_namespace.clone(),
            cnpg_operator_namespace: self.cnpg_operator_namespace.clone(),
            memory_per_cpu_mib: self.memory_per_cpu_mib,
            grace,
            pre_stop: self.pre_stop,
            ..KubeSettings::default()
        }
    }
}
