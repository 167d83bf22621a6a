//! The API access the driver needs, as data: the control plane's ClusterRole in
//! `configs/kubernetes/control-plane/` must grant exactly this (a test compares them), so a new
//! API call without a grant — or a grant nothing uses — fails in CI rather than in a cluster.
//!
//! A ClusterRole, because the driver creates the namespaces it then writes into: no Role can
//! name a namespace that does not exist yet.

/// One rule: API group, resource, verbs, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource (plural; `pods/log` style for a subresource).
    pub resource: &'static str,
    /// Verbs, sorted.
    pub verbs: &'static [&'static str],
    /// Why the driver needs them.
    pub why: &'static str,
}

/// Everything the driver calls. Server-side apply is a `patch` (it creates missing objects
/// too); the driver never reads Secrets back, so it has no `get` on them.
pub const GRANTS: &[Grant] = &[
    Grant {
        group: "",
        resource: "namespaces",
        verbs: &["delete", "patch"],
        why: "apply a deployment's namespace; deleting it deletes the deployment",
    },
    Grant {
        group: "",
        resource: "secrets",
        verbs: &["patch"],
        why: "apply the node Secret and the database credentials (never read back)",
    },
    Grant {
        group: "",
        resource: "services",
        verbs: &["patch"],
        why: "apply the node Service the edge discovers and the database Service",
    },
    Grant {
        group: "",
        resource: "pods",
        verbs: &["delete", "list", "watch"],
        why: "observe node pods; find a Job's pod; delete one pod per OnDelete rolling step",
    },
    Grant {
        group: "",
        resource: "pods/log",
        verbs: &["get"],
        why: "read an export Job's pg_dump output and a build Job's log",
    },
    Grant {
        group: "batch",
        resource: "jobs",
        verbs: &["delete", "list", "patch", "watch"],
        why: "apply an export's pg_dump Job or a build Job, wait for it to end; delete a build Job a restart interrupted",
    },
    Grant {
        group: "apps",
        resource: "statefulsets",
        verbs: &["list", "patch", "watch"],
        why: "apply the node and database StatefulSets; observe observedGeneration",
    },
    Grant {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["patch"],
        why: "apply the deny-by-default policies of a deployment",
    },
    Grant {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["patch"],
        why: "apply the maxUnavailable: 1 budget",
    },
    Grant {
        group: "postgresql.cnpg.io",
        resource: "clusters",
        verbs: &["patch"],
        why: "apply the CloudNativePG Cluster where that operator is installed",
    },
];

/// What the certificate keeper calls in the edge's namespace (`--edge-namespace`), granted by
/// a Role there (`kanmon-control-certificates`) rather than the ClusterRole: the keeper reads
/// its certificate Secrets back, and no tenant Secret is readable.
pub const EDGE_GRANTS: &[Grant] = &[Grant {
    group: "",
    resource: "secrets",
    verbs: &["delete", "get", "patch"],
    why: "apply, read back and delete the kubernetes.io/tls Secret of each hostname",
}];
