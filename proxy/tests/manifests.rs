//! The Kubernetes manifests in configs/kubernetes/, checked offline: every document decodes
//! into its typed Kubernetes object (k8s-openapi), the RBAC grants only what discovery needs,
//! and the proxy Deployment probes the admin endpoints the proxy serves.
//! (`kubectl apply --dry-run=client` needs an API server for its discovery calls.)

use std::path::Path;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use serde::Deserialize;

/// Every document of every manifest, as (file, kind, raw value).
fn documents() -> Vec<(String, String, serde_json::Value)> {
    documents_in("")
}

/// The documents of `configs/kubernetes/<sub>` (not recursive, as `kubectl apply -f`).
fn documents_in(sub: &str) -> Vec<(String, String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/kubernetes")
        .join(sub);
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            out.push((path.display().to_string(), kind, value));
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned>(file: &str, v: &serde_json::Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_manifest_is_a_valid_typed_object() {
    let docs = documents();
    assert!(docs.len() >= 9, "found {} documents", docs.len());
    for (file, kind, v) in &docs {
        match kind.as_str() {
            "Namespace" => drop(typed::<Namespace>(file, v)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(file, v)),
            "ClusterRole" => drop(typed::<ClusterRole>(file, v)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(file, v)),
            "Role" => drop(typed::<Role>(file, v)),
            "RoleBinding" => drop(typed::<RoleBinding>(file, v)),
            "ConfigMap" => drop(typed::<ConfigMap>(file, v)),
            "Deployment" => drop(typed::<Deployment>(file, v)),
            "Service" => drop(typed::<Service>(file, v)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(file, v)),
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
}

/// Only `list` and `watch` (kube's watcher never `get`s), only on the two resources.
fn assert_list_watch_only(file: &str, rules: Vec<PolicyRule>) {
    assert_eq!(rules.len(), 2, "{file}");
    for rule in rules {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(verbs, ["list", "watch"], "{file}: verbs {:?}", rule.verbs);
        for resource in rule.resources.unwrap_or_default() {
            assert!(
                ["services", "endpointslices"].contains(&resource.as_str()),
                "{file}: {resource}"
            );
        }
    }
}

#[test]
fn rbac_grants_only_read_access_to_services_and_endpointslices() {
    let (file, _, v) = documents()
        .into_iter()
        .find(|(_, k, _)| k == "ClusterRole")
        .unwrap();
    let role: ClusterRole = typed(&file, &v);
    assert_list_watch_only(&file, role.rules.unwrap_or_default());
    // No cluster-wide access to Secrets, in any document.
    for (file, kind, v) in documents() {
        if kind == "ClusterRole" {
            let role: ClusterRole = typed(&file, &v);
            for rule in role.rules.unwrap_or_default() {
                assert!(
                    !rule
                        .resources
                        .unwrap_or_default()
                        .iter()
                        .any(|r| r == "secrets"),
                    "{file}"
                );
            }
        }
    }
}

/// Certificate Secrets: list and watch, in the proxy's own namespace only, bound to its
/// ServiceAccount.
#[test]
fn certificate_secrets_are_readable_in_the_proxys_namespace_only() {
    let docs = documents();
    let (file, _, v) = docs
        .iter()
        .find(|(_, k, v)| k == "Role" && v["metadata"]["name"] == "kanmon-proxy-certificates")
        .unwrap();
    let role: Role = typed(file, v);
    assert_eq!(role.metadata.namespace.as_deref(), Some("kanmon-system"));
    let rules = role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 1, "{file}");
    let mut verbs = rules[0].verbs.clone();
    verbs.sort();
    assert_eq!(verbs, ["list", "watch"], "{file}");
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["secrets".to_string()][..])
    );
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    let (file, _, v) = docs
        .iter()
        .find(|(_, k, v)| {
            k == "RoleBinding" && v["metadata"]["name"] == "kanmon-proxy-certificates"
        })
        .unwrap();
    let binding: RoleBinding = typed(file, v);
    assert_eq!(binding.metadata.namespace.as_deref(), Some("kanmon-system"));
    assert_eq!(binding.role_ref.name, "kanmon-proxy-certificates");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("kanmon-proxy", Some("kanmon-system"))
    );
    // The ConfigMap's proxy serves them (the default).
    let config = &docs.iter().find(|(_, k, _)| k == "ConfigMap").unwrap().2;
    let text = config["data"]["proxy.toml"].as_str().unwrap();
    let cfg: kanmon_proxy::config::ProxyConfig = toml::from_str(text).unwrap();
    assert!(cfg.discovery.certificate_secrets);
}

/// The variant for `discovery.namespaces`: a Role and its binding in a game namespace, for the
/// same ServiceAccount, and no cluster-wide grant at all.
#[test]
fn namespaced_rbac_variant_is_a_role_with_list_and_watch() {
    let docs = documents_in("rbac-namespaced");
    assert!(
        !docs.iter().any(|(_, k, _)| k.starts_with("Cluster")),
        "{docs:?}"
    );
    let (file, _, v) = docs.iter().find(|(_, k, _)| k == "Role").unwrap();
    let role: Role = typed(file, v);
    let ns = role.metadata.namespace.clone().unwrap();
    assert_list_watch_only(file, role.rules.unwrap_or_default());
    let (file, _, v) = docs.iter().find(|(_, k, _)| k == "RoleBinding").unwrap();
    let binding: RoleBinding = typed(file, v);
    assert_eq!(binding.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("kanmon-proxy", Some("kanmon-system"))
    );
    for (file, kind, v) in &docs {
        if kind == "ServiceAccount" {
            drop(typed::<ServiceAccount>(file, v));
        }
    }
}

/// The example game deployment lives in the namespace the default owner rule gives it.
#[test]
fn example_game_is_in_its_owning_namespace() {
    let default = kanmon_proxy::config::Discovery::default();
    for (file, kind, v) in documents() {
        if kind != "Service" || v["metadata"]["labels"]["kanmon.dev/instance"].is_null() {
            continue;
        }
        let instance = v["metadata"]["labels"]["kanmon.dev/instance"]
            .as_str()
            .unwrap();
        let owner = default.instance_namespace.replace("{instance}", instance);
        assert_eq!(v["metadata"]["namespace"], owner.as_str(), "{file}");
    }
}

#[test]
fn proxy_deployment_probes_the_admin_endpoints() {
    let (file, _, v) = documents()
        .into_iter()
        .find(|(_, k, _)| k == "Deployment")
        .unwrap();
    let deployment: Deployment = typed(&file, &v);
    let pod = deployment.spec.template.spec.unwrap();
    let proxy = &pod.containers[0];
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(path(&proxy.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(path(&proxy.liveness_probe).as_deref(), Some("/healthz"));
    // What the ConfigMap's proxy.toml reads is mounted, from the Secrets the README names.
    let mounts = proxy.volume_mounts.clone().unwrap_or_default();
    let volumes = pod.volumes.clone().unwrap_or_default();
    for (dir, secret) in [
        ("/etc/kanmon/certs", "kanmon-proxy-certs"),
        ("/etc/kanmon/ticket-keys", "kanmon-ticket-keys"),
    ] {
        let mount = mounts
            .iter()
            .find(|m| m.mount_path == dir)
            .unwrap_or_else(|| panic!("{dir} not mounted"));
        assert_eq!(mount.read_only, Some(true), "{dir}");
        let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
        let from = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref());
        assert_eq!(from, Some(secret), "{dir}");
    }
}
