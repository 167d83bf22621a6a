use std::path::Path;

use super::*;
use crate::config::{DiscoveryKind, ProxyConfig};

#[test]
fn discovery_config_defaults_and_fields() {
    let cfg = ProxyConfig::parse("", Path::new("x.toml")).unwrap();
    assert!(cfg.discovery.namespaces.is_empty());
    assert_eq!(cfg.discovery.stale_after, Duration::from_secs(30));
    assert_eq!(cfg.discovery.kubeconfig, None);
    let cfg = ProxyConfig::parse(
        "[discovery]\nkind = \"kubernetes\"\nnamespaces = [\"games\", \"dev\"]\nstale_after = \"1m 5s\"\nkubeconfig = \"kube.yaml\"\n",
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(cfg.discovery.kind, DiscoveryKind::Kubernetes);
    assert_eq!(cfg.discovery.stale_after, Duration::from_secs(65));
    let source = KubernetesSource::new(&cfg.discovery, None);
    assert_eq!(source.streams().len(), 4);
    let err = ProxyConfig::parse("[discovery]\nnamespace = \"x\"\n", Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("namespace"), "{err}");
}

#[test]
fn all_namespaces_is_one_stream_per_kind() {
    let cfg =
        ProxyConfig::parse("[discovery]\nkind = \"kubernetes\"\n", Path::new("x.toml")).unwrap();
    let streams = KubernetesSource::new(&cfg.discovery, None).streams();
    assert_eq!(streams.len(), 2);
    assert!(streams.iter().all(|s| s.namespace.is_none()));
}
