//! What the API shows: secrets are removed or redacted unless the caller may read them.
//!
//! The deployment answer is its own type rather than the domain's `Deployment` with fields
//! deleted from its JSON: the keys are left out by construction, and the OpenAPI schema is
//! derived from the very type that is sent.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{
    Deployment, DeploymentType, DowngradeAllowance, NodeRecord, Operation, Spec, Timestamp,
};

/// What a caller may see of one deployment beyond `view`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sight {
    /// Secret config values (`secrets`).
    pub(crate) secrets: bool,
    /// Where an export's database dump is downloaded (`export`).
    pub(crate) exports: bool,
}

/// Placeholder for a secret value the caller may not read.
pub(super) const REDACTED: &str = "<redacted>";

/// A deployment as the API shows it: never its keys (`GET /v1/deployments/{instance}/keys`
/// with `secrets` has those); secret config values only with `secrets`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeploymentView {
    /// Permanent: instance name.
    instance: String,
    /// Permanent: zone.
    zone: String,
    /// Permanent: type.
    #[serde(rename = "type")]
    kind: DeploymentType,
    org: String,
    title: String,
    /// `{instance}.{zone}.{base_domain}`.
    hostname: String,
    /// The running version (the same as `spec.version`).
    version: String,
    /// The applied spec.
    spec: Spec,
    /// Bumped each time an operation changes the spec.
    generation: u64,
    delete_protection: bool,
    fallback_to_draining: bool,
    nodes: Vec<NodeRecord>,
    created_at: Timestamp,
    created_by: String,
    deleted: bool,
    /// A downgrade a platform admin allowed, until a deploy uses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    downgrade_allowance: Option<DowngradeAllowance>,
    /// Only in `GET /v1/deployments/{instance}`: the operations not finished yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) queue: Option<Vec<Operation>>,
}

/// A deployment without its keys; secret config values only with `secrets`.
pub(super) fn deployment(dep: &Deployment, secrets: bool) -> DeploymentView {
    let mut spec = dep.spec.clone();
    if !secrets {
        spec.secret_config
            .values_mut()
            .for_each(|x| *x = REDACTED.to_string());
    }
    DeploymentView {
        instance: dep.instance.to_string(),
        zone: dep.zone.to_string(),
        kind: dep.kind,
        org: dep.org.clone(),
        title: dep.title.clone(),
        hostname: dep.hostname.clone(),
        version: dep.spec.version.to_string(),
        spec,
        generation: dep.generation,
        delete_protection: dep.delete_protection,
        fallback_to_draining: dep.fallback_to_draining,
        nodes: dep.nodes.clone(),
        created_at: dep.created_at,
        created_by: dep.created_by.clone(),
        deleted: dep.deleted,
        downgrade_allowance: dep.downgrade_allowance.clone(),
        queue: None,
    }
}

/// An operation; secret config values only with `secrets`, an export's download link only
/// with `export`.
pub(super) fn operation(op: &Operation, sight: &Sight) -> Operation {
    let mut op = op.clone();
    op.kind = if sight.secrets {
        op.kind.without_new_key()
    } else {
        op.kind.redacted()
    };
    if !sight.exports {
        if let Some(db) = op
            .result
            .as_mut()
            .and_then(|r| r.get_mut("database"))
            .and_then(serde_json::Value::as_object_mut)
        {
            db.remove("download");
        }
    }
    op
}
