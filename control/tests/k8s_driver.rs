//! The Kubernetes driver's building blocks against the wire-level API fixture and its
//! simulated cluster (kanmon-testkit): apply a deployment → pods Ready → the observer streams
//! started and ready; delete a pod → draining (its endpoint `serving && terminating`), exited,
//! gone → a new pod ready; a crashing image → CrashLoopBackOff while the other node serves;
//! deleting the deployment removes its namespace. Plus `kubectl apply --dry-run=client` of the
//! desired objects against the fixture's discovery, where kubectl is installed.

mod common;

use std::{pin::Pin, time::Duration};

use common::k8s::cluster;
use futures_util::{Stream, StreamExt};
use kanmon_control::{
    domain::{CreateDeployment, Deployment, DeploymentType, Keys, Timestamp},
    k8s::{
        connect, desired, export_job, watch_observations, Applier, DatabaseFlavor, DesiredInput,
        KubeSettings, NodeObservation as O, ObjectSet, Observation, PodDeletion, WatchError,
    },
};
use kanmon_router::{Catalog, InstanceName, Version, Zone};
use kanmon_testkit::k8s::{sim::SimOpts, ApiFixture, Kind};

type Obs = Pin<Box<dyn Stream<Item = Result<Observation, WatchError>> + Send>>;

/// Generous: the machine is shared and loaded.
const WAIT: Duration = Duration::from_secs(60);

fn deployment(node_cpus: u32) -> Deployment {
    let v: Version = "3.35.0".parse().unwrap();
    Deployment::create(
        CreateDeployment {
            org: "acme".into(),
            title: "rpg".into(),
            instance: InstanceName::parse("alpha").unwrap(),
            zone: Zone::parse("us-east1").unwrap(),
            kind: DeploymentType::Production,
            version: v,
            node_cpus,
            db_cpus: 1,
            delete_protection: None,
        },
        &Catalog::new(vec![v]),
        &[(Zone::parse("us-east1").unwrap(), false)],
        "kanmon.test",
        Keys {
            server_key: "sk-secret".into(),
            runtime_key: "rk-secret".into(),
        },
        "ann",
        Timestamp(0),
    )
    .unwrap()
}

fn objects(d: &Deployment, generation: u64) -> ObjectSet {
    set_of(d, generation, DatabaseFlavor::StatefulSet)
}

fn objects_with(d: &Deployment, database: DatabaseFlavor) -> ObjectSet {
    set_of(d, 1, database)
}

fn set_of(d: &Deployment, generation: u64, database: DatabaseFlavor) -> ObjectSet {
    desired(
        DesiredInput {
            deployment: d,
            spec: &d.spec,
            generation,
            database,
            database_password: "pw-secret",
        },
        &KubeSettings::default(),
    )
    .unwrap()
}

/// Reads observations until `want` matches one; returns everything read (bounded by [`WAIT`]).
async fn until(obs: &mut Obs, want: impl Fn(&Observation) -> bool) -> Vec<Observation> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(o) = obs.next().await {
            match o {
                Ok(o) => {
                    let done = want(&o);
                    seen.push(o);
                    if done {
                        return true;
                    }
                }
                Err(e) => eprintln!("watch error (retried): {e}"),
            }
        }
        false
    })
    .await;
    assert!(found == Ok(true), "not observed; saw {seen:#?}");
    seen
}

fn is(o: &Observation, node: &str, what: fn(&O) -> bool) -> bool {
    o.node == node && what(&o.what)
}

/// Waits (bounded) until the fixture holds what `check` wants.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let ok = tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for {what}");
}

fn endpoint(api: &ApiFixture, pod: &str) -> Option<serde_json::Value> {
    let slice = api.get(Kind::Slice, "kanmon-alpha", "alpha-sim")?;
    slice["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["targetRef"]["name"] == pod)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_drains_and_crash_loops_on_the_simulated_cluster() {
    // Long enough to look at the terminating endpoint on a loaded machine.
    let (api, _sim) = cluster(Duration::from_secs(3)).await;
    let client = connect(Some(&api.kubeconfig())).await.unwrap();
    let applier = Applier::new(client.clone(), KubeSettings::default());
    // The fixture serves no postgresql.cnpg.io API.
    assert_eq!(
        applier.database_flavor().await.unwrap(),
        DatabaseFlavor::StatefulSet
    );

    let d = deployment(2);
    let set = objects(&d, 1);
    applier.apply(&set).await.unwrap();
    // Every object by server-side apply, one field manager, forced, in order.
    let applies: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("APPLY"))
        .collect();
    assert_eq!(applies.len(), set.objects.len(), "{applies:#?}");
    assert!(applies[0].contains("/api/v1/namespaces/kanmon-alpha?"));
    assert!(applies.last().unwrap().contains("/statefulsets/alpha?"));
    assert!(applies
        .iter()
        .all(|r| r.contains("fieldManager=kanmon-control") && r.contains("force=true")));
    // Applying again changes nothing (no new generation).
    let generation = |api: &ApiFixture| {
        api.get(Kind::StatefulSet, "kanmon-alpha", "alpha").unwrap()["metadata"]["generation"]
            .clone()
    };
    let before = generation(&api);
    applier.apply(&set).await.unwrap();
    assert_eq!(generation(&api), before);

    let mut obs: Obs = Box::pin(watch_observations(client.clone(), "kanmon-alpha"));
    let mut seen = until(&mut obs, |o| is(o, "alpha-0", |w| *w == O::Ready)).await;
    if !seen.iter().any(|o| is(o, "alpha-1", |w| *w == O::Ready)) {
        seen.extend(until(&mut obs, |o| is(o, "alpha-1", |w| *w == O::Ready)).await);
    }
    for node in ["alpha-0", "alpha-1"] {
        let started = seen.iter().position(|o| {
            is(
                o,
                node,
                |w| matches!(w, O::Started(e) if e.addr.port() == 7350 && e.grpc.is_some()),
            )
        });
        let ready = seen.iter().position(|o| is(o, node, |w| *w == O::Ready));
        assert!(started.is_some() && started < ready, "{node}: {seen:#?}");
    }
    let first = seen.iter().find(|o| o.node == "alpha-0").unwrap().clone();
    assert_eq!(first.generation, Some(1));
    let uid = api.get(Kind::Pod, "kanmon-alpha", "alpha-0").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first.incarnation, uid);
    // The edge's view: both endpoints ready in a slice carrying the instance label.
    eventually("both endpoints ready", || {
        ["alpha-0", "alpha-1"]
            .iter()
            .all(|p| endpoint(&api, p).is_some_and(|e| e["conditions"]["ready"] == true))
    })
    .await;
    let slice = api.get(Kind::Slice, "kanmon-alpha", "alpha-sim").unwrap();
    assert_eq!(slice["metadata"]["labels"]["kanmon.dev/instance"], "alpha");

    // One rolling step: delete alpha-0 → draining, exited, gone → its successor ready.
    assert_eq!(
        applier
            .delete_pod("alpha", "alpha-0", Some(&uid))
            .await
            .unwrap(),
        PodDeletion::Deleted
    );
    until(&mut obs, |o| is(o, "alpha-0", |w| *w == O::Draining)).await;
    eventually("the deleted pod's endpoint serving && terminating", || {
        endpoint(&api, "alpha-0").is_some_and(|e| {
            e["conditions"]
                == serde_json::json!({"ready": false, "serving": true, "terminating": true})
        })
    })
    .await;
    let step = until(&mut obs, |o| {
        is(o, "alpha-0", |w| *w == O::Ready) && o.incarnation != uid
    })
    .await;
    let old: Vec<&O> = step
        .iter()
        .filter(|o| o.incarnation == uid)
        .map(|o| &o.what)
        .collect();
    assert_eq!(old, [&O::Exited { code: Some(0) }, &O::Gone], "{step:#?}");
    assert!(!step
        .iter()
        .any(|o| o.incarnation == uid && o.what == O::Ready));
    // A late step naming the replaced incarnation stops nothing.
    assert_eq!(
        applier
            .delete_pod("alpha", "alpha-0", Some(&uid))
            .await
            .unwrap(),
        PodDeletion::Gone
    );

    // A crashing image for the next generation: the replaced node crash-loops, the other serves.
    let mut bad = d.clone();
    bad.spec.image = Some("registry.example/crash:1".into());
    applier.apply(&objects(&bad, 2)).await.unwrap();
    let uid1 = api.get(Kind::Pod, "kanmon-alpha", "alpha-1").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    applier
        .delete_pod("alpha", "alpha-1", Some(&uid1))
        .await
        .unwrap();
    let crash = until(&mut obs, |o| {
        is(
            o,
            "alpha-1",
            |w| matches!(w, O::CrashLoopBackOff { restarts, last_exit: Some(1) } if *restarts >= 1),
        )
    })
    .await;
    let new = crash.last().unwrap();
    assert_eq!(new.generation, Some(2));
    assert!(crash.iter().any(|o| o.incarnation == new.incarnation
        && matches!(
            o.what,
            O::Restarting {
                restarts: 1,
                last_exit: Some(1)
            }
        )));
    assert!(!crash
        .iter()
        .any(|o| o.incarnation == new.incarnation && o.what == O::Ready));
    assert!(endpoint(&api, "alpha-0").is_some_and(|e| e["conditions"]["ready"] == true));

    // Deleting the deployment deletes its namespace and everything in it.
    applier.delete_deployment("alpha").await.unwrap();
    until(&mut obs, |o| is(o, "alpha-0", |w| *w == O::Gone)).await;
    assert!(api.get(Kind::Namespace, "", "kanmon-alpha").is_none());
    assert!(api.list(Kind::Secret).is_empty() && api.list(Kind::StatefulSet).is_empty());
    // Deleting it again succeeds.
    applier.delete_deployment("alpha").await.unwrap();
}

/// The database flavour follows the cluster's API discovery, and the CloudNativePG set applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudnativepg_is_used_where_its_api_is_served() {
    let api = ApiFixture::start().await;
    let client = connect(Some(&api.kubeconfig())).await.unwrap();
    let applier = Applier::new(client, KubeSettings::default());
    assert_eq!(
        applier.database_flavor().await.unwrap(),
        DatabaseFlavor::StatefulSet
    );
    api.serve_cnpg(true);
    let flavor = applier.database_flavor().await.unwrap();
    assert_eq!(flavor, DatabaseFlavor::CloudNativePg);
    applier
        .apply(&objects_with(&deployment(2), flavor))
        .await
        .unwrap();
    let cluster = api
        .get(Kind::CnpgCluster, "kanmon-alpha", "alpha-db")
        .unwrap();
    assert_eq!(
        cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"],
        "alpha-db-credentials"
    );
    assert!(api
        .get(Kind::StatefulSet, "kanmon-alpha", "alpha-db")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_accepts_the_desired_objects() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: kubectl is not installed");
        return;
    }
    let api = ApiFixture::start().await;
    // kubectl maps every kind through the fixture's discovery (CloudNativePG's included).
    api.serve_cnpg(true);
    let dir = tempfile::tempdir().unwrap();
    let d = deployment(2);
    for (name, set) in [
        (
            "statefulset-db",
            objects_with(&d, DatabaseFlavor::StatefulSet),
        ),
        ("cnpg", objects_with(&d, DatabaseFlavor::CloudNativePg)),
    ] {
        let items: Vec<serde_json::Value> = set
            .objects
            .iter()
            .map(|o| serde_json::to_value(&o.object).unwrap())
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, list.to_string()).unwrap();
        let kubeconfig = api.kubeconfig();
        let out = tokio::process::Command::new("kubectl")
            .args(["apply", "--dry-run=client", "--validate=false", "-f"])
            .arg(&path)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stdout}\n{stderr}");
        assert_eq!(
            stdout.matches("(dry run)").count(),
            set.objects.len(),
            "{stdout}"
        );
    }
}

/// A watch that expires (410 Gone) is re-listed by the watcher: a pod deleted meanwhile is
/// still reported, and nothing already reported is reported again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_watch_relists_without_losing_or_repeating() {
    let (api, _sim) = cluster(SimOpts::default().grace).await;
    let client = connect(Some(&api.kubeconfig())).await.unwrap();
    let applier = Applier::new(client.clone(), KubeSettings::default());
    applier.apply(&objects(&deployment(1), 1)).await.unwrap();
    let mut obs: Obs = Box::pin(watch_observations(client.clone(), "kanmon-alpha"));
    let mut seen = until(&mut obs, |o| is(o, "alpha-0", |w| *w == O::Ready)).await;
    let uid = seen.last().unwrap().incarnation.clone();
    let lists = |api: &ApiFixture| {
        api.requests()
            .iter()
            .filter(|r| r.starts_with("LIST") && r.contains("/pods"))
            .count()
    };
    let before = lists(&api);
    api.expire();
    applier
        .delete_pod("alpha", "alpha-0", Some(&uid))
        .await
        .unwrap();
    seen.extend(
        until(&mut obs, |o| {
            is(o, "alpha-0", |w| *w == O::Ready) && o.incarnation != uid
        })
        .await,
    );
    assert!(lists(&api) > before, "the pod watch was not re-listed");
    let count = |what: &O| {
        seen.iter()
            .filter(|o| o.incarnation == uid && o.what == *what)
            .count()
    };
    assert_eq!(count(&O::Ready), 1, "{seen:#?}");
    assert_eq!(count(&O::Gone), 1, "{seen:#?}");
}

/// An export applies the pg_dump Job, waits for it and returns its output; a dump that fails
/// is a typed error naming the Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_runs_pg_dump_and_returns_its_output() {
    use futures_util::AsyncReadExt;
    let (api, _sim) = cluster(SimOpts::default().grace).await;
    let client = connect(Some(&api.kubeconfig())).await.unwrap();
    let settings = KubeSettings::default();
    let applier = Applier::new(client, settings.clone());
    applier.apply(&objects(&deployment(1), 1)).await.unwrap();
    let job = export_job(&settings, "alpha", DatabaseFlavor::StatefulSet, 7).unwrap();
    let mut out = applier.run_export(&job, WAIT).await.unwrap();
    let mut dump = String::new();
    out.read_to_string(&mut dump).await.unwrap();
    assert!(dump.starts_with("-- pg_dump"), "{dump:?}");
    assert!(api
        .requests()
        .iter()
        .any(|r| r.starts_with("LOG ") && r.contains("alpha-export-7")));

    let failing = KubeSettings {
        database_image: "postgres-crash:17".into(),
        ..settings
    };
    let job = export_job(&failing, "alpha", DatabaseFlavor::StatefulSet, 8).unwrap();
    let err = applier
        .run_export(&job, WAIT)
        .await
        .err()
        .expect("a failed dump");
    assert!(
        err.to_string().contains("Job/kanmon-alpha/alpha-export-8"),
        "{err}"
    );
}
