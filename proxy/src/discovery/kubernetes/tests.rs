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
    // The tenancy keys: defaults, explicit values, and errors that name the key.
    let cfg = ProxyConfig::parse("", Path::new("x.toml")).unwrap();
    assert_eq!(cfg.discovery.instance_namespace, "kanmon-{instance}");
    assert_eq!(cfg.discovery.allowed_cidrs.len(), 5);
    let cfg = ProxyConfig::parse(
        "[discovery]\ninstance_namespace = \"games\"\nowners = { alpha = \"team-a\" }\nallowed_cidrs = [\"10.244.0.0/16\", \"fd00::/64\"]\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let policy = policy::Policy::from_config(&cfg.discovery);
    assert!(policy.owns("team-a", "alpha") && policy.owns("games", "beta"));
    assert!(policy.admits("10.244.3.4".parse().unwrap()));
    assert!(!policy.admits("10.0.0.1".parse().unwrap()));
    let err = ProxyConfig::parse(
        "[discovery]\nallowed_cidrs = [\"10.0.0.0/33\"]\n",
        Path::new("x.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("allowed_cidrs"), "{err}");
    let err = ProxyConfig::parse(
        "[discovery]\ninstance_namespace = \"\"\n",
        Path::new("x.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("instance_namespace"), "{err}");
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

mod publisher {
    use std::sync::Arc;

    use kanmon_router::{DeploymentSpec, HealthTable, InstanceName, NodeSpec, NodeState, Zone};

    use crate::{discovery::Publisher, metrics::Metrics};

    fn publisher() -> (Publisher, Metrics) {
        let metrics = Metrics::new().unwrap();
        (
            Publisher::new(Arc::new(HealthTable::default()), metrics.clone()),
            metrics,
        )
    }

    fn spec(zone: &str, states: &[NodeState]) -> DeploymentSpec {
        DeploymentSpec {
            instance: InstanceName::parse("alpha").unwrap(),
            zone: Zone::parse(zone).unwrap(),
            nodes: states
                .iter()
                .enumerate()
                .map(|(i, s)| NodeSpec {
                    id: format!("alpha-{i}"),
                    addr: format!("127.0.0.1:{}", 7350 + i).parse().unwrap(),
                    grpc: None,
                    console: None,
                    state: *s,
                })
                .collect(),
            fallback_to_draining: false,
            max_connections: None,
            console_allow: Vec::new(),
        }
    }

    fn rendered(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).unwrap()
    }

    #[test]
    fn staleness_follows_contact_not_errors() {
        let (p, _) = publisher();
        p.unreachable("kubernetes", &"down");
        assert!(p.stale().is_none(), "no limit configured: never stale");
        p.set_stale_after(std::time::Duration::ZERO);
        let stale = p.stale().expect("out of contact past the limit");
        assert!(
            stale.to_string().contains("last good node table"),
            "{stale}"
        );
        p.in_sync("kubernetes");
        assert!(p.stale().is_none());
        // A bad event is an error, not a lost contact.
        p.error("kubernetes", &"malformed");
        assert!(p.stale().is_none());
    }

    #[test]
    fn node_gauges_follow_per_deployment_publishes() {
        use NodeState::*;
        let (p, metrics) = publisher();
        p.publish_deployment("kubernetes", spec("us-east1", &[Ready, Draining, Ready]));
        let text = rendered(&metrics);
        assert!(
            text.contains(r#"kanmon_nodes{deployment="alpha",state="ready",zone="us-east1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kanmon_nodes{deployment="alpha",state="draining",zone="us-east1"} 1"#),
            "{text}"
        );
        // Moving zone drops the old series.
        p.publish_deployment("kubernetes", spec("eu-west1", &[Unhealthy]));
        let text = rendered(&metrics);
        assert!(!text.contains(r#"zone="us-east1""#), "{text}");
        assert!(
            text.contains(
                r#"kanmon_nodes{deployment="alpha",state="unhealthy",zone="eu-west1"} 1"#
            ),
            "{text}"
        );
        p.remove_deployment("kubernetes", "alpha");
        assert!(!rendered(&metrics).contains("kanmon_nodes{"));
        // A full publish rebuilds them.
        p.publish_all("kubernetes", vec![spec("us-east1", &[Ready])]);
        assert!(rendered(&metrics)
            .contains(r#"kanmon_nodes{deployment="alpha",state="ready",zone="us-east1"} 1"#));
    }
}
