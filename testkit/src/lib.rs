//! Test fixtures shared by the kanmon crates' tests. Never a dependency of a shipped crate.
//!
//! [`k8s`]: a stand-in Kubernetes API server speaking the real wire protocol (TLS, bearer token,
//! list/watch with resourceVersions, server-side apply, deletes, discovery), and
//! [`k8s::sim::SimCluster`], which plays the StatefulSet controller, the kubelet and the
//! EndpointSlice controller against it.

pub mod k8s;
