//! Where the Kubernetes end-to-end test runs: the wire fixture with its simulated cluster and
//! [`LoopbackPods`](crate::k8s::LoopbackPods), or — when `KANMON_TEST_KUBECONFIG` names a
//! kubeconfig — a real cluster (kind, k3d, …), read with `kubectl`.
//!
//! A real cluster needs (read from the environment): `KANMON_TEST_BENCH_IMAGE`, an image whose
//! entrypoint is the demo node (`kanmon-bench node`; its arguments are the driver's, `--listen
//! 0.0.0.0:7350 --grpc-listen 0.0.0.0:7349`), pullable by the cluster (kind: `kind load
//! docker-image`); pod IPs routable from the machine running the test (the proxy runs here:
//! k3s on this host routes them; kind needs `ip route add <pod CIDR> via <node container IP>`),
//! listed in `KANMON_TEST_POD_CIDRS` (comma-separated; default `10.244.0.0/16`, kind's); a
//! default StorageClass for the deployment's database. `KANMON_TEST_CRASH_IMAGE` (default
//! `busybox:1.36`, which exits with "applet not found" on the node's arguments) is the
//! crashing image.

use std::{
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use kanmon_testkit::k8s::{
    sim::{SimCluster, SimOpts},
    ApiFixture, Kind, LOOPBACK,
};
use serde_json::Value;

use crate::k8s::LoopbackPods;

/// One node pod as the test looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name (the node id).
    pub name: String,
    /// Pod UID (the incarnation).
    pub uid: String,
    /// It has a `deletionTimestamp`.
    pub terminating: bool,
    /// Its container's image.
    pub image: String,
    /// Its container's restart count.
    pub restarts: i64,
    /// Its container waits in `CrashLoopBackOff`.
    pub backoff: bool,
}

fn pod_info(p: &Value) -> PodInfo {
    let m = &p["metadata"];
    let cs = &p["status"]["containerStatuses"][0];
    PodInfo {
        name: m["name"].as_str().unwrap_or_default().to_string(),
        uid: m["uid"].as_str().unwrap_or_default().to_string(),
        terminating: !m["deletionTimestamp"].is_null(),
        image: p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        restarts: cs["restartCount"].as_i64().unwrap_or(0),
        backoff: cs["state"]["waiting"]["reason"] == "CrashLoopBackOff",
    }
}

/// The edge's namespace on the fixture (the default of `--edge-namespace`).
const FIXTURE_EDGE_NAMESPACE: &str = "kanmon-system";

/// The cluster under test.
pub enum Cluster {
    /// The wire fixture, its simulated cluster and the pods' real listeners.
    Fixture {
        /// The API fixture.
        api: Arc<ApiFixture>,
        /// Its controllers and kubelet (stopped when dropped).
        sim: SimCluster,
        /// The pods' containers.
        pods: Arc<LoopbackPods>,
    },
    /// A real API server.
    Real {
        /// Its kubeconfig.
        kubeconfig: PathBuf,
        /// The demo node's image.
        image: String,
    },
}

impl Cluster {
    /// A real cluster when `KANMON_TEST_KUBECONFIG` is set (`Err` saying why it cannot run when
    /// the node image is missing), else the fixture with deleted pods serving for `grace`.
    pub async fn from_env(grace: Duration) -> Result<Self, String> {
        if let Some(kubeconfig) = std::env::var_os("KANMON_TEST_KUBECONFIG") {
            let image = std::env::var("KANMON_TEST_BENCH_IMAGE").map_err(|_| {
                "KANMON_TEST_KUBECONFIG is set but KANMON_TEST_BENCH_IMAGE (an image running \
                 `kanmon-bench node`) is not"
                    .to_string()
            })?;
            return Ok(Self::Real {
                kubeconfig: kubeconfig.into(),
                image,
            });
        }
        let api = Arc::new(ApiFixture::start_with(LOOPBACK).await);
        // The edge's namespace exists before anything is installed into the cluster.
        api.put(
            kanmon_testkit::k8s::Kind::Namespace,
            "",
            FIXTURE_EDGE_NAMESPACE,
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": FIXTURE_EDGE_NAMESPACE}}),
        );
        let pods = LoopbackPods::new();
        let sim = SimCluster::start(
            &api,
            SimOpts {
                grace,
                runtime: Some(pods.clone()),
                ..SimOpts::default()
            },
        );
        Ok(Self::Fixture { api, sim, pods })
    }

    /// Whether this is a real cluster (longer waits, no per-pod accept records).
    pub fn is_real(&self) -> bool {
        matches!(self, Self::Real { .. })
    }

    /// The instance name to create: `alpha` on the fixture, one per test process on a real
    /// cluster (so runs do not meet).
    pub fn instance(&self) -> String {
        match self {
            Self::Fixture { .. } => "alpha".into(),
            Self::Real { .. } => format!("kt{}", std::process::id()),
        }
    }

    /// The kubeconfig both `kanmon serve` and the proxy use.
    pub fn kubeconfig(&self) -> PathBuf {
        match self {
            Self::Fixture { api, .. } => api.kubeconfig(),
            Self::Real { kubeconfig, .. } => kubeconfig.clone(),
        }
    }

    /// The proxy's `discovery.allowed_cidrs`.
    pub fn pod_cidrs(&self) -> Vec<String> {
        match self {
            Self::Fixture { pods, .. } => vec![pods.cidr()],
            Self::Real { .. } => std::env::var("KANMON_TEST_POD_CIDRS")
                .unwrap_or_else(|_| "10.244.0.0/16".into())
                .split(',')
                .map(|c| c.trim().to_string())
                .collect(),
        }
    }

    /// The edge's namespace, where `kanmon serve` puts certificate Secrets and the proxy
    /// watches them: on a real cluster `KANMON_TEST_EDGE_NAMESPACE` (default `kanmon-system`,
    /// which must exist, as configs/kubernetes/00-namespace.yaml makes it).
    pub fn edge_namespace(&self) -> String {
        match self {
            Self::Fixture { .. } => FIXTURE_EDGE_NAMESPACE.into(),
            Self::Real { .. } => std::env::var("KANMON_TEST_EDGE_NAMESPACE")
                .unwrap_or_else(|_| FIXTURE_EDGE_NAMESPACE.into()),
        }
    }

    /// `kanmon serve` arguments beyond the common ones.
    pub fn serve_args(&self) -> Vec<String> {
        let edge = vec!["--edge-namespace".to_string(), self.edge_namespace()];
        match self {
            Self::Fixture { .. } => edge,
            Self::Real { image, .. } => edge
                .into_iter()
                .chain([
                    "--node-image".into(),
                    image.clone(),
                    "--pre-stop".into(),
                    "2s".into(),
                    "--memory-per-cpu-mib".into(),
                    "256".into(),
                ])
                .collect(),
        }
    }

    /// The image a deploy that must crash uses.
    pub fn crash_image(&self) -> String {
        match self {
            Self::Fixture { .. } => "registry.example/crash:1".into(),
            Self::Real { .. } => {
                std::env::var("KANMON_TEST_CRASH_IMAGE").unwrap_or_else(|_| "busybox:1.36".into())
            }
        }
    }

    /// The node pods of `instance` now.
    pub async fn node_pods(&self, instance: &str) -> Vec<PodInfo> {
        let ns = format!("kanmon-{instance}");
        match self {
            Self::Fixture { api, .. } => api
                .list(Kind::Pod)
                .iter()
                .filter(|p| {
                    p["metadata"]["namespace"] == ns.as_str()
                        && p["metadata"]["labels"]["kanmon.dev/component"] == "node"
                })
                .map(pod_info)
                .collect(),
            Self::Real { kubeconfig, .. } => {
                let kubeconfig = kubeconfig.clone();
                let out = tokio::task::spawn_blocking(move || {
                    Command::new("kubectl")
                        .arg("--kubeconfig")
                        .arg(kubeconfig)
                        .args(["get", "pods", "-n", &ns, "-l", "kanmon.dev/component=node"])
                        .args(["-o", "json", "--request-timeout", "10s"])
                        .output()
                })
                .await;
                let json: Value = match out {
                    Ok(Ok(o)) => serde_json::from_slice(&o.stdout).unwrap_or_default(),
                    _ => Value::Null,
                };
                json["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(pod_info)
                    .collect()
            }
        }
    }

    /// What a client's `whoami` names for pod `pod`: an id per incarnation on the fixture,
    /// the pod name on a real cluster (the demo node answers `KANMON_NODE_ID`).
    pub fn node_id(&self, pod: &PodInfo) -> Option<String> {
        match self {
            Self::Fixture { pods, .. } => pods.node_id(&pod.uid),
            Self::Real { .. } => Some(pod.name.clone()),
        }
    }

    /// Whether node ids tell incarnations apart (else a successor answers with its
    /// predecessor's name, and only connections before the old pod was gone are its).
    pub fn ids_per_incarnation(&self) -> bool {
        !self.is_real()
    }

    /// Per node id, the instants its pod accepted WebSockets (fixture only).
    pub fn accepts(&self) -> Option<std::collections::BTreeMap<String, Vec<Instant>>> {
        match self {
            Self::Fixture { pods, .. } => Some(
                pods.accepts()
                    .into_iter()
                    .map(|(id, (at, _))| (id, at))
                    .collect(),
            ),
            Self::Real { .. } => None,
        }
    }

    /// Why pods could not run (fixture only).
    pub fn errors(&self) -> Vec<String> {
        match self {
            Self::Fixture { pods, .. } => pods.errors(),
            Self::Real { .. } => Vec::new(),
        }
    }

    /// Removes what the test made on a real cluster (its namespace), without waiting.
    pub fn clean_up(&self, instance: &str) {
        if let Self::Real { kubeconfig, .. } = self {
            let _ = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["delete", "namespace", &format!("kanmon-{instance}")])
                .args(["--wait=false", "--ignore-not-found"])
                .status();
        }
    }
}
