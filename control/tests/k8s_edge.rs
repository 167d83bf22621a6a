//! The edge reads what the driver makes: the proxy's own Kubernetes discovery, against the wire
//! fixture and its simulated cluster, routes a deployment applied by the driver — its pods
//! ready at their pod IPs, under the instance and zone of the Service — and a pod deleted by a
//! rolling step as draining until its successor is ready.

mod common;

use std::{sync::Arc, time::Duration};

use common::k8s::cluster;
use kanmon_control::{
    domain::{CreateDeployment, Deployment, DeploymentType, Keys, Timestamp},
    k8s::{connect, desired, Applier, DatabaseFlavor, DesiredInput, KubeSettings},
};
use kanmon_proxy::{
    config::Discovery,
    discovery::{kubernetes::KubernetesSource, DiscoverySource, Publisher},
    metrics::Metrics,
};
use kanmon_router::{Catalog, HealthTable, InstanceName, Version, Zone};
use kanmon_testkit::k8s::Kind;

/// `(node, state)` of alpha's nodes in the edge's table, sorted.
fn states(table: &HealthTable) -> Vec<(String, &'static str)> {
    let snapshot = table.load_full();
    let Some(d) = snapshot.find("alpha", "us-east1") else {
        return Vec::new();
    };
    let mut out: Vec<_> = d
        .nodes()
        .iter()
        .map(|n| (n.id().to_string(), n.state().as_str()))
        .collect();
    out.sort();
    out
}

async fn wait_for(table: &HealthTable, want: &[(&str, &str)]) {
    let want: Vec<(String, &str)> = want.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    let ok = tokio::time::timeout(Duration::from_secs(60), async {
        while states(table) != want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "edge table {:?}, wanted {want:?}",
        states(table)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_routes_what_the_driver_applies() {
    let (api, _sim) = cluster(Duration::from_secs(2)).await;
    let v: Version = "3.35.0".parse().unwrap();
    let d = Deployment::create(
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
    .unwrap();
    let settings = KubeSettings::default();
    let set = desired(
        DesiredInput {
            deployment: &d,
            spec: &d.spec,
            generation: 1,
            database: DatabaseFlavor::StatefulSet,
            database_password: "pw",
        },
        &settings,
    )
    .unwrap();
    let applier = Applier::new(connect(Some(&api.kubeconfig())).await.unwrap(), settings);
    applier.apply(&set).await.unwrap();

    // The edge as configured by default: instances owned by `kanmon-{instance}`, pod CIDRs.
    let table = Arc::new(HealthTable::default());
    let publisher = Publisher::new(table.clone(), Metrics::new().unwrap());
    let source = KubernetesSource::new(
        &Discovery {
            kubeconfig: Some(api.kubeconfig()),
            ..Discovery::default()
        },
        None,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { source.run(publisher, stopped).await });

    wait_for(&table, &[("alpha-0", "ready"), ("alpha-1", "ready")]).await;
    // Routed to the pod's IP and the container ports behind `http` and `grpc`.
    let pod = api.get(Kind::Pod, "kanmon-alpha", "alpha-0").unwrap();
    let ip = pod["status"]["podIP"].as_str().unwrap();
    let snapshot = table.load_full();
    let node = snapshot
        .find("alpha", "us-east1")
        .unwrap()
        .nodes()
        .iter()
        .find(|n| n.id() == "alpha-0")
        .unwrap();
    assert_eq!(node.addr().to_string(), format!("{ip}:7350"));
    assert_eq!(
        node.grpc().map(|a| a.to_string()),
        Some(format!("{ip}:7349"))
    );
    // The database Service is not taken for a deployment.
    assert_eq!(snapshot.len(), 1);

    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let deleted = std::time::Instant::now();
    applier
        .delete_pod("alpha", "alpha-0", Some(&uid))
        .await
        .unwrap();
    wait_for(&table, &[("alpha-0", "draining"), ("alpha-1", "ready")]).await;
    // Informational: the fixture's API, the simulated EndpointSlice controller and the edge's
    // watch together (no assertion on time: the machine is shared).
    eprintln!("pod delete -> edge draining: {:?}", deleted.elapsed());
    wait_for(&table, &[("alpha-0", "ready"), ("alpha-1", "ready")]).await;
    let new = api.get(Kind::Pod, "kanmon-alpha", "alpha-0").unwrap();
    assert_ne!(new["metadata"]["uid"], uid.as_str());

    stop.send_replace(true);
    let stopped = tokio::time::timeout(Duration::from_secs(30), task).await;
    assert!(stopped.is_ok(), "the discovery source did not stop");
}
