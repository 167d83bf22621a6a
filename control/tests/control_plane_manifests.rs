//! The control plane's manifests in configs/kubernetes/control-plane/, checked offline: every
//! document decodes into its typed object, the ClusterRole grants exactly the driver's table
//! (`k8s::rbac::GRANTS`) and that table covers every object the driver applies, and the
//! Deployment runs under the bound ServiceAccount in the namespace the nodes' NetworkPolicies
//! admit.

use std::{collections::BTreeSet, path::Path, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, PersistentVolumeClaim, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kanmon_control::{
    domain::{CreateDeployment, Deployment as Dep, DeploymentType, Keys, Timestamp},
    k8s::{
        desired,
        rbac::{EDGE_GRANTS, GRANTS},
        DatabaseFlavor, DesiredInput, KubeSettings,
    },
};
use kanmon_router::{Catalog, InstanceName, Version, Zone};
use serde::Deserialize;
use serde_json::Value;

fn documents() -> Vec<(String, String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/kubernetes/control-plane");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap();
            if !value.is_null() {
                let kind = value["kind"].as_str().unwrap_or_default().to_string();
                out.push((path.display().to_string(), kind, value));
            }
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned>(file: &str, v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn one<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let docs = documents();
    let (file, _, v) = docs.iter().find(|(_, k, _)| k == kind).unwrap();
    typed(file, v)
}

#[test]
fn every_manifest_is_a_valid_typed_object() {
    let docs = documents();
    assert_eq!(
        docs.len(),
        9,
        "{:?}",
        docs.iter().map(|d| &d.1).collect::<Vec<_>>()
    );
    for (file, kind, v) in &docs {
        match kind.as_str() {
            "Namespace" => drop(typed::<Namespace>(file, v)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(file, v)),
            "ClusterRole" => drop(typed::<ClusterRole>(file, v)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(file, v)),
            "Role" => drop(typed::<Role>(file, v)),
            "RoleBinding" => drop(typed::<RoleBinding>(file, v)),
            "PersistentVolumeClaim" => drop(typed::<PersistentVolumeClaim>(file, v)),
            "Deployment" => drop(typed::<Deployment>(file, v)),
            "Service" => drop(typed::<Service>(file, v)),
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
}

type Rule = (String, String, Vec<String>);

fn granted() -> BTreeSet<Rule> {
    let role: ClusterRole = one("ClusterRole");
    let mut out = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert!(!verbs.iter().any(|v| v == "*"), "wildcard verbs");
        for g in rule.api_groups.unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                assert!(
                    !out.iter().any(|(og, or, _): &Rule| *og == g && *or == r),
                    "{g}/{r} twice"
                );
                out.insert((g.clone(), r, verbs.clone()));
            }
        }
    }
    out
}

#[test]
fn the_cluster_role_grants_exactly_the_drivers_table() {
    let want: BTreeSet<Rule> = GRANTS
        .iter()
        .map(|g| {
            (
                g.group.to_string(),
                g.resource.to_string(),
                g.verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(granted(), want);
    // Secrets are written, never read.
    assert!(GRANTS
        .iter()
        .filter(|g| g.resource == "secrets")
        .all(|g| g.verbs == ["patch"]));
}

/// The certificate keeper's Role: exactly `EDGE_GRANTS`, in the edge's namespace (the
/// driver's default `--edge-namespace`), bound to the control plane's ServiceAccount.
#[test]
fn the_edge_role_grants_exactly_the_keepers_table_in_the_edge_namespace() {
    let role: Role = one("Role");
    let edge = KubeSettings::default().edge_namespace;
    assert_eq!(role.metadata.namespace.as_deref(), Some(edge.as_str()));
    let mut got = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        assert!(rule.resource_names.is_none());
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        for g in rule.api_groups.unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                got.insert((g.clone(), r, verbs.clone()));
            }
        }
    }
    let want: BTreeSet<Rule> = EDGE_GRANTS
        .iter()
        .map(|g| {
            (
                g.group.to_string(),
                g.resource.to_string(),
                g.verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let binding: RoleBinding = one("RoleBinding");
    assert_eq!(binding.metadata.namespace.as_deref(), Some(edge.as_str()));
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", role.metadata.name.as_deref().unwrap())
    );
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("kanmon-control", Some("kanmon-control"))
    );
}

fn deployment() -> Dep {
    let v: Version = "3.35.0".parse().unwrap();
    Dep::create(
        CreateDeployment {
            org: "o".into(),
            title: "t".into(),
            instance: InstanceName::parse("alpha").unwrap(),
            zone: Zone::parse("us-east1").unwrap(),
            kind: DeploymentType::Production,
            version: v,
            node_cpus: 2,
            db_cpus: 1,
            delete_protection: None,
        },
        &Catalog::new(vec![v]),
        &[(Zone::parse("us-east1").unwrap(), false)],
        "kanmon.test",
        Keys {
            server_key: "s".into(),
            runtime_key: "r".into(),
        },
        "ann",
        Timestamp(0),
    )
    .unwrap()
}

#[test]
fn the_table_covers_every_object_the_driver_applies() {
    let d = deployment();
    let settings = KubeSettings {
        grace: Duration::from_secs(30),
        ..KubeSettings::default()
    };
    let grants = granted();
    let allows = |group: &str, resource: &str, verb: &str| {
        grants
            .iter()
            .any(|(g, r, v)| g == group && r == resource && v.iter().any(|x| x == verb))
    };
    for flavor in [DatabaseFlavor::StatefulSet, DatabaseFlavor::CloudNativePg] {
        let set = desired(
            DesiredInput {
                deployment: &d,
                spec: &d.spec,
                generation: 1,
                database: flavor,
                database_password: "pw",
            },
            &settings,
        )
        .unwrap();
        for o in &set.objects {
            assert!(
                allows(&o.resource.group, &o.resource.plural, "patch"),
                "no patch on {}/{}",
                o.resource.group,
                o.resource.plural
            );
        }
    }
    // The applier's deletes and the watcher's lists and watches.
    assert!(allows("", "namespaces", "delete") && allows("", "pods", "delete"));
    // The export: its Job applied and waited for, its output read from the pod's log.
    assert!(allows("batch", "jobs", "patch") && allows("", "pods/log", "get"));
    for (g, r) in [("", "pods"), ("apps", "statefulsets"), ("batch", "jobs")] {
        assert!(allows(g, r, "list") && allows(g, r, "watch"), "{r}");
    }
}

#[test]
fn the_control_plane_runs_as_the_bound_account_in_the_admitted_namespace() {
    let ns: Namespace = one("Namespace");
    let name = ns.metadata.name.unwrap();
    assert_eq!(name, KubeSettings::default().control_namespace);
    let sa: ServiceAccount = one("ServiceAccount");
    assert_eq!(sa.metadata.namespace.as_deref(), Some(name.as_str()));
    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    let role: ClusterRole = one("ClusterRole");
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        (sa.metadata.name.as_deref().unwrap(), Some(name.as_str()))
    );
    let dep: Deployment = one("Deployment");
    assert_eq!(dep.metadata.namespace.as_deref(), Some(name.as_str()));
    let spec = dep.spec;
    // One writer of the SQLite database, never two during a rollout.
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "serve");
    assert!(args.iter().any(|a| a == "--driver=kubernetes"));
    // Certificates are kept (as Secrets in the edge's namespace), their CA on the volume.
    assert!(
        args.iter()
            .any(|a| a.starts_with("--cert-dir=/var/lib/kanmon/")),
        "{args:?}"
    );
    let probe = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz"));
}
