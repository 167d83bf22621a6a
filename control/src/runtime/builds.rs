//! Carries out `Intent::Build`: looks the builder up, records the build as running, runs it
//! through the [`BuildRunner`] (a local child process, or a Kubernetes Job under that driver),
//! records its outcome and bounded log, removes the artifacts of old builds, then reports
//! `Event::BuildFinished` to the deployment's actor. The operation's result names the image
//! reference; the log is read from the build record (`GET .../builds/{id}/log`).

use std::{path::Path, sync::Arc};

use serde_json::json;

use super::{effects::send, now, Inner, Msg};
use crate::{
    domain::{build::artifacts_to_remove, controller::Event, OpId},
    driver::build::{BuildRunner, LocalBuildConfig, LocalBuildRunner},
    store::{BuildRecord, BuildStatus},
};

/// The error of a build a control-plane restart interrupted.
pub(super) const INTERRUPTED: &str = "interrupted by a restart of the control plane";

/// Starts build `op` of `builder` for `instance` in its own task.
pub(super) fn run(inner: &Arc<Inner>, instance: String, op: OpId, builder: String) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let result = build(&inner, &instance, op, &builder).await;
        if let Err(e) = &result {
            tracing::warn!(instance, op, builder, error = %e, "build failed");
        }
        send(
            &inner,
            &instance,
            Msg::Event(Event::BuildFinished { op, result }),
        );
    });
}

async fn build(
    inner: &Inner,
    instance: &str,
    op: OpId,
    name: &str,
) -> Result<serde_json::Value, String> {
    let Some(cfg) = inner.settings.builds.as_ref() else {
        return Err("builds are not configured on this control plane".into());
    };
    let stored = inner
        .store
        .builder(instance, name)
        .map_err(|e| format!("reading builder {name:?}: {e}"))?
        .ok_or_else(|| format!("builder {name:?} no longer exists"))?;
    let builder = stored.builder;
    builder
        .check_build(&inner.settings.catalog)
        .map_err(|e| e.to_string())?;
    let mut record = BuildRecord {
        id: op,
        instance: instance.to_string(),
        builder: builder.name.clone(),
        version: builder.version.to_string(),
        status: BuildStatus::Running,
        image: None,
        digest: None,
        error: None,
        log: String::new(),
        started_at: now(),
        finished_at: None,
    };
    let save = |r: &BuildRecord| {
        inner
            .store
            .save_build(r)
            .map_err(|e| format!("recording build {op}: {e}"))
    };
    save(&record)?;
    // Each deployment's builds and artifacts under their own directory: the local driver runs
    // only a deployment's own artifacts as its nodes' program.
    let cfg = LocalBuildConfig {
        dir: cfg.dir.join(instance),
        ..cfg.clone()
    };
    let runner: &dyn BuildRunner = match inner.build_runner.get() {
        Some(r) => r.as_ref(),
        None => &LocalBuildRunner,
    };
    let outcome = runner.run(&cfg, instance, &builder, op).await;
    record.log = outcome.log.text();
    record.finished_at = Some(now());
    record.digest = outcome.digest.clone();
    match &outcome.result {
        Ok(image) => {
            record.status = BuildStatus::Succeeded;
            record.image = Some(image.clone());
        }
        Err(why) => {
            record.status = BuildStatus::Failed;
            record.error = Some(why.clone());
        }
    }
    save(&record)?;
    let image = outcome.result?;
    if runner.removable() {
        clean_up(inner, instance, &builder.name, &cfg);
    }
    Ok(json!({
        "build": op,
        "builder": builder.name,
        "version": builder.version.to_string(),
        "image": image,
        "digest": outcome.digest,
        "log": format!("/v1/deployments/{instance}/builds/{op}/log"),
    }))
}

/// Removes the artifacts of `builder`'s older builds (see [`artifacts_to_remove`]): only files
/// in the deployment's own images directory, never the image its current spec runs. A
/// failure is logged; the build that triggered it has succeeded either way.
fn clean_up(inner: &Inner, instance: &str, builder: &str, cfg: &LocalBuildConfig) {
    let artifacts = match inner.store.build_artifacts(instance, builder) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(instance, builder, error = %e, "listing build artifacts");
            return;
        }
    };
    let in_use = inner
        .actor(instance)
        .and_then(|a| a.view().deployment.spec.image.clone());
    let in_use: Vec<&str> = in_use.iter().map(String::as_str).collect();
    let images = cfg.dir.join("images");
    let remove = artifacts_to_remove(&artifacts, cfg.keep, &in_use);
    // Two builds with the same output share one file: it stays while a kept build has it.
    let kept: Vec<&str> = artifacts
        .iter()
        .filter(|(id, _)| !remove.contains(id))
        .map(|(_, image)| image.as_str())
        .collect();
    for id in remove {
        let Some((_, image)) = artifacts.iter().find(|(i, _)| *i == id) else {
            continue;
        };
        let path = Path::new(image);
        // Only a file of this deployment's images directory: a record can never make the
        // cleanup remove anything else.
        if path.parent() != Some(images.as_path()) {
            continue;
        }
        if !kept.contains(&image.as_str()) {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(instance, build = id, error = %e, "removing a build artifact");
                    continue;
                }
            }
        }
        let note = format!(
            "artifact removed by the cleanup (the last {} builds of {builder} are kept)",
            cfg.keep
        );
        if let Err(e) = inner.store.forget_build_artifact(instance, id, &note) {
            tracing::warn!(instance, build = id, error = %e, "recording a removed artifact");
        } else {
            tracing::info!(instance, build = id, "old build artifact removed");
        }
    }
}
