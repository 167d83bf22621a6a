//! The build seam: the runtime decides that a build runs (the domain's `Intent::Build`), a
//! [`BuildRunner`] carries it out where the nodes run — a child process on this machine
//! ([`LocalBuildRunner`], `build_local.rs`) or a `batch/v1` Job in the deployment's namespace
//! (`crate::k8s::KubeBuildRunner`). Either way the result is a [`BuildOutcome`]: an image
//! reference `deploy` can use, or why not, and the bounded log.

use async_trait::async_trait;

pub use super::build_local::{BuildOutcome, LocalBuildConfig};
use crate::domain::build::Builder;

/// Runs one build of a deployment's builder to its end.
#[async_trait]
pub trait BuildRunner: Send + Sync + 'static {
    /// Runs build `id` of `builder` for `instance` with `cfg` (`cfg.dir` is the deployment's
    /// own builds directory). Never fails otherwise than through the outcome: a bad source, a
    /// failing command or a cluster that refuses the Job is a failed build with its log.
    async fn run(
        &self,
        cfg: &LocalBuildConfig,
        instance: &str,
        builder: &Builder,
        id: u64,
    ) -> BuildOutcome;

    /// Stops what is left of build `id` of `instance`, which a restart of the control plane
    /// interrupted (its record is failed already). Best effort: a failure is logged.
    async fn abandon(&self, _instance: &str, _id: u64) {}

    /// Whether an image reference this runner made is a file it can remove
    /// ([`crate::runtime`]'s artifact cleanup); a registry reference is not.
    fn removable(&self) -> bool;
}

/// Builds as child processes of the control plane (see `build_local.rs`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalBuildRunner;

#[async_trait]
impl BuildRunner for LocalBuildRunner {
    async fn run(
        &self,
        cfg: &LocalBuildConfig,
        _instance: &str,
        builder: &Builder,
        id: u64,
    ) -> BuildOutcome {
        super::build_local::run_build(cfg, builder, id).await
    }

    fn removable(&self) -> bool {
        true
    }
}
