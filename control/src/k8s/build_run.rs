//! [`KubeBuildRunner`]: the build seam on a cluster. A build applies its NetworkPolicy and its
//! Job (`build_job.rs`) with server-side apply under the driver's field manager, watches the
//! Job until a `Complete` or `Failed` condition (a watch that expires with 410 is re-listed by
//! the watcher, not an error of the build), then reads its pod's log
//! (`/api/v1/namespaces/{ns}/pods/{pod}/log`, clone step and build step) as the build's log,
//! and the image reference from the build container's termination message.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod, networking::v1::NetworkPolicy};
use kube::{
    api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PropagationPolicy},
    runtime::{watcher, WatchStreamExt},
    Client,
};

use super::{
    build_job::{build_job, build_policy, parse_result, BUILD_CONTAINER},
    KubeSettings, FIELD_MANAGER,
};
use crate::{
    domain::build::{BuildLog, Builder, BUILD_LOG_LIMIT},
    driver::build::{BuildOutcome, BuildRunner, LocalBuildConfig},
};

/// How long past the Job's own deadline (`activeDeadlineSeconds`) the runner waits for the
/// cluster to report it ended (the Job controller marks a deadline as `Failed`).
const REPORT_SLACK: Duration = Duration::from_secs(60);

/// Runs builds as Jobs in the deployments' namespaces.
#[derive(Clone)]
pub struct KubeBuildRunner {
    client: Client,
    settings: KubeSettings,
}

impl std::fmt::Debug for KubeBuildRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBuildRunner")
            .field("namespace_prefix", &self.settings.namespace_prefix)
            .finish_non_exhaustive()
    }
}

/// Whether a Job has ended, and how.
fn ended(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => Some(true),
            "Failed" | "FailureTarget" => Some(false),
            _ => None,
        })
}

/// The build container's termination: its message and exit code.
fn termination(pod: &Pod) -> Option<(String, i32)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let c = statuses.iter().find(|c| c.name == BUILD_CONTAINER)?;
    let t = c.state.as_ref()?.terminated.as_ref()?;
    Some((t.message.clone().unwrap_or_default(), t.exit_code))
}

/// The most of one container's log read (the build's log keeps its last
/// [`BUILD_LOG_LIMIT`] bytes of it: a failure's cause is at the end).
const LOG_READ_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a container's log into `log` (streamed: the end is what is kept), bounded by
/// [`LOG_READ_LIMIT`]; a read error ends it with a note.
async fn read_log(stream: impl futures_util::AsyncBufRead, log: &mut BuildLog) {
    use futures_util::AsyncReadExt;
    let mut stream = Box::pin(stream);
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0usize;
    while read < LOG_READ_LIMIT {
        match stream.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                read += n;
                log.push(&buf[..n]);
            }
            Err(e) => {
                log.push(format!("\n[reading the log failed: {e}]\n").as_bytes());
                return;
            }
        }
    }
    log.push(b"\n[log cut: more than 64 MiB]\n");
}

impl KubeBuildRunner {
    /// A runner on `client`, laying builds out as `settings` does deployments.
    pub fn new(client: Client, settings: KubeSettings) -> Self {
        Self { client, settings }
    }

    async fn run_job(
        &self,
        cfg: &LocalBuildConfig,
        instance: &str,
        builder: &Builder,
        id: u64,
        log: &mut BuildLog,
    ) -> Result<(String, Option<String>), String> {
        let job =
            build_job(&self.settings, cfg, instance, builder, id).map_err(|e| e.to_string())?;
        let policy = build_policy(&self.settings, instance).map_err(|e| e.to_string())?;
        let ns = self.settings.namespace(instance);
        let name = job.metadata.name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &ns);
        policies
            .patch("build", &params, &Patch::Apply(&policy))
            .await
            .map_err(|e| format!("applying NetworkPolicy/build in {ns}: {e}"))?;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        jobs.patch(&name, &params, &Patch::Apply(&job))
            .await
            .map_err(|e| format!("applying Job/{name} in {ns}: {e}"))?;
        log.push(
            format!(
                "Job/{ns}/{name} applied; cloning {}\n",
                builder.source.as_text()
            )
            .as_bytes(),
        );
        let succeeded = self.wait(&jobs, &name, cfg.timeout + REPORT_SLACK).await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let list = pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
            .await
            .map_err(|e| format!("listing the pods of Job/{ns}/{name}: {e}"))?;
        let Some(pod) = list.items.into_iter().next() else {
            return Err(format!("Job/{ns}/{name} ended but its pod is gone"));
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        for container in ["source", BUILD_CONTAINER] {
            let lp = LogParams {
                container: Some(container.into()),
                ..LogParams::default()
            };
            match pods.log_stream(&pod_name, &lp).await {
                Ok(stream) => read_log(stream, log).await,
                // A step that never ran has no log; the outcome says why.
                Err(e) => tracing::debug!(pod = pod_name, container, error = %e, "no build log"),
            }
        }
        let end = termination(&pod);
        if !succeeded {
            return Err(match end {
                Some((_, code)) => format!("the build failed (exit code {code}; see its log)"),
                None => format!("Job/{ns}/{name} failed before the build ran (see its log)"),
            });
        }
        parse_result(&end.map(|(m, _)| m).unwrap_or_default())
    }

    /// Watches Job `name` until it ends (true: Complete). The watcher re-lists after a 410 or
    /// a dropped connection (with back-off); only the time limit ends the wait otherwise.
    async fn wait(&self, jobs: &Api<Job>, name: &str, limit: Duration) -> Result<bool, String> {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = Box::pin(
            watcher(jobs.clone(), config)
                .default_backoff()
                .applied_objects(),
        );
        let watch = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(job) => {
                        if let Some(done) = ended(&job) {
                            return Ok(done);
                        }
                    }
                    Err(e) => tracing::info!(job = name, error = %e, "build watch; re-listing"),
                }
            }
            Err(format!("the watch of Job/{name} ended"))
        };
        tokio::time::timeout(limit, watch)
            .await
            .map_err(|_| format!("Job/{name} did not end within {limit:?}"))?
    }
}

#[async_trait]
impl BuildRunner for KubeBuildRunner {
    async fn run(
        &self,
        cfg: &LocalBuildConfig,
        instance: &str,
        builder: &Builder,
        id: u64,
    ) -> BuildOutcome {
        let mut log = BuildLog::with_limit(BUILD_LOG_LIMIT);
        let result = self.run_job(cfg, instance, builder, id, &mut log).await;
        match result {
            Ok((image, digest)) => BuildOutcome {
                result: Ok(image),
                digest,
                log,
            },
            Err(why) => BuildOutcome {
                result: Err(why),
                digest: None,
                log,
            },
        }
    }

    /// Deletes the interrupted build's Job (its pod goes with it); one already gone is fine.
    async fn abandon(&self, instance: &str, id: u64) {
        let ns = self.settings.namespace(instance);
        let name = super::build_job::build_job_name(instance, id);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match jobs.delete(&name, &params).await {
            Ok(_) => tracing::info!(job = name, namespace = ns, "interrupted build Job deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(job = name, namespace = ns, error = %e, "deleting an interrupted build Job")
            }
        }
    }

    /// A registry reference: the cluster's images are not the control plane's to remove.
    fn removable(&self) -> bool {
        false
    }
}
