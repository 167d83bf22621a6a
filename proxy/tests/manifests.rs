//! The Kubernetes manifests in configs/kubernetes/, checked offline: every document decodes
//! into its typed Kubernetes object (k8s-openapi), the RBAC grants only what discovery needs,
//! and the proxy Deployment probes the admin endpoints the proxy serves.
//! (`kubectl apply --dry-run=client` needs an API server for its discovery calls.)

use std::path::Path;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::Deserialize;

/// Every document of every manifest, as (file, kind, raw value).
fn documents() -> Vec<(String, String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/kubernetes");
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
            "ConfigMap" => drop(typed::<ConfigMap>(file, v)),
            "Deployment" => drop(typed::<Deployment>(file, v)),
            "Service" => drop(typed::<Service>(file, v)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(file, v)),
            other => panic!("{file}: unexpected kind {other:?}"),
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
    for rule in role.rules.unwrap_or_default() {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(
            verbs,
            ["get", "list", "watch"],
            "{file}: verbs {:?}",
            rule.verbs
        );
        for resource in rule.resources.unwrap_or_default() {
            assert!(
                ["services", "endpointslices"].contains(&resource.as_str()),
                "{file}: {resource}"
            );
        }
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
