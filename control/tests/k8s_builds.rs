//! Builds under the Kubernetes driver against the wire-level API fixture and its simulated
//! cluster, whose Job controller a [`JobScript`] plays: a build is a `batch/v1` Job (with its
//! NetworkPolicy) applied by server-side apply; its end is observed by watch — through a 410
//! that expires the watch mid-build — its log read from its pod, its image reference from the
//! build container's termination message; the image is then usable by `deploy`. A failing
//! build fails its operation with its log.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::k8s::eventually;
use kanmon_control::{
    domain::{build::Builder, CreateDeployment, DeploymentType, OpKind, OpStatus, Operation},
    driver::{build::LocalBuildConfig, NullPublisher},
    k8s::{connect, KubeBuildRunner, KubeDriver, KubeSettings},
    runtime::{default_catalog, Runtime, Settings},
    store::{BuildStatus, Store, StoredBuilder},
};
use kanmon_router::{InstanceName, Zone};
use kanmon_testkit::k8s::{
    jobs::{JobScript, JobStep},
    ApiFixture, Kind,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// Build pods run until the test releases them with an outcome.
#[derive(Debug, Default)]
struct Script {
    outcome: Mutex<Option<JobStep>>,
}

impl JobScript for Script {
    fn step(&self, pod: &Value) -> Option<JobStep> {
        if pod["metadata"]["labels"]["kanmon.dev/component"] != "build" {
            return None;
        }
        Some(
            self.outcome
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(JobStep::Running),
        )
    }
}

struct Setup {
    api: Arc<ApiFixture>,
    store: Arc<Store>,
    client: kube::Client,
    settings: Settings,
    _sim: kanmon_testkit::k8s::sim::SimCluster,
    rt: Runtime,
    script: Arc<Script>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let script = Arc::new(Script::default());
    let api = Arc::new(ApiFixture::start().await);
    let sim = kanmon_testkit::k8s::sim::SimCluster::start(
        &api,
        kanmon_testkit::k8s::sim::SimOpts {
            grace: Duration::from_millis(300),
            jobs: Some(script.clone()),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let client = connect(Some(&api.kubeconfig())).await.unwrap();
    let store = Arc::new(Store::in_memory().unwrap());
    let driver = KubeDriver::new(client.clone(), KubeSettings::default(), store.clone());
    let settings = Settings {
        builds: Some(LocalBuildConfig {
            command: "make image".into(),
            dir: dir.path().to_path_buf(),
            timeout: Duration::from_secs(120),
            keep: 5,
            job: Default::default(),
        }),
        ..Settings::default()
    };
    let rt = Runtime::start(
        store.clone(),
        settings.clone(),
        Arc::new(driver),
        Arc::new(NullPublisher),
    )
    .unwrap();
    rt.set_build_runner(Arc::new(KubeBuildRunner::new(
        client.clone(),
        KubeSettings::default(),
    )));
    let (_, first) = rt
        .create(
            CreateDeployment {
                org: "acme".into(),
                title: "rpg".into(),
                instance: InstanceName::parse("alpha").unwrap(),
                zone: Zone::parse("us-east1").unwrap(),
                kind: DeploymentType::Development,
                version: "3.35.0".parse().unwrap(),
                node_cpus: 1,
                db_cpus: 1,
                delete_protection: None,
            },
            "ann",
        )
        .unwrap();
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    rt.store()
        .insert_builder(&StoredBuilder {
            instance: "alpha".into(),
            builder: Builder::new(
                "main",
                "https://git.example/game.git",
                "3.37.0".parse().unwrap(),
                &default_catalog(),
            )
            .unwrap(),
            created_by: "ann".into(),
            created_at: kanmon_control::domain::Timestamp(1),
        })
        .unwrap();
    Setup {
        api,
        store,
        client,
        settings,
        _sim: sim,
        rt,
        script,
        _dir: dir,
    }
}

async fn finished(rt: &Runtime, id: u64) -> Operation {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let op = rt.store().op(id).unwrap().unwrap();
        if op.status.is_final() {
            return op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {id} did not finish: {op:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn build(rt: &Runtime) -> u64 {
    rt.submit(
        "alpha",
        OpKind::Build {
            builder: "main".into(),
            version: "3.37.0".parse().unwrap(),
        },
        "ann",
    )
    .unwrap()
    .id
}

fn job_lists(api: &ApiFixture) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with("LIST") && r.contains("/jobs"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_job_survives_a_410_and_its_image_is_deployed() {
    let s = setup().await;
    let id = build(&s.rt);
    let job = format!("alpha-build-{id}");
    eventually("the build Job and its watch", || {
        s.api.get(Kind::Job, "kanmon-alpha", &job).is_some() && s.api.open_watches(Kind::Job) > 0
    })
    .await;
    let j = s.api.get(Kind::Job, "kanmon-alpha", &job).unwrap();
    assert_eq!(j["spec"]["backoffLimit"], 0, "{j:#}");
    assert!(j["spec"]["ttlSecondsAfterFinished"].as_i64().unwrap() > 0);
    let c = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "heroiclabs/nakama-pluginbuilder:3.37.0");
    assert_eq!(c["resources"]["limits"]["memory"], "2Gi");
    let policy = s
        .api
        .get(Kind::NetworkPolicy, "kanmon-alpha", "build")
        .expect("the build pods' NetworkPolicy");
    assert_eq!(policy["spec"]["ingress"], serde_json::json!([]));

    // The watch expires mid-build: the runner's watcher lists again and goes on.
    let lists = job_lists(&s.api);
    s.api.expire();
    let image = format!("registry.example/alpha/game@sha256:{}", "c0".repeat(32));
    *s.script.outcome.lock().unwrap() = Some(JobStep::Exit {
        code: 0,
        logs: vec![
            ("source".into(), "Cloning into '/workspace/src'...\n".into()),
            ("build".into(), "go build: compiled against 3.37.0\n".into()),
        ],
        message: format!("{image}\n"),
    });
    let op = finished(&s.rt, id).await;
    assert_eq!(op.status, OpStatus::Completed, "{op:?}");
    let result = op.result.unwrap();
    assert_eq!(result["image"], image.as_str());
    assert_eq!(result["digest"], "c0".repeat(32));
    assert!(
        job_lists(&s.api) > lists,
        "the expired watch was not listed again"
    );
    let record = s.rt.store().build("alpha", id).unwrap().unwrap();
    assert_eq!(record.status, BuildStatus::Succeeded);
    assert!(record.log.contains("Cloning into"), "{}", record.log);
    assert!(
        record.log.contains("compiled against 3.37.0"),
        "{}",
        record.log
    );
    assert!(s
        .api
        .requests()
        .iter()
        .any(|r| r.starts_with("LOG ") && r.contains(&format!("{job}-sim"))));

    // The image is what `deploy` takes: the nodes' pods run it.
    let deploy =
        s.rt.submit(
            "alpha",
            OpKind::Deploy {
                version: "3.37.0".parse().unwrap(),
                image: Some(image.clone()),
            },
            "ann",
        )
        .unwrap();
    assert_eq!(finished(&s.rt, deploy.id).await.status, OpStatus::Completed);
    let set = s
        .api
        .get(Kind::StatefulSet, "kanmon-alpha", "alpha")
        .unwrap();
    assert_eq!(
        set["spec"]["template"]["spec"]["containers"][0]["image"],
        image.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_job_fails_the_operation_with_its_log() {
    let s = setup().await;
    *s.script.outcome.lock().unwrap() = Some(JobStep::Exit {
        code: 2,
        logs: vec![
            ("source".into(), "Cloning into '/workspace/src'...\n".into()),
            ("build".into(), "main.go:7: undefined: nk.Foo\n".into()),
        ],
        message: String::new(),
    });
    let id = build(&s.rt);
    let op = finished(&s.rt, id).await;
    assert_eq!(op.status, OpStatus::Failed, "{op:?}");
    assert!(
        op.error
            .as_deref()
            .unwrap_or_default()
            .contains("exit code 2"),
        "{op:?}"
    );
    let record = s.rt.store().build("alpha", id).unwrap().unwrap();
    assert_eq!(record.status, BuildStatus::Failed);
    assert!(record.log.contains("undefined: nk.Foo"), "{}", record.log);
    assert_eq!(record.image, None);
    // The queue moves on.
    let reboot = s.rt.submit("alpha", OpKind::Reboot, "ann").unwrap();
    assert_eq!(finished(&s.rt, reboot.id).await.status, OpStatus::Completed);
}

/// A directory source cannot reach a cluster's pod: refused with a message, no Job applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_source_is_refused_under_kubernetes() {
    let s = setup().await;
    s.rt.store()
        .insert_builder(&StoredBuilder {
            instance: "alpha".into(),
            builder: Builder::new(
                "local",
                "/srv/game",
                "3.37.0".parse().unwrap(),
                &default_catalog(),
            )
            .unwrap(),
            created_by: "ann".into(),
            created_at: kanmon_control::domain::Timestamp(1),
        })
        .unwrap();
    let op =
        s.rt.submit(
            "alpha",
            OpKind::Build {
                builder: "local".into(),
                version: "3.37.0".parse().unwrap(),
            },
            "ann",
        )
        .unwrap();
    let op = finished(&s.rt, op.id).await;
    assert_eq!(op.status, OpStatus::Failed);
    assert!(op.error.unwrap().contains("git URL"));
    assert!(s.api.list(Kind::Job).is_empty());
}

/// A restart during a build: the next start fails the build record ("interrupted by a
/// restart") and its operation, and deletes the Job the build left running in the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_the_running_build_and_deletes_its_job() {
    let s = setup().await;
    let id = build(&s.rt);
    let job = format!("alpha-build-{id}");
    eventually("the build Job", || {
        s.api.get(Kind::Job, "kanmon-alpha", &job).is_some()
    })
    .await;
    assert_eq!(
        s.rt.store().build("alpha", id).unwrap().unwrap().status,
        BuildStatus::Running
    );
    // The control plane starts again on the same store (the first one's build never ends:
    // its pod runs until the Job is deleted).
    let driver = KubeDriver::new(s.client.clone(), KubeSettings::default(), s.store.clone());
    let again = Runtime::start(
        s.store.clone(),
        s.settings.clone(),
        Arc::new(driver),
        Arc::new(NullPublisher),
    )
    .unwrap();
    let record = again.store().build("alpha", id).unwrap().unwrap();
    assert_eq!(record.status, BuildStatus::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("interrupted by a restart"),
        "{record:?}"
    );
    let op = again.store().op(id).unwrap().unwrap();
    assert_eq!(op.status, OpStatus::Failed, "{op:?}");
    again.set_build_runner(Arc::new(KubeBuildRunner::new(
        s.client.clone(),
        KubeSettings::default(),
    )));
    eventually("the interrupted build's Job deleted", || {
        s.api
            .get(Kind::Job, "kanmon-alpha", &job)
            .is_none_or(|j| !j["metadata"]["deletionTimestamp"].is_null())
    })
    .await;
    assert!(s
        .api
        .requests()
        .iter()
        .any(|r| r.starts_with("DELETE") && r.contains(&format!("jobs/{job}"))));
}
