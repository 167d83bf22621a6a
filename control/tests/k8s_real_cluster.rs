//! The Kubernetes driver's parts against a real API server, when `KANMON_TEST_KUBECONFIG` names a
//! kubeconfig (kind, k3d, or any cluster whose default StorageClass and image pulls work):
//! apply a one-node deployment, observe its pod Ready, run one rolling step (delete the pod →
//! draining → its successor Ready), delete the deployment. Skipped, saying so, otherwise.
//!
//! The node image must answer `GET /healthcheck` on port 7350 as a non-root user on a read-only
//! root filesystem; by default `hashicorp/http-echo` (answers every path) is used, or
//! `KANMON_TEST_NODE_IMAGE` with `KANMON_TEST_NODE_ARGS` (space-separated).
//!
//! The whole platform on a real cluster (`kanmon serve --driver kubernetes`, `kanmon-proxy`,
//! 200 WebSocket clients, reboot, crash loop, recovery) is `tests/tests/kubernetes_platform.rs`,
//! which runs against the cluster of the same `KANMON_TEST_KUBECONFIG` when
//! `KANMON_TEST_BENCH_IMAGE` is a `kanmon-bench node` image.

use std::{path::PathBuf, time::Duration};

use futures_util::StreamExt;
use kanmon_control::{
    domain::{CreateDeployment, Deployment, DeploymentType, Keys, Timestamp},
    k8s::{
        connect, desired, watch_observations, Applier, DesiredInput, KubeSettings,
        NodeObservation as O, Observation,
    },
};
use kanmon_router::{Catalog, InstanceName, Version, Zone};

/// Image pulls and scheduling on a fresh cluster take a while.
const WAIT: Duration = Duration::from_secs(300);

async fn wait_for(
    obs: &mut (impl futures_util::Stream<Item = Result<Observation, kanmon_control::k8s::WatchError>>
              + Unpin),
    want: impl Fn(&Observation) -> bool,
) -> anyhow::Result<Observation> {
    tokio::time::timeout(WAIT, async {
        while let Some(o) = obs.next().await {
            match o {
                Ok(o) if want(&o) => return Ok(o),
                Ok(o) => println!("observed {o:?}"),
                Err(e) => println!("watch error (retried): {e}"),
            }
        }
        anyhow::bail!("the observation stream ended")
    })
    .await
    .map_err(|_| anyhow::anyhow!("not observed within {WAIT:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_becomes_ready_on_a_real_cluster() {
    let Some(kubeconfig) = std::env::var_os("KANMON_TEST_KUBECONFIG") else {
        println!("skipped: KANMON_TEST_KUBECONFIG is not set (a kubeconfig of a real cluster runs this test)");
        return;
    };
    let client = connect(Some(&PathBuf::from(kubeconfig))).await.unwrap();
    let mut settings = KubeSettings {
        memory_per_cpu_mib: 256,
        grace: Duration::from_secs(5),
        ..KubeSettings::default()
    };
    match std::env::var("KANMON_TEST_NODE_IMAGE") {
        Ok(image) => {
            settings.image = image;
            settings.node_args = std::env::var("KANMON_TEST_NODE_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        Err(_) => {
            settings.image = "hashicorp/http-echo:1.0".into();
            settings.node_args = vec!["-listen=:7350".into(), "-text=ok".into()];
        }
    }
    let instance = format!("kt{}", std::process::id());
    let v: Version = "3.35.0".parse().unwrap();
    let d = Deployment::create(
        CreateDeployment {
            org: "test".into(),
            title: "test".into(),
            instance: InstanceName::parse(&instance).unwrap(),
            zone: Zone::parse("us-east1").unwrap(),
            kind: DeploymentType::Development,
            version: v,
            node_cpus: 1,
            db_cpus: 1,
            delete_protection: None,
        },
        &Catalog::new(vec![v]),
        &[(Zone::parse("us-east1").unwrap(), false)],
        "kanmon.test",
        Keys {
            server_key: "test-server-key".into(),
            runtime_key: "test-runtime-key".into(),
        },
        "test",
        Timestamp(0),
    )
    .unwrap();
    let applier = Applier::new(client.clone(), settings.clone());
    let run = async {
        let flavor = applier.database_flavor().await?;
        println!("database: {flavor:?}");
        let set = desired(
            DesiredInput {
                deployment: &d,
                spec: &d.spec,
                generation: 1,
                database: flavor,
                database_password: "test-db-password",
            },
            &settings,
        )?;
        applier.apply(&set).await?;
        let mut obs = Box::pin(watch_observations(client.clone(), &set.namespace));
        let node = format!("{instance}-0");
        let ready = wait_for(&mut obs, |o| o.node == node && o.what == O::Ready).await?;
        println!("{node} ready as {}", ready.incarnation);
        applier
            .delete_pod(&instance, &node, Some(&ready.incarnation))
            .await?;
        wait_for(&mut obs, |o| {
            o.incarnation == ready.incarnation && o.what == O::Draining
        })
        .await?;
        let next = wait_for(&mut obs, |o| {
            o.node == node && o.what == O::Ready && o.incarnation != ready.incarnation
        })
        .await?;
        println!("{node} replaced by {}", next.incarnation);
        anyhow::Ok(())
    }
    .await;
    // Clean up whatever happened.
    applier.delete_deployment(&instance).await.unwrap();
    run.unwrap();
}
