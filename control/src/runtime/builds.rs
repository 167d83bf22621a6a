//! Carries out `Intent::Build`: looks the builder up, records the build as running, runs it
//! with the local runner ([`crate::driver::build_local`]), records its outcome and bounded log,
//! then reports `Event::BuildFinished` to the deployment's actor. The operation's result names
//! the image reference; the log is read from the build record (`GET .../builds/{id}/log`).

use std::sync::Arc;

use serde_json::json;

use super::{effects::send, now, Inner, Msg};
use crate::{
    domain::{controller::Event, OpId},
    driver::build_local::run_build,
    store::{BuildRecord, BuildStatus},
};

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
    let cfg = crate::driver::build_local::LocalBuildConfig {
        dir: cfg.dir.join(instance),
        ..cfg.clone()
    };
    let outcome = run_build(&cfg, &builder, op).await;
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
    Ok(json!({
        "build": op,
        "builder": builder.name,
        "version": builder.version.to_string(),
        "image": image,
        "digest": outcome.digest,
        "log": format!("/v1/deployments/{instance}/builds/{op}/log"),
    }))
}
