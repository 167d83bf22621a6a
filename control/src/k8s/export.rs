//! Running an export: the `pg_dump` Job of [`super::export_job`], applied like every other
//! object, waited for, and its output read back from its pod's log.

use std::time::Duration;

use futures_util::AsyncBufRead;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    api::{Api, ListParams, LogParams, Patch, PatchParams},
    runtime::wait::await_condition,
};

use super::{apply::ApplyError, Applier, FIELD_MANAGER};

/// Whether a Job has ended, and how.
fn outcome(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(true),
            "Failed" => Some(false),
            _ => None,
        })
}

impl Applier {
    /// Applies an export Job, waits up to `timeout` for it to end, and returns its dump (the
    /// pod's standard output) as a stream, for the caller to write to the export file.
    pub async fn run_export(
        &self,
        job: &Job,
        timeout: Duration,
    ) -> Result<impl AsyncBufRead + use<>, ApplyError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let what = format!("Job/{ns}/{name}");
        let export = |reason: String| ApplyError::Export {
            job: what.clone(),
            reason,
        };
        let jobs: Api<Job> = Api::namespaced(self.client().clone(), &ns);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        jobs.patch(&name, &params, &Patch::Apply(job))
            .await
            .map_err(|source| ApplyError::Apply {
                object: format!("Job/{name}"),
                namespace: ns.clone(),
                source,
            })?;
        let ended = await_condition(jobs, &name, |j: Option<&Job>| j.and_then(outcome).is_some());
        let done = tokio::time::timeout(timeout, ended)
            .await
            .map_err(|_| export(format!("not finished within {timeout:?}")))?
            .map_err(|e| export(e.to_string()))?;
        if done.as_ref().and_then(outcome) != Some(true) {
            return Err(export("pg_dump failed (see the pod's log)".into()));
        }
        let pods: Api<Pod> = Api::namespaced(self.client().clone(), &ns);
        let list = pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
            .await
            .map_err(|e| export(e.to_string()))?;
        let pod = list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .next()
            .ok_or_else(|| export("its pod is gone".into()))?;
        pods.log_stream(&pod, &LogParams::default())
            .await
            .map_err(|e| export(e.to_string()))
    }
}
