//! The platform on the Kubernetes API fixture: containers with real listeners for the
//! simulated cluster's node pods ([`LoopbackPods`]: each pod on its own loopback IP, running
//! the demo node in-process and keeping the instant of every WebSocket it accepted), and the
//! proxy configuration that discovers them.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::Instant,
};

use kanmon_bench::node::{start_node, NodeConfig, NodeHandle, NodeStats};
use kanmon_testkit::k8s::pods::{uid, PodRuntime};
use serde_json::Value;

/// One pod's container as the runtime ran it.
#[derive(Debug)]
pub struct PodRun {
    /// `{pod}@{ip}`: what the node answers to `whoami` (the IP tells incarnations apart).
    pub node_id: String,
    /// The node's counters and accept instants, once it listens.
    pub stats: Option<Arc<NodeStats>>,
    /// Why it could not listen.
    pub error: Option<String>,
    /// When its container was stopped (the pod's grace ended).
    pub stopped: Option<Instant>,
}

#[derive(Debug, Default)]
struct Pods {
    runs: BTreeMap<String, PodRun>,
    handles: BTreeMap<String, NodeHandle>,
}

/// Runs the demo node for every pod labelled `kanmon.dev/component=node`, on the pod's own
/// loopback IP `127.N.x.y` (`N` from this process's id, so two test processes do not meet)
/// and the container ports named `http` and `grpc`.
#[derive(Debug)]
pub struct LoopbackPods {
    net: u8,
    rt: tokio::runtime::Handle,
    pods: Arc<Mutex<Pods>>,
}

impl LoopbackPods {
    /// A runtime whose nodes run on the current tokio runtime.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            net: 20 + (std::process::id() % 200) as u8,
            rt: tokio::runtime::Handle::current(),
            pods: Arc::default(),
        })
    }

    /// The network every pod IP is in (for the edge's `allowed_cidrs`).
    pub fn cidr(&self) -> String {
        format!("127.{}.0.0/16", self.net)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pods> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node_id` → (accept instants, container stop instant) of every pod run so far.
    pub fn accepts(&self) -> BTreeMap<String, (Vec<Instant>, Option<Instant>)> {
        self.lock()
            .runs
            .values()
            .map(|r| {
                let at = r
                    .stats
                    .as_ref()
                    .map(|s| s.ws_accepted_at())
                    .unwrap_or_default();
                (r.node_id.clone(), (at, r.stopped))
            })
            .collect()
    }

    /// The node id of pod `uid`.
    pub fn node_id(&self, uid: &str) -> Option<String> {
        self.lock().runs.get(uid).map(|r| r.node_id.clone())
    }

    /// Pods whose node could not listen, with why.
    pub fn errors(&self) -> Vec<String> {
        self.lock()
            .runs
            .values()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.node_id)))
            .collect()
    }
}

fn container_port(pod: &Value, name: &str) -> Option<u16> {
    pod["spec"]["containers"][0]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

impl PodRuntime for LoopbackPods {
    fn pod_ip(&self, n: u32) -> String {
        format!("127.{}.{}.{}", self.net, n / 250, n % 250 + 2)
    }

    fn start(&self, pod: &Value, ip: &str) -> bool {
        if pod["metadata"]["labels"]["kanmon.dev/component"] != "node" {
            return false;
        }
        let (Ok(addr), Some(http)) = (ip.parse::<IpAddr>(), container_port(pod, "http")) else {
            return false;
        };
        let uid = uid(pod).to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let node_id = format!("{name}@{ip}");
        let cfg = NodeConfig {
            listen: SocketAddr::new(addr, http),
            grpc_listen: container_port(pod, "grpc").map(|g| SocketAddr::new(addr, g)),
            console_listen: container_port(pod, "console").map(|c| SocketAddr::new(addr, c)),
            node_id: node_id.clone(),
            tls: None,
            log_connections: false,
            record_accepts: true,
            // The pod's config is in its Secret, which the simulated kubelet does not mount:
            // no server key is demanded, and the report is empty.
            received: Default::default(),
        };
        self.lock().runs.insert(
            uid.clone(),
            PodRun {
                node_id,
                stats: None,
                error: None,
                stopped: None,
            },
        );
        let pods = self.pods.clone();
        self.rt.spawn(async move {
            let started = start_node(cfg).await;
            let mut p = pods.lock().unwrap_or_else(|p| p.into_inner());
            let stopped = p.runs.get(&uid).is_some_and(|r| r.stopped.is_some());
            match started {
                Ok(handle) if !stopped => {
                    if let Some(r) = p.runs.get_mut(&uid) {
                        r.stats = Some(handle.stats_handle());
                    }
                    p.handles.insert(uid, handle);
                }
                Ok(handle) => drop(handle),
                Err(e) => {
                    if let Some(r) = p.runs.get_mut(&uid) {
                        r.error = Some(format!("{e:#}"));
                    }
                }
            }
        });
        true
    }

    fn ready(&self, uid: &str) -> bool {
        self.lock().handles.contains_key(uid)
    }

    fn stop(&self, uid: &str) {
        let handle = {
            let mut p = self.lock();
            if let Some(r) = p.runs.get_mut(uid) {
                r.stopped = Some(Instant::now());
            }
            p.handles.remove(uid)
        };
        if let Some(h) = handle {
            // Closes its WebSockets with 1001, as a node does on SIGTERM.
            self.rt.spawn(async move {
                let _stopped = h.shutdown().await;
            });
        }
    }
}

/// `kanmon-proxy`'s configuration for a cluster: TLS on `tls`, admin on `admin`,
/// certificates from `cert_dir` and from the certificate Secrets of `certificate_namespace`,
/// Kubernetes discovery through `kubeconfig`, endpoints allowed only in `cidrs`.
pub fn proxy_config(
    tls: SocketAddr,
    admin: SocketAddr,
    cert_dir: &Path,
    kubeconfig: &Path,
    certificate_namespace: &str,
    cidrs: &[String],
    upgrade_sock: &Path,
) -> String {
    let cidrs: Vec<String> = cidrs.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[listen]\ntls = \"{tls}\"\nadmin = \"{admin}\"\n[tls]\ncert_dir = \"{}\"\n\
         [discovery]\nkind = \"kubernetes\"\nkubeconfig = \"{}\"\n\
         certificate_namespace = \"{certificate_namespace}\"\nallowed_cidrs = [{}]\n\
         [shutdown]\nupgrade_sock = \"{}\"\n",
        cert_dir.display(),
        kubeconfig.display(),
        cidrs.join(", "),
        upgrade_sock.display()
    )
}
