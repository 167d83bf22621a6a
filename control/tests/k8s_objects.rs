//! The Kubernetes driver's desired objects: golden files (regenerate with
//! `KANMON_UPDATE_GOLDEN=1 cargo test -p kanmon-control --test k8s_objects`), every object
//! round-tripping through its k8s-openapi type without losing a field, and the rules the
//! objects must keep.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    batch::v1::Job,
    core::v1::{Namespace, Secret, Service},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
};
use kanmon_control::{
    domain::{CreateDeployment, Deployment, DeploymentType, Keys, Timestamp},
    k8s::{desired, export_job, DatabaseFlavor, DesiredInput, KubeSettings, ObjectError},
};
use kanmon_router::{Catalog, InstanceName, Version, Zone};
use serde_json::Value;

fn deployment(instance: &str, kind: DeploymentType, node_cpus: u32) -> Deployment {
    let v: Version = "3.35.0".parse().unwrap();
    let mut d = Deployment::create(
        CreateDeployment {
            org: "acme".into(),
            title: "rpg".into(),
            instance: InstanceName::parse(instance).unwrap(),
            zone: Zone::parse("us-east1").unwrap(),
            kind,
            version: v,
            node_cpus,
            db_cpus: 2,
            delete_protection: None,
        },
        &Catalog::new(vec![v]),
        &[(Zone::parse("us-east1").unwrap(), false)],
        "kanmon.test",
        Keys {
            server_key: "server-key-value".into(),
            runtime_key: "runtime-key-value".into(),
        },
        "ann",
        Timestamp(0),
    )
    .unwrap();
    d.spec.vars = BTreeMap::from([("game.mode".into(), "ranked".into())]);
    d.spec.config = BTreeMap::from([("session.token_expiry_sec".into(), "7200".into())]);
    d.spec.secret_config = BTreeMap::from([("social.steam.app_key".into(), "steam-secret".into())]);
    d.generation = 4;
    d
}

fn settings() -> KubeSettings {
    KubeSettings {
        grace: Duration::from_secs(30),
        pre_stop: Duration::from_secs(5),
        ..KubeSettings::default()
    }
}

/// The object set as JSON, one value per object.
fn objects(d: &Deployment, flavor: DatabaseFlavor, s: &KubeSettings) -> Vec<Value> {
    let set = desired(
        DesiredInput {
            deployment: d,
            spec: &d.spec,
            generation: d.generation,
            database: flavor,
            database_password: "db-pass/word",
        },
        s,
    )
    .unwrap();
    set.objects
        .iter()
        .map(|o| serde_json::to_value(&o.object).unwrap())
        .collect()
}

fn golden(name: &str, got: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/k8s")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("KANMON_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set KANMON_UPDATE_GOLDEN=1 to write it)",
            path.display()
        )
    });
    assert_eq!(
        text,
        want,
        "{} differs (set KANMON_UPDATE_GOLDEN=1 to accept the change)",
        path.display()
    );
}

/// Decodes into the typed object and encodes again: a misspelt or misplaced field would be
/// dropped by the typed decoder and show up as a difference.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, v, "lost in the round trip of {}", v["kind"]);
}

fn check_types(objs: &[Value]) {
    for v in objs {
        match v["kind"].as_str().unwrap() {
            "Namespace" => round_trips::<Namespace>(v),
            "Secret" => round_trips::<Secret>(v),
            "Service" => round_trips::<Service>(v),
            "StatefulSet" => round_trips::<StatefulSet>(v),
            "NetworkPolicy" => round_trips::<NetworkPolicy>(v),
            "PodDisruptionBudget" => round_trips::<PodDisruptionBudget>(v),
            "Cluster" => {
                assert_eq!(v["apiVersion"], "postgresql.cnpg.io/v1");
                assert_eq!(v["spec"]["instances"], 1);
                assert!(v["spec"]["storage"]["size"].is_string());
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

fn kinds(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|v| {
            format!(
                "{}/{}",
                v["kind"].as_str().unwrap(),
                v["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn production_with_a_statefulset_database() {
    let d = deployment("alpha", DeploymentType::Production, 2);
    let objs = objects(&d, DatabaseFlavor::StatefulSet, &settings());
    check_types(&objs);
    assert_eq!(
        kinds(&objs),
        [
            "Namespace/kanmon-alpha",
            "Secret/alpha-db-credentials",
            "Secret/alpha-node",
            "NetworkPolicy/default-deny",
            "NetworkPolicy/nodes",
            "NetworkPolicy/database",
            "NetworkPolicy/export",
            "Service/alpha-db",
            "StatefulSet/alpha-db",
            "Service/alpha",
            "PodDisruptionBudget/alpha",
            "StatefulSet/alpha",
        ]
    );
    golden("production-statefulset-db", &Value::Array(objs));
}

#[test]
fn development_with_cloudnativepg() {
    let mut d = deployment("beta", DeploymentType::Development, 1);
    d.fallback_to_draining = true;
    d.spec.image = Some("registry.example/beta-game:7".into());
    let s = KubeSettings {
        storage_class: Some("fast-ssd".into()),
        ..settings()
    };
    let objs = objects(&d, DatabaseFlavor::CloudNativePg, &s);
    check_types(&objs);
    assert!(kinds(&objs).contains(&"Cluster/beta-db".to_string()));
    assert!(!kinds(&objs).iter().any(|k| k == "StatefulSet/beta-db"));
    golden("development-cnpg", &Value::Array(objs));
}

#[test]
fn export_job_dumps_the_database() {
    let job = export_job(&settings(), "alpha", DatabaseFlavor::CloudNativePg, 17).unwrap();
    let v = serde_json::to_value(&job).unwrap();
    round_trips::<Job>(&v);
    let c = &v["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"][0], "pg_dump");
    assert!(c["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "PGHOST" && e["value"] == "alpha-db-rw"));
    // The password comes from the Secret, never inline.
    assert!(!v.to_string().contains("db-pass"));
    golden("export-job", &v);
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

#[test]
fn nodes_follow_the_cpu_tier_and_the_timing_contract() {
    for (kind, cpus, replicas, per_pod) in [
        (DeploymentType::Production, 1, 1, "1"),
        (DeploymentType::Production, 2, 2, "1"),
        (DeploymentType::Development, 2, 1, "2"),
    ] {
        let d = deployment("alpha", kind, cpus);
        let objs = objects(&d, DatabaseFlavor::StatefulSet, &settings());
        let sts = find(&objs, "StatefulSet", "alpha");
        assert_eq!(sts["spec"]["replicas"], replicas, "{kind} {cpus}");
        assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
        let pod = &sts["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["resources"]["limits"]["cpu"], per_pod);
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthcheck");
        // The grace counts from the start of preStop: 5 s pause + the deployment's own
        // shutdown grace, Nakama's default of 0 s when it sets none.
        assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
        assert_eq!(pod["terminationGracePeriodSeconds"], 5);
        let ann = &sts["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(ann["kanmon.dev/generation"], "4");
    }
}

/// A database scale-up (1 → 2 CPUs) resizes the database: its resources and the PostgreSQL
/// settings of the tier, in both flavours (the StatefulSet's `postgres -c` arguments, the
/// CloudNativePG `Cluster`'s parameters).
#[test]
fn the_database_follows_its_cpu_tier() {
    let mut d = deployment("alpha", DeploymentType::Production, 2);
    for (db_cpus, memory, connections, shared) in
        [(1, "1024Mi", "40", "256MB"), (2, "2048Mi", "60", "512MB")]
    {
        d.spec.db_cpus = db_cpus;
        let objs = objects(&d, DatabaseFlavor::StatefulSet, &settings());
        let c =
            &find(&objs, "StatefulSet", "alpha-db")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["cpu"], db_cpus.to_string());
        assert_eq!(c["resources"]["requests"]["memory"], memory);
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&format!("max_connections={connections}").as_str()),
            "{args:?}"
        );
        assert!(
            args.contains(&format!("shared_buffers={shared}").as_str()),
            "{args:?}"
        );
        let objs = objects(&d, DatabaseFlavor::CloudNativePg, &settings());
        let cluster = &find(&objs, "Cluster", "alpha-db")["spec"];
        assert_eq!(cluster["resources"]["limits"]["cpu"], db_cpus.to_string());
        assert_eq!(
            cluster["postgresql"]["parameters"]["max_connections"],
            connections
        );
        assert_eq!(
            cluster["postgresql"]["parameters"]["shared_buffers"],
            shared
        );
    }
}

/// A pod's `terminationGracePeriodSeconds` is its deployment's `shutdown_grace_sec` (capped by
/// the platform's grace) after the preStop pause, and a change of it is a changed pod
/// template: under `OnDelete` the rolling operation that changed the config replaces the pods.
#[test]
fn the_pod_grace_is_the_deployments_shutdown_grace_after_the_pause() {
    let template = |grace: Option<&str>| {
        let mut d = deployment("alpha", DeploymentType::Production, 2);
        if let Some(g) = grace {
            d.spec.config.insert("shutdown_grace_sec".into(), g.into());
        }
        find(
            &objects(&d, DatabaseFlavor::StatefulSet, &settings()),
            "StatefulSet",
            "alpha",
        )["spec"]["template"]
            .clone()
    };
    let unset = template(None);
    assert_eq!(unset["spec"]["terminationGracePeriodSeconds"], 5);
    let twenty = template(Some("20"));
    assert_eq!(twenty["spec"]["terminationGracePeriodSeconds"], 25);
    // Above the platform's cap (30 s here) the cap holds.
    let capped = template(Some("3600"));
    assert_eq!(capped["spec"]["terminationGracePeriodSeconds"], 35);
    assert_ne!(unset, twenty);
    assert_ne!(twenty, capped);
    assert_eq!(twenty, template(Some("20")));
}

#[test]
fn a_changed_secret_is_a_changed_pod_template() {
    let d = deployment("alpha", DeploymentType::Production, 2);
    let hash = |d: &Deployment| {
        find(
            &objects(d, DatabaseFlavor::StatefulSet, &settings()),
            "StatefulSet",
            "alpha",
        )["spec"]["template"]["metadata"]["annotations"]["kanmon.dev/secret-hash"]
            .clone()
    };
    let mut rotated = d.clone();
    rotated.keys.runtime_key = "rotated".into();
    let mut reconfigured = d.clone();
    reconfigured
        .spec
        .secret_config
        .insert("social.steam.app_key".into(), "other".into());
    assert_ne!(hash(&d), hash(&rotated));
    assert_ne!(hash(&d), hash(&reconfigured));
    assert_eq!(hash(&d), hash(&d.clone()));
}

#[test]
fn only_the_node_service_claims_the_instance_at_the_edge() {
    let d = deployment("alpha", DeploymentType::Production, 2);
    let objs = objects(&d, DatabaseFlavor::StatefulSet, &settings());
    let claiming: Vec<String> = objs
        .iter()
        .filter(|v| {
            v["kind"] == "Service" && !v["metadata"]["labels"]["kanmon.dev/instance"].is_null()
        })
        .map(|v| v["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(claiming, ["alpha"]);
    let svc = find(&objs, "Service", "alpha");
    assert_eq!(svc["metadata"]["labels"]["kanmon.dev/zone"], "us-east1");
    let ports: Vec<&str> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["http", "grpc", "console"]);
    // The console is closed until its allow-list is set; the edge reads the list from here.
    assert_eq!(
        svc["metadata"]["annotations"]["kanmon.dev/console-allow"],
        ""
    );
    let mut open = d.clone();
    open.console_allow = vec![
        "10.0.0.0/8".parse().unwrap(),
        "192.0.2.7/32".parse().unwrap(),
    ];
    let objs = objects(&open, DatabaseFlavor::StatefulSet, &settings());
    let svc = find(&objs, "Service", "alpha");
    assert_eq!(
        svc["metadata"]["annotations"]["kanmon.dev/console-allow"],
        "10.0.0.0/8,192.0.2.7/32"
    );
    // Every object but the Namespace lives in the deployment's namespace.
    assert!(objs[1..]
        .iter()
        .all(|v| v["metadata"]["namespace"] == "kanmon-alpha"));
}

#[test]
fn network_policies_admit_only_the_edge_the_control_plane_and_dns() {
    let d = deployment("alpha", DeploymentType::Production, 2);
    let objs = objects(&d, DatabaseFlavor::StatefulSet, &settings());
    let deny = find(&objs, "NetworkPolicy", "default-deny");
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    // Every namespace a policy names: the edge's, the control plane's, DNS's. No other tenant.
    let mut namespaces = std::collections::BTreeSet::new();
    for p in objs.iter().filter(|v| v["kind"] == "NetworkPolicy") {
        for rule in p["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .chain(p["spec"]["egress"].as_array().unwrap())
        {
            let peers = rule
                .get("from")
                .or(rule.get("to"))
                .and_then(Value::as_array);
            for peer in peers.into_iter().flatten() {
                if let Some(ns) =
                    peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
                {
                    namespaces.insert(ns.to_string());
                }
                // A peer without a namespace selector is this namespace's pods only.
                assert!(
                    !peer["podSelector"].is_null() || !peer["namespaceSelector"].is_null(),
                    "{peer}"
                );
            }
            // Only the CloudNativePG flavour has a rule open to any address.
            assert!(peers.is_some(), "open rule in {}", p["metadata"]["name"]);
        }
    }
    assert_eq!(
        namespaces.into_iter().collect::<Vec<_>>(),
        ["kanmon-control", "kanmon-system", "kube-system"]
    );
    // The console port (7351) is open to the edge's namespace only.
    let nodes = find(&objs, "NetworkPolicy", "nodes");
    let console_from: Vec<&str> = nodes["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == 7351)
        })
        .flat_map(|r| r["from"].as_array().unwrap().iter())
        .filter_map(|p| {
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
        })
        .collect();
    assert_eq!(console_from, ["kanmon-system"]);
}

#[test]
fn names_too_long_for_kubernetes_are_refused() {
    let long = format!("a{}", "b".repeat(52));
    let d = deployment(&long, DeploymentType::Production, 1);
    let err = desired(
        DesiredInput {
            deployment: &d,
            spec: &d.spec,
            generation: 1,
            database: DatabaseFlavor::StatefulSet,
            database_password: "pw",
        },
        &settings(),
    )
    .unwrap_err();
    assert!(matches!(err, ObjectError::NameTooLong { .. }), "{err}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let d = deployment("alpha", DeploymentType::Production, 2);
    let input = DesiredInput {
        deployment: &d,
        spec: &d.spec,
        generation: 1,
        database: DatabaseFlavor::StatefulSet,
        database_password: "db-pass/word",
    };
    let set = desired(input, &settings()).unwrap();
    let text = format!("{set:?} {input:?}");
    for secret in [
        "server-key-value",
        "runtime-key-value",
        "steam-secret",
        "db-pass",
        "c2VydmVy",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn secrets_of(d: &Deployment, password: &str) -> Vec<String> {
        let mut s = vec![
            d.keys.server_key.clone(),
            d.keys.runtime_key.clone(),
            password.to_string(),
        ];
        s.extend(d.spec.secret_config.values().cloned());
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// For any deployment: the node count and CPUs follow the tier, every object
        /// round-trips through its type, and no secret (keys, secret config, database
        /// password) appears in any object but the Secrets — neither in plain nor in base64.
        #[test]
        fn secrets_stay_in_secrets(
            production in any::<bool>(),
            cpus in 1u32..=16,
            secret in "[a-zA-Z0-9]{12,24}",
            plain in "[a-z]{1,8}",
            cnpg in any::<bool>(),
        ) {
            let kind = if production { DeploymentType::Production } else { DeploymentType::Development };
            let mut d = deployment("alpha", kind, cpus);
            d.keys.server_key = format!("sk{secret}");
            d.spec.secret_config.insert("social.key".into(), format!("sc{secret}"));
            d.spec.config.insert("plain.value".into(), plain);
            let password = format!("pw{secret}");
            let flavor = if cnpg { DatabaseFlavor::CloudNativePg } else { DatabaseFlavor::StatefulSet };
            let set = desired(
                DesiredInput { deployment: &d, spec: &d.spec, generation: 2, database: flavor, database_password: &password },
                &settings(),
            ).unwrap();
            let objs: Vec<Value> = set.objects.iter().map(|o| serde_json::to_value(&o.object).unwrap()).collect();
            check_types(&objs);
            let sts = find(&objs, "StatefulSet", "alpha");
            let replicas = if production { cpus } else { 1 };
            prop_assert_eq!(sts["spec"]["replicas"].as_u64(), Some(u64::from(replicas)));
            let per_pod: u32 = sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
                .as_str().unwrap().parse().unwrap();
            prop_assert_eq!(per_pod * replicas, cpus);
            let secrets = secrets_of(&d, &password);
            for v in objs.iter().filter(|v| v["kind"] != "Secret") {
                let text = v.to_string();
                for s in &secrets {
                    prop_assert!(!text.contains(s.as_str()), "{} in {}", s, v["kind"]);
                }
            }
            // The Secrets hold them (base64 in `data`), so the node can read them.
            let node = find(&objs, "Secret", "alpha-node");
            let config = node["data"]["node-config.json"].as_str().unwrap();
            prop_assert!(!config.contains(&secret), "base64, not plain");
        }
    }
}
