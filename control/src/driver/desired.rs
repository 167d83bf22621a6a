//! The two halves of the driver seam as data: what the domain wants of a deployment's nodes
//! ([`DesiredState`], level-triggered: the whole deployment every time), and what a driver
//! saw happen ([`Observation`], streamed through an [`Observer`]).

use std::time::Duration;

use tokio::sync::mpsc;

use super::Endpoints;
use crate::domain::{Deployment, NodeLaunch};

/// What should become of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePhase {
    /// Run this incarnation (adopt it when it already runs; replace any other).
    Run,
    /// Keep it running, but it takes no new connections: the edge was told (locally), or the
    /// driver makes the cluster tell it (a pod deleted with a `preStop` pause turns its
    /// endpoint `serving && terminating`).
    Drain,
    /// Stop this incarnation; report [`Observation::Exited`] once it is gone.
    Gone,
}

/// One node of a [`DesiredState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNode {
    /// What to run: spec, generation, the incarnation observations must name, and the
    /// shutdown grace the domain decided for it ([`NodeLaunch::shutdown_grace`]: how long
    /// a stopped node may take to exit before the driver kills it).
    pub launch: NodeLaunch,
    /// Run, drain or go.
    pub phase: NodePhase,
}

/// How a driver decides that a node is ready and notices that a ready one died (a
/// Kubernetes driver turns it into the pod's readiness probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Interval of readiness checks while a node starts.
    pub interval: Duration,
    /// How long a started node has to become ready (the domain gives up after it anyway).
    pub timeout: Duration,
    /// Interval of liveness checks of a ready node.
    pub liveness: Duration,
}

/// Everything one deployment should run, as the domain decided it. Nodes that are not listed
/// should not exist (a driver removes them without reporting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    /// The deployment's instance name.
    pub instance: String,
    /// The deployment as last persisted: zone, type, applied spec and generation (a node's
    /// own spec and generation, in its [`NodeLaunch`], may be newer mid-rollout), keys,
    /// whether it is deleted. What a cluster driver builds its per-deployment objects from.
    pub deployment: Deployment,
    /// Its nodes, by slot.
    pub nodes: Vec<DesiredNode>,
    /// Readiness and liveness checking.
    pub probe: Probe,
}

/// What a driver saw happen to a node. Every observation names the incarnation it is about
/// (the driver's own start counter, echoed from [`NodeLaunch::incarnation`]), so a late report
/// about a replaced process cannot move its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The node exists and listens here (ready or not).
    Started {
        /// Node id.
        node: String,
        /// Incarnation.
        incarnation: u64,
        /// Where it listens.
        endpoints: Endpoints,
    },
    /// The node passes its readiness check.
    Ready {
        /// Node id.
        node: String,
        /// Incarnation.
        incarnation: u64,
    },
    /// The node takes no new connections (acknowledges [`NodePhase::Drain`]).
    Draining {
        /// Node id.
        node: String,
        /// Incarnation.
        incarnation: u64,
    },
    /// The node is gone: stopped as asked, failed to start, or crashed.
    Exited {
        /// Node id.
        node: String,
        /// Incarnation.
        incarnation: u64,
        /// Exit code, when the driver knows it (none: killed by a signal, never started).
        code: Option<i32>,
    },
    /// The platform restarted the node's process in place (a container restart): for the
    /// domain, a death of this incarnation like any other.
    Restarting {
        /// Node id.
        node: String,
        /// Incarnation.
        incarnation: u64,
        /// Restarts so far.
        restarts: u32,
    },
}

/// Where drivers send observations (cheap to clone; sending never blocks).
#[derive(Debug, Clone)]
pub struct Observer {
    tx: mpsc::UnboundedSender<(String, Observation)>,
}

impl Observer {
    /// An observer and the stream of `(instance, observation)` it feeds.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<(String, Observation)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Reports `observation` about a node of `instance`.
    pub fn observe(&self, instance: &str, observation: Observation) {
        if self.tx.send((instance.to_string(), observation)).is_err() {
            tracing::debug!(instance, "control plane is gone; dropping an observation");
        }
    }
}
