//! From Kubernetes objects to deployment specs, without I/O.
//!
//! The watch tasks reduce each Service and EndpointSlice to a small view as soon as it arrives
//! (so the store never holds whole API objects), and [`deployment`] turns one Service and its
//! slices into the router's [`DeploymentSpec`]. Everything here is a pure function: the rules of
//! DESIGN.md ("Kubernetes mapping") are tested without a cluster.

use std::{collections::BTreeMap, net::IpAddr, net::SocketAddr};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kanmon_router::{DeploymentSpec, InstanceName, NodeSpec, NodeState, Zone};

/// Service label naming the deployment's instance.
pub const INSTANCE_LABEL: &str = "kanmon.dev/instance";
/// Service label naming the deployment's zone.
pub const ZONE_LABEL: &str = "kanmon.dev/zone";
/// Opt-in annotation (or label) for [`DeploymentSpec::fallback_to_draining`].
pub const FALLBACK_ANNOTATION: &str = "kanmon.dev/fallback-to-draining";
/// Label the EndpointSlice controller puts on every slice, naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The Service port carrying HTTP and WebSocket traffic.
pub const HTTP_PORT: &str = "http";
/// The optional Service port carrying gRPC.
pub const GRPC_PORT: &str = "grpc";
/// The optional Service port carrying the Nakama console.
pub const CONSOLE_PORT: &str = "console";
/// Annotation (or label) holding the console's allow-list: comma-separated CIDRs. Absent,
/// empty or with any entry that is no CIDR: the console is closed (a typo never opens it wider).
pub const CONSOLE_ALLOW_ANNOTATION: &str = "kanmon.dev/console-allow";

/// Why a Service cannot become a deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The instance label is not a valid instance name.
    #[error("service {service}: label {INSTANCE_LABEL}: {reason}")]
    Instance {
        /// `namespace/name` of the Service.
        service: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The zone label is not a valid zone.
    #[error("service {service}: label {ZONE_LABEL}: {reason}")]
    Zone {
        /// `namespace/name` of the Service.
        service: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Service has no port named `http`.
    #[error("service {service}: no port named \"{HTTP_PORT}\"")]
    NoHttpPort {
        /// `namespace/name` of the Service.
        service: String,
    },
}

/// Identity of an object: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the proxy needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// Namespace and name.
    pub key: ObjectKey,
    /// Raw `kanmon.dev/instance` label (validated by [`deployment`]).
    pub instance: String,
    /// Raw `kanmon.dev/zone` label.
    pub zone: String,
    /// Whether a port is named `http`.
    pub has_http: bool,
    /// `kanmon.dev/fallback-to-draining: "true"`.
    pub fallback_to_draining: bool,
    /// `kanmon.dev/console-allow`, parsed (see [`CONSOLE_ALLOW_ANNOTATION`]).
    pub console_allow: Vec<ipnet::IpNet>,
}

/// The conditions of one endpoint; `None` is "not reported", with the API's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conditions {
    /// `ready` (absent means true).
    pub ready: Option<bool>,
    /// `serving` (absent means: as `ready`).
    pub serving: Option<bool>,
    /// `terminating` (absent means false).
    pub terminating: Option<bool>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// Node id: the pod name (target reference), else the hostname, else the address.
    pub id: String,
    /// The first address (consumers use the first; the others are duplicates).
    pub address: IpAddr,
    /// Its conditions.
    pub conditions: Conditions,
}

/// The `addressType` of a slice: what its addresses are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressType {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
    /// `FQDN` (or any type this proxy does not know): names, not routable addresses, even
    /// where they happen to parse as IPs.
    Other,
}

impl AddressType {
    fn parse(s: &str) -> Self {
        match s {
            "IPv4" => Self::V4,
            "IPv6" => Self::V6,
            _ => Self::Other,
        }
    }

    /// Whether `ip` is of this type.
    pub fn fits(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Self::V4, IpAddr::V4(_)) | (Self::V6, IpAddr::V6(_))
        )
    }
}

/// What the proxy needs of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceView {
    /// Namespace and name of the slice.
    pub key: ObjectKey,
    /// The Service it belongs to (same namespace).
    pub service: String,
    /// Its `addressType`.
    pub address_type: AddressType,
    /// Whether it carries `kanmon.dev/instance` (mirrored from the Service by the
    /// EndpointSlice controller; a slice written by another controller lacks it).
    pub labelled: bool,
    /// The pod port behind the Service's `http` port.
    pub http_port: Option<u16>,
    /// The pod port behind the Service's `grpc` port.
    pub grpc_port: Option<u16>,
    /// The pod port behind the Service's `console` port.
    pub console_port: Option<u16>,
    /// Endpoints with a usable IP address.
    pub endpoints: Vec<EndpointView>,
}

impl SliceView {
    /// The key of the Service this slice belongs to.
    pub fn service_key(&self) -> ObjectKey {
        ObjectKey::new(self.key.namespace.clone(), self.service.clone())
    }
}

/// The routing state of an endpoint (DESIGN.md): `ready` → ready, `serving && terminating` →
/// draining, anything else (`!serving`) → unhealthy. A terminating endpoint is never ready,
/// even if a buggy publisher says so (a pod that starts terminating stops taking new
/// connections), and an explicit `serving: false` wins over an absent `ready`.
pub fn node_state(c: Conditions) -> NodeState {
    let terminating = c.terminating.unwrap_or(false);
    let ready = c.ready.unwrap_or(true);
    let serving = c.serving.unwrap_or(ready);
    match (terminating, ready && serving, serving) {
        (true, _, true) => NodeState::Draining,
        (false, true, _) => NodeState::Ready,
        _ => NodeState::Unhealthy,
    }
}

fn labels_and_annotations(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<String> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .or_else(|| meta.annotations.as_ref().and_then(|a| a.get(key)))
        .cloned()
}

/// A console allow-list as written in [`CONSOLE_ALLOW_ANNOTATION`]; any entry that is no
/// CIDR closes the console.
pub fn parse_allow_list(value: &str) -> Vec<ipnet::IpNet> {
    let parsed: Result<Vec<ipnet::IpNet>, _> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    parsed.unwrap_or_default()
}

/// The view of a Service; `None` when it lacks the kanmon labels (not a game deployment).
pub fn service_view(svc: &Service) -> Option<ServiceView> {
    let meta = &svc.metadata;
    let labels = meta.labels.as_ref()?;
    let instance = labels.get(INSTANCE_LABEL)?.clone();
    let zone = labels.get(ZONE_LABEL)?.clone();
    let has_http = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|ports| ports.iter().any(|p| p.name.as_deref() == Some(HTTP_PORT)));
    let fallback_to_draining = labels_and_annotations(meta, FALLBACK_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Some(ServiceView {
        key: ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone()?,
        ),
        instance,
        zone,
        has_http,
        fallback_to_draining,
        console_allow: labels_and_annotations(meta, CONSOLE_ALLOW_ANNOTATION)
            .map(|v| parse_allow_list(&v))
            .unwrap_or_default(),
    })
}

/// The view of an EndpointSlice; `None` when it names no Service.
pub fn slice_view(slice: &EndpointSlice) -> Option<SliceView> {
    let meta = &slice.metadata;
    let labels = meta.labels.as_ref()?;
    let service = labels.get(SERVICE_NAME_LABEL)?.clone();
    let labelled = labels.contains_key(INSTANCE_LABEL);
    let port = |name: &str| {
        slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
    };
    let endpoints = slice
        .endpoints
        .iter()
        .flatten()
        .filter_map(|ep| {
            let address: IpAddr = ep.addresses.first()?.parse().ok()?;
            let id = ep
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .or_else(|| ep.hostname.clone())
                .unwrap_or_else(|| address.to_string());
            let conditions = ep
                .conditions
                .as_ref()
                .map_or_else(Conditions::default, |c| Conditions {
                    ready: c.ready,
                    serving: c.serving,
                    terminating: c.terminating,
                });
            Some(EndpointView {
                id,
                address,
                conditions,
            })
        })
        .collect();
    Some(SliceView {
        key: ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone()?,
        ),
        service,
        address_type: AddressType::parse(&slice.address_type),
        labelled,
        http_port: port(HTTP_PORT),
        grpc_port: port(GRPC_PORT),
        console_port: port(CONSOLE_PORT),
        endpoints,
    })
}

/// The deployment of one Service and its slices. Nodes are sorted by id (so an unchanged
/// cluster maps to an equal spec, whatever the event order), and an endpoint listed twice
/// (dual-stack slices) keeps its first address in slice-name order. Slices without an `http`
/// port contribute no nodes: there is no address to route to.
pub fn deployment<'a>(
    service: &ServiceView,
    slices: impl IntoIterator<Item = &'a SliceView>,
    max_connections: Option<u64>,
) -> Result<DeploymentSpec, MappingError> {
    let name = || service.key.to_string();
    let instance = InstanceName::parse(&service.instance).map_err(|e| MappingError::Instance {
        service: name(),
        reason: e.to_string(),
    })?;
    let zone = Zone::parse(&service.zone).map_err(|e| MappingError::Zone {
        service: name(),
        reason: e.to_string(),
    })?;
    if !service.has_http {
        return Err(MappingError::NoHttpPort { service: name() });
    }
    let mut slices: Vec<&SliceView> = slices.into_iter().collect();
    slices.sort_by(|a, b| a.key.cmp(&b.key));
    let mut nodes: BTreeMap<&str, NodeSpec> = BTreeMap::new();
    for slice in slices {
        let Some(http) = slice.http_port else {
            continue;
        };
        for ep in &slice.endpoints {
            nodes.entry(ep.id.as_str()).or_insert_with(|| NodeSpec {
                id: ep.id.clone(),
                addr: SocketAddr::new(ep.address, http),
                grpc: slice.grpc_port.map(|p| SocketAddr::new(ep.address, p)),
                console: slice.console_port.map(|p| SocketAddr::new(ep.address, p)),
                state: node_state(ep.conditions),
            });
        }
    }
    Ok(DeploymentSpec {
        instance,
        zone,
        nodes: nodes.into_values().collect(),
        fallback_to_draining: service.fallback_to_draining,
        max_connections,
        console_allow: service.console_allow.clone(),
    })
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
