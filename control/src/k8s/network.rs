//! NetworkPolicies of a deployment: deny everything, then open exactly the paths the platform
//! uses. Policies are additive, so the deny-all policy plus one allow policy per component is
//! the whole rule set; no policy names another tenant's namespace, so tenants never reach each
//! other.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
        NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    names::{labels, selector, Names, Role, COMPONENT_LABEL},
    settings::{KubeSettings, CONSOLE_PORT, GRPC_PORT, HTTP_PORT},
    DatabaseFlavor,
};

/// PostgreSQL's port.
pub(super) const POSTGRES_PORT: i32 = 5432;
/// The CloudNativePG instance manager's status port, polled by the operator.
const CNPG_STATUS_PORT: i32 = 8000;

fn match_labels(l: BTreeMap<String, String>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(l),
        ..LabelSelector::default()
    })
}

fn namespace(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: match_labels(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            name.to_string(),
        )])),
        ..NetworkPolicyPeer::default()
    }
}

fn pods(instance: &str, role: Role) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: match_labels(selector(instance, role)),
        ..NetworkPolicyPeer::default()
    }
}

pub(super) fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

/// The cluster DNS (kube-dns / CoreDNS in kube-system, both label their pods `k8s-app=kube-dns`).
pub(super) fn dns() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: match_labels(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                "kube-system".to_string(),
            )])),
            pod_selector: match_labels(BTreeMap::from([(
                "k8s-app".to_string(),
                "kube-dns".to_string(),
            )])),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".into()),
                ..NetworkPolicyPort::default()
            },
            tcp(53),
        ]),
    }
}

fn policy(
    names: &Names,
    instance: &str,
    name: &str,
    role: Option<Role>,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(instance, role)),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match role {
                Some(r) => LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        COMPONENT_LABEL.to_string(),
                        r.as_str().to_string(),
                    )])),
                    ..LabelSelector::default()
                },
                None => LabelSelector::default(),
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// The policies, deny-all first.
pub(super) fn policies(
    names: &Names,
    instance: &str,
    flavor: DatabaseFlavor,
    settings: &KubeSettings,
) -> Vec<NetworkPolicy> {
    let deny = policy(names, instance, "default-deny", None, vec![], vec![]);
    let nodes = policy(
        names,
        instance,
        "nodes",
        Some(Role::Node),
        vec![
            // Game traffic and the console come only through the edge (which applies the
            // console's allow-list).
            NetworkPolicyIngressRule {
                from: Some(vec![namespace(&settings.edge_namespace)]),
                ports: Some(vec![tcp(HTTP_PORT), tcp(GRPC_PORT), tcp(CONSOLE_PORT)]),
            },
            // The control plane checks health and reads metrics on the HTTP port.
            NetworkPolicyIngressRule {
                from: Some(vec![namespace(&settings.control_namespace)]),
                ports: Some(vec![tcp(HTTP_PORT)]),
            },
        ],
        vec![
            NetworkPolicyEgressRule {
                to: Some(vec![pods(instance, Role::Database)]),
                ports: Some(vec![tcp(POSTGRES_PORT)]),
            },
            dns(),
        ],
    );
    let mut db_ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![
            pods(instance, Role::Node),
            pods(instance, Role::Export),
        ]),
        ports: Some(vec![tcp(POSTGRES_PORT)]),
    }];
    let mut db_egress = vec![dns()];
    if flavor == DatabaseFlavor::CloudNativePg {
        db_ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![namespace(&settings.cnpg_operator_namespace)]),
            ports: Some(vec![tcp(CNPG_STATUS_PORT)]),
        });
        // CloudNativePG's instance manager talks to the API server, whose address is no pod
        // and no namespace: allowed by port only.
        db_egress.push(NetworkPolicyEgressRule {
            to: None,
            ports: Some(vec![tcp(443), tcp(6443)]),
        });
    }
    let database = policy(
        names,
        instance,
        "database",
        Some(Role::Database),
        db_ingress,
        db_egress,
    );
    let export = policy(
        names,
        instance,
        "export",
        Some(Role::Export),
        vec![],
        vec![
            NetworkPolicyEgressRule {
                to: Some(vec![pods(instance, Role::Database)]),
                ports: Some(vec![tcp(POSTGRES_PORT)]),
            },
            dns(),
        ],
    );
    vec![deny, nodes, database, export]
}
