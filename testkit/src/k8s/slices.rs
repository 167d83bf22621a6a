//! The game-deployment Services and node EndpointSlices the proxy's discovery tests write.

use std::net::SocketAddr;

use serde_json::{json, Value};

/// Conditions of an endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Cond {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

pub const READY: Cond = Cond {
    ready: true,
    serving: true,
    terminating: false,
};
pub const TERMINATING: Cond = Cond {
    ready: false,
    serving: true,
    terminating: true,
};
pub const NOT_SERVING: Cond = Cond {
    ready: false,
    serving: false,
    terminating: false,
};

pub fn service_json(instance: &str) -> Value {
    json!({
        "metadata": {"labels": {"kanmon.dev/instance": instance, "kanmon.dev/zone": "us-east1",
            "app.kubernetes.io/name": "game"}},
        "spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 7350, "targetPort": 7350, "protocol": "TCP"},
            {"name": "grpc", "port": 7349, "targetPort": 7349, "protocol": "TCP"}]}
    })
}

pub fn slice_json(service: &str, node: &str, ns: &str, addr: SocketAddr, c: Cond) -> Value {
    json!({
        "metadata": {"labels": {"kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}],
        "endpoints": [{
            "addresses": [addr.ip().to_string()],
            "conditions": {"ready": c.ready, "serving": c.serving, "terminating": c.terminating},
            "targetRef": {"kind": "Pod", "name": node, "namespace": ns},
        }]
    })
}
