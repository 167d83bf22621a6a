//! The kinds the fixture serves: where each lives on the wire, and the discovery documents
//! (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`) clients such as kubectl read first.

use serde_json::{json, Value};

/// A kind of object the fixture stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    Slice,
    Namespace,
    Pod,
    StatefulSet,
    Secret,
    NetworkPolicy,
    Pdb,
    /// CloudNativePG's `Cluster`: served only once [`super::ApiFixture::serve_cnpg`] says the
    /// operator is installed.
    CnpgCluster,
    Job,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Service,
        Kind::Slice,
        Kind::Namespace,
        Kind::Pod,
        Kind::StatefulSet,
        Kind::Secret,
        Kind::NetworkPolicy,
        Kind::Pdb,
        Kind::CnpgCluster,
        Kind::Job,
    ];

    pub(super) fn list_kind(self) -> String {
        format!("{}List", self.kind())
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Namespace | Kind::Pod | Kind::Secret => "v1",
            Kind::Slice => "discovery.k8s.io/v1",
            Kind::StatefulSet => "apps/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::Pdb => "policy/v1",
            Kind::CnpgCluster => "postgresql.cnpg.io/v1",
            Kind::Job => "batch/v1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Slice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::StatefulSet => "StatefulSet",
            Kind::Secret => "Secret",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Pdb => "PodDisruptionBudget",
            Kind::CnpgCluster => "Cluster",
            Kind::Job => "Job",
        }
    }

    pub(super) fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Slice => "endpointslices",
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::StatefulSet => "statefulsets",
            Kind::Secret => "secrets",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Pdb => "poddisruptionbudgets",
            Kind::CnpgCluster => "clusters",
            Kind::Job => "jobs",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Whether the API server bumps `metadata.generation` on spec changes.
    pub(super) fn has_spec(self) -> bool {
        matches!(
            self,
            Kind::StatefulSet
                | Kind::Pdb
                | Kind::NetworkPolicy
                | Kind::Service
                | Kind::CnpgCluster
                | Kind::Job
        )
    }

    /// The kind served at `/{prefix}/{plural}` (`prefix` is `api/v1` or `apis/{g}/{v}`).
    pub(super) fn find(prefix: &str, plural: &str, cnpg: bool) -> Option<Kind> {
        served(cnpg).find(|k| k.plural() == plural && prefix_of(k.api_version()) == prefix)
    }
}

fn prefix_of(api_version: &str) -> String {
    if api_version.contains('/') {
        format!("apis/{api_version}")
    } else {
        format!("api/{api_version}")
    }
}

/// The kinds served (CloudNativePG's only when its operator is "installed").
fn served(cnpg: bool) -> impl Iterator<Item = Kind> {
    Kind::ALL
        .into_iter()
        .filter(move |k| cnpg || *k != Kind::CnpgCluster)
}

/// The discovery document at `path`, if it is one.
pub(super) fn discovery(path: &str, cnpg: bool) -> Option<Value> {
    let path = path.trim_matches('/');
    let groups: Vec<&str> = {
        let mut g: Vec<&str> = served(cnpg)
            .map(|k| k.api_version())
            .filter(|v| v.contains('/'))
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    };
    match path {
        "api" => Some(
            json!({"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        "apis" => Some(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups.iter().map(|gv| {
            let (g, v) = gv.split_once('/').unwrap_or_default();
            json!({"name": g, "versions": [{"groupVersion": gv, "version": v}],
                "preferredVersion": {"groupVersion": gv, "version": v}})
        }).collect::<Vec<_>>()}),
        ),
        _ => {
            let gv = path
                .strip_prefix("api/")
                .or_else(|| path.strip_prefix("apis/"))?;
            let resources: Vec<Value> = served(cnpg)
                .filter(|k| k.api_version() == gv)
                .map(|k| {
                    json!({"name": k.plural(), "singularName": k.kind().to_lowercase(),
                    "namespaced": k.namespaced(), "kind": k.kind(),
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
                })
                .collect();
            (!resources.is_empty()).then(|| {
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": resources})
            })
        }
    }
}
