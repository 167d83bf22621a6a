//! Containers with real listeners behind the simulated kubelet: a [`PodRuntime`] gives each
//! pod it runs its own address (a test gives every pod its own loopback IP, `127.x.y.z`, all of
//! `127/8` being local on Linux) and starts a real server there, so the edge's traffic really
//! reaches "pods"; the kubelet marks such a pod Ready only once the runtime says its
//! readiness probe passes, and stops its container when the pod's grace has ended.

use serde_json::Value;

/// What runs the containers of the simulated cluster's pods.
pub trait PodRuntime: Send + Sync + std::fmt::Debug {
    /// The IP of the `n`th pod the kubelet starts (counting from 1).
    fn pod_ip(&self, n: u32) -> String;

    /// Starts `pod`'s container at `ip` (returns at once). False: this runtime does not run
    /// that pod (say, a database), which is then Ready at once, as without a runtime.
    fn start(&self, pod: &Value, ip: &str) -> bool;

    /// Whether the container of pod `uid` passes its readiness probe.
    fn ready(&self, uid: &str) -> bool;

    /// Stops pod `uid`'s container: its preStop pause and drain are over (returns at once).
    fn stop(&self, uid: &str);
}

/// The UID of a pod object.
pub fn uid(pod: &Value) -> &str {
    pod["metadata"]["uid"].as_str().unwrap_or_default()
}
