//! The sans-io heart of the control plane.
//!
//! Nothing in here reads a clock, opens a socket or spawns a task: time comes in as a
//! [`Timestamp`] argument and every side effect leaves as an [`Intent`] for the runtime to carry
//! out. That is what lets the lifecycle rules be unit- and property-tested by feeding node events
//! and time, and replayed exactly.

#[cfg(test)]
mod allowance_tests;
pub mod billing;
pub mod build;
#[cfg(test)]
mod certificate_tests;
pub mod controller;
pub mod crashloop;
pub mod deployment;
pub mod intents;
#[cfg(test)]
mod key_tests;
pub mod notify;
pub mod ops;
pub mod permissions;
#[cfg(test)]
mod proptests;
pub mod rolling;
pub mod rules;
mod serde_names;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod supersede_tests;
#[cfg(test)]
mod tests;
pub mod tier;
pub mod time;

pub use controller::{Controller, Event, Intent, Timings};
pub use crashloop::CrashLoop;
pub use deployment::shutdown_grace;
pub use deployment::{
    CreateDeployment, Deployment, DeploymentEdit, DeploymentType, DowngradeAllowance, KeyName,
    Keys, NodeLaunch, NodeRecord, NodeRunState, Spec, NAKAMA_DEFAULT_SHUTDOWN_GRACE_SEC,
    RUNTIME_KEY_CONFIG, SERVER_KEY_CONFIG, SHUTDOWN_GRACE_CONFIG,
};
pub use ops::{OpId, OpKind, OpStatus, Operation, Progress};
pub use permissions::{Grant, Permission, PermissionSet, Scope};
pub use rolling::{Rollout, Step};
pub use time::Timestamp;

use kanmon_router::{NameError, Version};

/// Why the domain refused a request. Each variant is one rule so API users see exactly which
/// rule their request broke, and the HTTP layer can map it to a status code without parsing
/// strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Type, zone, instance name and version are chosen once; only a `deploy` moves the version.
    #[error("{field} is a permanent choice and cannot be changed (use a deploy operation to upgrade the version)")]
    PermanentChoice {
        /// The field the request tried to change.
        field: &'static str,
    },
    /// The instance name or zone label broke a naming rule.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The name would read as a console hostname (`kanmon_router::console`): another
    /// deployment's console, or no reachable name at all.
    #[error(
        "instance name {name:?} is reserved: it matches the console hostname pattern {pattern:?}"
    )]
    ReservedName {
        /// The name asked for.
        name: String,
        /// The console label pattern in force.
        pattern: String,
    },
    /// The zone is not in the platform's zone catalog.
    #[error("zone {0:?} is not offered (see the zone catalog)")]
    UnknownZone(String),
    /// The zone exists but is only available on request, and the organization has not been
    /// given it.
    #[error(
        "zone {zone:?} is available on request: ask the platform support team (a platform \
         admin) to enable it for organization {org:?} (`kanmon zones enable {zone} --org {org}`)"
    )]
    ZoneOnRequest {
        /// The zone.
        zone: String,
        /// The organization that asked for it.
        org: String,
    },
    /// Only on-request zones are enabled per organization; the others are offered to all.
    #[error("zone {0:?} is offered to every organization; only on-request zones are enabled")]
    ZoneOffered(String),
    /// The version is not a supported release.
    #[error("version {version} is {status}")]
    VersionNotSupported {
        /// The requested version.
        version: Version,
        /// `unsupported` (too old) or `unknown` (never released).
        status: &'static str,
    },
    /// Deploys never move a deployment to an older version.
    #[error("downgrade from {from} to {to} is refused")]
    Downgrade {
        /// The running version.
        from: Version,
        /// The requested, older version.
        to: Version,
    },
    /// A downgrade allowance must name an older version than the running one.
    #[error("{to} is not older than the running {from}: only a downgrade needs allowing")]
    NotADowngrade {
        /// The running version.
        from: Version,
        /// The version named.
        to: Version,
    },
    /// Database CPUs can be raised, never lowered (the volume and tuning assume the size).
    #[error("database CPUs can only go up: {from} -> {to} refused")]
    DatabaseCpuDown {
        /// Current database CPUs.
        from: u32,
        /// Requested database CPUs.
        to: u32,
    },
    /// CPU counts must be within the offered sizes.
    #[error("{what} must be between 1 and {max}, got {got}")]
    CpuRange {
        /// Which resource.
        what: &'static str,
        /// Largest offered size.
        max: u32,
        /// What was asked for.
        got: u32,
    },
    /// Production deployments are protected from deletion until the protection is turned off.
    #[error("delete protection is on; turn it off (edit) before deleting")]
    DeleteProtected,
    /// The deployment is deleted (or being deleted) and takes no more operations.
    #[error("deployment is deleted")]
    Deleted,
    /// A certificate operation is already waiting or running: one at a time is enough, and
    /// each is an order at the CA.
    #[error("a certificate operation is already queued")]
    CertificateQueued,
    /// `shutdown_grace_sec` must be whole seconds within the offered range.
    #[error("shutdown_grace_sec must be whole seconds from 0 to 3600, got {0:?}")]
    InvalidGrace(String),
    /// The config key is where the platform gives nodes a deployment key; keys change only
    /// through a `rotate-key` operation.
    #[error("config key {0:?} is the deployment's own key: rotate it with a rotate-key operation (kanmon keys rotate)")]
    ReservedKey(String),
    /// A variable or config key broke the key rules.
    #[error("invalid key {0:?}: use 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'")]
    InvalidKey(String),
}
