//! Names and labels shared by the objects, the applier and the observer.

use std::collections::BTreeMap;

use super::ObjectError;

/// The edge reads the instance from this label of a Service (and of its EndpointSlices, which
/// the EndpointSlice controller mirrors). Only the node Service and the Namespace carry it: any
/// other Service with it would claim the instance at the edge.
pub const INSTANCE_LABEL: &str = "kanmon.dev/instance";
/// The edge reads the zone from this label.
pub const ZONE_LABEL: &str = "kanmon.dev/zone";
/// What part of a deployment an object is (`node`, `database`, `export`).
pub const COMPONENT_LABEL: &str = "kanmon.dev/component";
/// Every object the driver writes carries `app.kubernetes.io/managed-by` with this value.
pub const MANAGED_BY: &str = "kanmon-control";
/// Pod-template annotation: the spec generation the pod runs.
pub const GENERATION_ANNOTATION: &str = "kanmon.dev/generation";
/// Pod-template annotation: a hash of the node Secret, so a changed key, config or database URL
/// changes the template (a new StatefulSet revision) even though the Secret keeps its name.
pub const SECRET_HASH_ANNOTATION: &str = "kanmon.dev/secret-hash";
/// The edge's opt-in for one-node deployments (see the proxy's Kubernetes discovery).
pub const FALLBACK_ANNOTATION: &str = "kanmon.dev/fallback-to-draining";
/// The console allow-list on the nodes' Service, comma-separated CIDRs (the edge's
/// `CONSOLE_ALLOW_ANNOTATION`; absent or empty: the console is closed).
pub(super) const CONSOLE_ALLOW_ANNOTATION: &str =
    kanmon_proxy::discovery::kubernetes::mapping::CONSOLE_ALLOW_ANNOTATION;

/// A component of a deployment: the value of [`COMPONENT_LABEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Game-server pods.
    Node,
    /// The PostgreSQL pods.
    Database,
    /// `pg_dump` Job pods.
    Export,
    /// Build Job pods.
    Build,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Database => "database",
            Self::Export => "export",
            Self::Build => "build",
        }
    }
}

/// Labels of every object of `instance` (not the edge's instance label: see [`INSTANCE_LABEL`]).
pub fn labels(instance: &str, role: Option<Role>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "kanmon".to_string(),
        ),
    ]);
    if let Some(role) = role {
        l.insert(COMPONENT_LABEL.into(), role.as_str().into());
    }
    l
}

pub(super) use crate::driver::env_name;

/// The selector of one component's pods.
pub(super) fn selector(instance: &str, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (COMPONENT_LABEL.to_string(), role.as_str().to_string()),
    ])
}

/// Names of a deployment's objects.
pub(super) struct Names {
    pub(super) namespace: String,
    /// StatefulSet and Service of the nodes: the pods are `{instance}-N`, the node ids of the
    /// domain, so the edge's per-node counters stay one per node.
    pub(super) nodes: String,
    pub(super) node_secret: String,
    pub(super) database: String,
    pub(super) database_secret: String,
}

/// DNS-1123 labels (namespaces, Services) are at most 63 characters.
const LABEL_MAX: usize = 63;
/// A StatefulSet's pods get `controller-revision-hash: {name}-{10 chars}` as a label (≤ 63).
const STATEFULSET_MAX: usize = 52;

fn check(what: &'static str, name: String, max: usize) -> Result<String, ObjectError> {
    if name.len() > max {
        return Err(ObjectError::NameTooLong {
            what,
            len: name.len(),
            name,
            max,
        });
    }
    Ok(name)
}

impl Names {
    pub(super) fn new(prefix: &str, instance: &str) -> Result<Self, ObjectError> {
        Ok(Self {
            namespace: check("namespace", format!("{prefix}{instance}"), LABEL_MAX)?,
            nodes: check("statefulset", instance.to_string(), STATEFULSET_MAX)?,
            node_secret: format!("{instance}-node"),
            database: check(
                "database statefulset",
                format!("{instance}-db"),
                STATEFULSET_MAX,
            )?,
            database_secret: format!("{instance}-db-credentials"),
        })
    }
}
