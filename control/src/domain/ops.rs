//! Operations: what users queue against a deployment, and their status records.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use kanmon_router::Version;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{deployment::KeyName, permissions::Permission, serde_names, Timestamp};

/// Operation id, unique across the platform (allocated by the store).
pub type OpId = u64;

/// What an operation does. Payloads hold everything needed to run it later, since it may wait
/// in the queue behind others.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OpKind {
    /// Roll out a new version or image (a redeploy of the same version is allowed).
    Deploy {
        /// Target version.
        #[serde(with = "serde_names::version")]
        #[schema(value_type = String)]
        version: Version,
        /// Image override.
        #[serde(default)]
        image: Option<String>,
    },
    /// Restart every node, one at a time.
    Reboot,
    /// Change node and database CPUs (node count follows node CPUs).
    Scale {
        /// Node CPUs.
        node_cpus: u32,
        /// Database CPUs (never lower than now).
        db_cpus: u32,
    },
    /// Replace the runtime variables.
    SetVars {
        /// The new variables (the whole set).
        vars: BTreeMap<String, String>,
    },
    /// Change the config and secret config: a merge, so a request can only change or remove
    /// the keys it names (an empty map never wipes anything).
    SetConfig {
        /// Plain config entries to add or overwrite. `shutdown_grace_sec` (Nakama's key, whole
        /// seconds 0–3600; unset: 0) is also how long the platform lets a node drain and
        /// finish after SIGTERM, at most the platform's `--grace`.
        #[serde(default)]
        config: BTreeMap<String, String>,
        /// Secret config entries to add or overwrite. Setting them needs `secrets`; in API
        /// answers the values are present only with `secrets` (otherwise `<redacted>`).
        #[serde(default)]
        secret_config: BTreeMap<String, String>,
        /// Plain config keys to remove.
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        remove_config: BTreeSet<String>,
        /// Secret config keys to remove.
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        remove_secret_config: BTreeSet<String>,
    },
    /// Replace one of the deployment's keys: a rolling reboot that starts every node with the
    /// new key; the deployment's keys change when it completes (a failed one keeps the old).
    RotateKey {
        /// Which key.
        key: KeyName,
        /// The new key, drawn by the control plane's CSPRNG when the operation is queued
        /// (whatever a request sends is replaced); never shown in an operation view.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        value: String,
    },
    /// Produce an export of the deployment's settings.
    Export,
    /// Obtain the deployment's certificate for exactly its hostname, or renew it. Queued by
    /// the control plane itself (when the deployment is created and when a renewal is due),
    /// never by a user: every deployment's issuance draws on the one CA account's rate limits.
    Certificate,
    /// Run one of the deployment's builders; a success's result names the image reference a
    /// `deploy` can use. Holds the queue while it runs, as an export does, so a build never
    /// races a rollout of the deployment.
    Build {
        /// The builder's name.
        builder: String,
        /// The version it compiles against: always the builder's, filled in when queued (a
        /// caller's value is replaced), checked against the catalog again when it starts.
        #[serde(default = "unset_version", with = "serde_names::version")]
        #[schema(value_type = String)]
        version: Version,
    },
    /// Remove all nodes, revoke the deployment's certificates (a CA outage defers that to the
    /// certificate keeper without failing the delete) and remove the deployment.
    Delete,
}

/// The placeholder of a build's version until the API fills in the builder's.
fn unset_version() -> Version {
    Version {
        major: 0,
        minor: 0,
        patch: 0,
        revision: None,
    }
}

impl OpKind {
    /// The operation's name as used in the API and CLI.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Deploy { .. } => "deploy",
            Self::Reboot => "reboot",
            Self::Scale { .. } => "scale",
            Self::SetVars { .. } => "set-vars",
            Self::SetConfig { .. } => "set-config",
            Self::RotateKey { .. } => "rotate-key",
            Self::Export => "export",
            Self::Certificate => "certificate",
            Self::Build { .. } => "build",
            Self::Delete => "delete",
        }
    }

    /// Whether it changes what the nodes run (version, image, CPUs, variables, config): such an
    /// operation supersedes a rollout stuck in CrashLoopBackOff, since the user is fixing or
    /// replacing what the stuck one was rolling out. A reboot, an export or a delete does not:
    /// they change nothing the crashing nodes would run differently.
    pub fn changes_spec(&self) -> bool {
        matches!(
            self,
            Self::Deploy { .. }
                | Self::Scale { .. }
                | Self::SetVars { .. }
                | Self::SetConfig { .. }
        )
    }

    /// The permissions a user needs to queue it: the operation's own, plus `secrets` for a
    /// config change that sets or removes any secret config key.
    pub fn permissions(&self) -> Vec<Permission> {
        let own = match self {
            Self::Deploy { .. }
            | Self::Reboot
            | Self::Certificate
            | Self::RotateKey { .. }
            // A build makes an image to deploy: the same trust as deploying one.
            | Self::Build { .. } => Permission::Deploy,
            Self::Scale { .. } => Permission::Scale,
            Self::SetVars { .. } | Self::SetConfig { .. } => Permission::Edit,
            Self::Export => Permission::Export,
            Self::Delete => Permission::Delete,
        };
        let mut all = vec![own];
        if matches!(self, Self::RotateKey { .. }) {
            all.push(Permission::Secrets);
        }
        if let Self::SetConfig {
            secret_config,
            remove_secret_config,
            ..
        } = self
        {
            if !secret_config.is_empty() || !remove_secret_config.is_empty() {
                all.push(Permission::Secrets);
            }
        }
        all
    }

    /// A copy with secret values replaced, for showing to users without `secrets`.
    pub fn redacted(&self) -> Self {
        match self {
            Self::SetConfig {
                config,
                secret_config,
                remove_config,
                remove_secret_config,
            } => Self::SetConfig {
                config: config.clone(),
                secret_config: secret_config
                    .keys()
                    .map(|k| (k.clone(), "<redacted>".to_string()))
                    .collect(),
                remove_config: remove_config.clone(),
                remove_secret_config: remove_secret_config.clone(),
            },
            other => other.without_new_key(),
        }
    }

    /// A copy without a rotation's new key value, for every operation view (the new key is
    /// read through the keys endpoint, once it applies).
    pub fn without_new_key(&self) -> Self {
        match self {
            Self::RotateKey { key, .. } => Self::RotateKey {
                key: *key,
                value: String::new(),
            },
            other => other.clone(),
        }
    }
}

impl fmt::Debug for OpKind {
    /// Never prints config values: operation payloads can carry secrets and end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deploy { version, image } => write!(f, "Deploy({version}, {image:?})"),
            Self::Scale { node_cpus, db_cpus } => write!(f, "Scale({node_cpus}, {db_cpus})"),
            Self::RotateKey { key, .. } => write!(f, "RotateKey({})", key.as_str()),
            Self::Build { builder, version } => write!(f, "Build({builder}, {version})"),
            other => f.write_str(other.name()),
        }
    }
}

/// Status of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// Queued behind others.
    Pending,
    /// Running; at most one per deployment.
    InProgress,
    /// Done; the deployment has the new state.
    Completed,
    /// Refused at start, crashed out, superseded or interrupted; the deployment keeps its
    /// previous spec.
    Failed,
}

impl OpStatus {
    /// Whether the operation has finished.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// Live progress of a rolling operation, for `kanmon ops` and the CLI's progress line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Current step (1-based).
    pub step: u32,
    /// Number of steps.
    pub of: u32,
    /// Node being worked on.
    pub node: String,
    /// What is happening to it (`draining`, `stopping`, `starting`, `crash_loop_back_off`).
    pub phase: String,
    /// When the phase's wait ends at the latest: the end of the drain's grace period
    /// (`draining`), the health deadline (`starting`) or the next restart
    /// (`crash_loop_back_off`); so users see how long the operation may wait here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

/// One operation with who asked and when each transition happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    /// Id.
    #[schema(value_type = u64)]
    pub id: OpId,
    /// Deployment instance name.
    pub instance: String,
    /// What it does.
    #[serde(flatten)]
    pub kind: OpKind,
    /// Status.
    pub status: OpStatus,
    /// Who queued it.
    pub requested_by: String,
    /// When it was queued.
    pub requested_at: Timestamp,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Why it failed.
    pub error: Option<String>,
    /// Result (export document; a certificate's description; a delete's revocation outcome
    /// per hostname, under `certificates`). An export's `result.database.download` link is
    /// present only with the `export` permission.
    pub result: Option<serde_json::Value>,
    /// Rolling progress while in progress.
    pub progress: Option<Progress>,
}

impl Operation {
    /// A new pending operation.
    pub fn new(id: OpId, instance: &str, kind: OpKind, who: &str, now: Timestamp) -> Self {
        Self {
            id,
            instance: instance.to_string(),
            kind,
            status: OpStatus::Pending,
            requested_by: who.to_string(),
            requested_at: now,
            started_at: None,
            finished_at: None,
            error: None,
            result: None,
            progress: None,
        }
    }
}
