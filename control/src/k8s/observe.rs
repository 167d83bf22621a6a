//! Reading pods back: a pure mapping from a Pod (and its StatefulSet) to what the control
//! plane's domain handles — a node started at its endpoints, ready, draining, exited with a
//! code, restarting, in CrashLoopBackOff — with the pod UID as the driver's incarnation id.
//!
//! Two steps, both pure: [`observe`] reduces a Pod to a [`PodView`] (only the facts the domain
//! acts on), and [`changes`] turns two successive views of one node into observations. The
//! watcher only stores the last view per node, so the mapping is tested without a cluster.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};

use super::names::{GENERATION_ANNOTATION, MANAGED_BY};

/// Where a node's pod listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeEndpoints {
    /// HTTP/WebSocket address (pod IP, container port `http`).
    pub addr: SocketAddr,
    /// gRPC address (container port `grpc`), if the container declares one.
    pub grpc: Option<SocketAddr>,
    /// Console address (container port `console`), if the container declares one.
    pub console: Option<SocketAddr>,
}

/// The node container's state, as far as the domain cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerView {
    /// Not started yet (scheduling, pulling, creating).
    Pending,
    /// Running.
    Running,
    /// Waiting to be restarted after it exited; `CrashLoopBackOff` is the kubelet's back-off.
    Waiting {
        /// The kubelet's reason (`CrashLoopBackOff`, `ErrImagePull`, ...).
        reason: String,
    },
    /// Exited and not (yet) restarted.
    Terminated {
        /// The exit code.
        code: i32,
    },
}

/// The facts of one node pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Node id: the pod name (`{instance}-N`).
    pub node: String,
    /// The driver's incarnation id: the pod UID (a new pod for the same node has a new one).
    pub incarnation: String,
    /// The spec generation the pod was created with (its template annotation).
    pub generation: Option<u64>,
    /// Once the pod has an IP and its container runs.
    pub endpoints: Option<NodeEndpoints>,
    /// The pod's `Ready` condition (false once it is terminating, whatever the condition says).
    pub ready: bool,
    /// Deleted and shutting down (`metadata.deletionTimestamp` set).
    pub terminating: bool,
    /// The node container.
    pub container: ContainerView,
    /// Container restarts within this pod.
    pub restarts: u32,
    /// Exit code of the previous run, after a restart.
    pub last_exit: Option<i32>,
}

/// What happened to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeObservation {
    /// The node runs and listens at these addresses (not necessarily healthy yet).
    Started(NodeEndpoints),
    /// Passing its readiness probe.
    Ready,
    /// Failing its readiness probe while running.
    NotReady,
    /// Deleted: terminating, and its endpoint `serving && terminating` at the edge.
    Draining,
    /// The container exited (`None`: the pod vanished without reporting a code).
    Exited {
        /// Exit code.
        code: Option<i32>,
    },
    /// The kubelet restarted the container.
    Restarting {
        /// Restarts so far in this pod.
        restarts: u32,
        /// Exit code of the run that ended.
        last_exit: Option<i32>,
    },
    /// The kubelet backs off restarting a container that keeps exiting.
    CrashLoopBackOff {
        /// Restarts so far in this pod.
        restarts: u32,
        /// Exit code of the last run.
        last_exit: Option<i32>,
    },
    /// The pod object is gone.
    Gone,
}

/// One observation about one incarnation of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Node id.
    pub node: String,
    /// Pod UID.
    pub incarnation: String,
    /// Generation the pod runs, when known.
    pub generation: Option<u64>,
    /// What happened.
    pub what: NodeObservation,
}

/// Whether the StatefulSet controller has acted on the set's latest spec. Until it has, the
/// pods it creates may come from the previous template, and its status counts describe the
/// previous spec: the driver decides nothing on them.
pub fn set_is_current(set: &StatefulSet) -> bool {
    let generation = set.metadata.generation.unwrap_or(0);
    set.status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some_and(|o| o >= generation)
}

fn port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// The view of a node pod, or `None` for a pod the driver did not make (or one without a name
/// or UID, which no API server sends).
pub fn observe(pod: &Pod) -> Option<PodView> {
    let meta = &pod.metadata;
    let managed = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|v| v == MANAGED_BY);
    if !managed {
        return None;
    }
    let node = meta.name.clone()?;
    let incarnation = meta.uid.clone()?;
    let generation = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(GENERATION_ANNOTATION))
        .and_then(|g| g.parse().ok());
    let terminating = meta.deletion_timestamp.is_some();
    let status = pod.status.as_ref();
    let cs = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "node"));
    let state = cs.and_then(|c| c.state.as_ref());
    let container = if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        ContainerView::Terminated { code: t.exit_code }
    } else if state.and_then(|s| s.running.as_ref()).is_some() {
        ContainerView::Running
    } else if let Some(reason) = state
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
        .filter(|_| cs.is_some_and(|c| c.restart_count > 0 || c.last_state.is_some()))
    {
        ContainerView::Waiting { reason }
    } else {
        ContainerView::Pending
    };
    let ip: Option<IpAddr> = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let endpoints = match (ip, port(pod, "http")) {
        (Some(ip), Some(http)) if container == ContainerView::Running => Some(NodeEndpoints {
            addr: SocketAddr::new(ip, http),
            grpc: port(pod, "grpc").map(|p| SocketAddr::new(ip, p)),
            console: port(pod, "console").map(|p| SocketAddr::new(ip, p)),
        }),
        _ => None,
    };
    let ready_condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    Some(PodView {
        node,
        incarnation,
        generation,
        ready: ready_condition && !terminating && container == ContainerView::Running,
        endpoints,
        terminating,
        container,
        restarts: cs.map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0)),
        last_exit: cs
            .and_then(|c| c.last_state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
    })
}

fn crashlooping(v: &PodView) -> bool {
    matches!(&v.container, ContainerView::Waiting { reason } if reason == "CrashLoopBackOff")
}

/// The observations that lead from `prev` to `next` (two views of one node; `None`: no pod).
/// A new incarnation ends the previous one first, so its observations never mix with the
/// successor's.
pub fn changes(prev: Option<&PodView>, next: Option<&PodView>) -> Vec<Observation> {
    let mut out = Vec::new();
    match (prev, next) {
        (None, None) => {}
        (Some(p), None) => {
            let at = |what| Observation {
                node: p.node.clone(),
                incarnation: p.incarnation.clone(),
                generation: p.generation,
                what,
            };
            if !matches!(p.container, ContainerView::Terminated { .. }) {
                out.push(at(NodeObservation::Exited { code: None }));
            }
            out.push(at(NodeObservation::Gone));
        }
        (Some(p), Some(n)) if p.incarnation != n.incarnation => {
            out.extend(changes(Some(p), None));
            out.extend(changes(None, Some(n)));
        }
        (p, Some(n)) => {
            let at = |what| Observation {
                node: n.node.clone(),
                incarnation: n.incarnation.clone(),
                generation: n.generation,
                what,
            };
            if let Some(e) = n
                .endpoints
                .filter(|e| p.and_then(|p| p.endpoints) != Some(*e))
            {
                out.push(at(NodeObservation::Started(e)));
            }
            if n.restarts > p.map_or(0, |p| p.restarts) {
                out.push(at(NodeObservation::Restarting {
                    restarts: n.restarts,
                    last_exit: n.last_exit,
                }));
            }
            if crashlooping(n) && !p.is_some_and(|p| crashlooping(p) && p.restarts == n.restarts) {
                out.push(at(NodeObservation::CrashLoopBackOff {
                    restarts: n.restarts,
                    last_exit: n.last_exit,
                }));
            }
            let was_ready = p.is_some_and(|p| p.ready);
            if n.ready && !was_ready {
                out.push(at(NodeObservation::Ready));
            } else if !n.ready && was_ready && !n.terminating {
                out.push(at(NodeObservation::NotReady));
            }
            if n.terminating && !p.is_some_and(|p| p.terminating) {
                out.push(at(NodeObservation::Draining));
            }
            if let ContainerView::Terminated { code } = n.container {
                if p.map(|p| &p.container) != Some(&n.container) {
                    out.push(at(NodeObservation::Exited { code: Some(code) }));
                }
            }
        }
    }
    out
}
