//! What goes into and out of a [`super::Controller`]: node events in, intents out, and the
//! timings that decide its deadlines.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    crashloop::{BACKOFF_BASE, BACKOFF_CAP},
    deployment::NodeLaunch,
    ops::{OpId, Operation},
    Timestamp,
};

/// Durations the lifecycle waits for. Configurable so tests and development setups need not
/// wait minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// How long a draining node may keep its connections before it is stopped anyway.
    pub grace: Duration,
    /// How long a started node has to pass its health check.
    pub health_timeout: Duration,
    /// How long a node may crash-loop before the operation fails.
    pub crashloop_timeout: Duration,
    /// First restart delay.
    pub backoff_base: Duration,
    /// Largest restart delay.
    pub backoff_cap: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
            health_timeout: Duration::from_secs(60),
            crashloop_timeout: Duration::from_secs(60 * 60),
            backoff_base: BACKOFF_BASE,
            backoff_cap: BACKOFF_CAP,
        }
    }
}

/// Something the outside world reports about a node (or about the export or certificate in
/// progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The export asked for by [`Intent::Export`] is done: the dump's description to add to
    /// the result (`None`: there is no database to dump), or why it failed (already free of
    /// secrets).
    ExportFinished {
        /// The export operation.
        op: OpId,
        /// `database` field of the result, or the failure.
        result: Result<Option<serde_json::Value>, String>,
    },
    /// The certificate asked for by [`Intent::Certificate`] is issued and in place (its
    /// description, for the operation's result), or why not (the current one stays).
    CertificateFinished {
        /// The certificate operation.
        op: OpId,
        /// The certificate's description, or the failure.
        result: Result<serde_json::Value, String>,
    },
    /// The revocation asked for by [`Intent::Revoke`] was tried: its outcome, for the delete
    /// operation's result (`Null`: no certificates are managed). It never fails the delete: a
    /// CA that is down only defers the revocation (the certificate keeper retries it).
    RevocationFinished {
        /// The delete operation.
        op: OpId,
        /// The revocation's outcome per hostname.
        result: serde_json::Value,
    },
    /// The build asked for by [`Intent::Build`] is done: the operation's result (the image
    /// reference and digest), or why it failed (already free of secrets).
    BuildFinished {
        /// The build operation.
        op: OpId,
        /// Result document, or the failure.
        result: Result<serde_json::Value, String>,
    },
    /// The driver started the node at these addresses.
    NodeStarted {
        /// Node id.
        node: String,
        /// Which start of the node this is about.
        incarnation: u64,
        /// HTTP/WebSocket address.
        addr: std::net::SocketAddr,
        /// gRPC address.
        grpc: Option<std::net::SocketAddr>,
        /// Console address.
        console: Option<std::net::SocketAddr>,
    },
    /// The node passed its health check.
    NodeHealthy {
        /// Node id.
        node: String,
        /// Which start of the node this is about.
        incarnation: u64,
    },
    /// The node's process is gone (asked to stop, or crashed).
    NodeExited {
        /// Node id.
        node: String,
        /// Which start of the node this is about.
        incarnation: u64,
    },
    /// A draining node has no connections left.
    ConnectionsDrained {
        /// Node id.
        node: String,
    },
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Tell the proxy to send no new connections to the node (at once).
    MarkDraining {
        /// Node id.
        node: String,
    },
    /// Tell the proxy the node takes connections.
    MarkReady {
        /// Node id.
        node: String,
    },
    /// Tell the proxy the node is gone.
    Forget {
        /// Node id.
        node: String,
    },
    /// Stop the node; report [`Event::NodeExited`] when it is gone.
    StopNode {
        /// Node id.
        node: String,
        /// The incarnation being stopped (echo it in the exit event).
        incarnation: u64,
    },
    /// Start a node; report [`Event::NodeStarted`], then [`Event::NodeHealthy`] or
    /// [`Event::NodeExited`].
    StartNode {
        /// What to start.
        spec: NodeLaunch,
    },
    /// Call [`Controller::handle_timeout`] at (or after) `at`.
    ArmTimer {
        /// Deadline.
        at: Timestamp,
    },
    /// Dump the deployment's database for export operation `op` (the operation stays in
    /// progress, so nothing else runs on the deployment meanwhile); report
    /// [`Event::ExportFinished`].
    Export {
        /// The export operation.
        op: OpId,
    },
    /// Obtain a certificate for exactly `hostname` for certificate operation `op` (which stays
    /// in progress meanwhile, like an export); report [`Event::CertificateFinished`].
    Certificate {
        /// The certificate operation.
        op: OpId,
        /// The deployment's hostname.
        hostname: String,
    },
    /// Revoke the certificates of the deployment's `hostname` (and its console's) for delete
    /// operation `op`, whose nodes are all gone (the operation stays in progress meanwhile, so
    /// the outcome is the delete's); report [`Event::RevocationFinished`].
    Revoke {
        /// The delete operation.
        op: OpId,
        /// The deployment's hostname.
        hostname: String,
    },
    /// Record in the audit log that operation `op` (stuck in CrashLoopBackOff) was ended by
    /// the newly queued operation `by`, on behalf of whoever queued `by`.
    Superseded {
        /// The operation that was stuck.
        op: OpId,
        /// Its kind's name (`deploy`, `set-config`, …).
        kind: &'static str,
        /// The operation that superseded it.
        by: OpId,
        /// Its kind's name.
        by_kind: &'static str,
        /// Who queued `by`.
        who: String,
    },
    /// Run builder `builder` for build operation `op` (the operation stays in progress);
    /// report [`Event::BuildFinished`].
    Build {
        /// The build operation (its id is the build's id).
        op: OpId,
        /// The builder's name.
        builder: String,
    },
    /// Persist this operation (it was created or changed).
    SaveOp(Box<Operation>),
    /// The deployment is deleted: remove it from the proxy.
    RemoveDeployment,
}
