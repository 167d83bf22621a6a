//! The Kubernetes driver's building blocks: what a deployment looks like as cluster objects,
//! how they are applied, and how pods are read back into node observations.
//!
//! The building blocks are independent of the runtime's driver trait; [`KubeDriver`] wires
//! them into it (with the pod-UID → incarnation book of `book.rs`):
//! - [`desired`] is pure: a deployment, the spec to run and [`KubeSettings`] in, the typed
//!   object set of its namespace out (golden-tested, no I/O);
//! - [`Applier`] carries an object set to the API server with server-side apply under one field
//!   manager, deletes a pod (one OnDelete rolling step) or a whole deployment (its namespace);
//! - [`observe`] is pure: a Pod (and its StatefulSet) in, a [`PodView`] out, and
//!   [`observe::changes`] the observations between two views; [`watch_observations`] runs
//!   kube-runtime watchers over one deployment namespace and streams them.
//!
//! Ownership is by namespace: every object of a deployment lives in `{prefix}{instance}`, so
//! deleting that namespace removes all of them (PersistentVolumeClaims included).

mod apply;
mod book;
pub mod build_job;
mod build_run;
mod client;
mod database;
mod desired;
mod driver;
mod export;
mod names;
mod network;
mod nodes;
pub mod observe;
#[cfg(test)]
mod observe_tests;
pub mod rbac;
mod secret;
mod settings;
mod watch;

pub use apply::{Applier, ApplyError, PodDeletion, FIELD_MANAGER};
pub use build_run::KubeBuildRunner;
pub use client::{connect, ClientError};
pub use database::{cnpg_cluster_resource, export_job, DatabaseFlavor, CNPG_API_VERSION};
pub use desired::{desired, DesiredInput, DesiredObject, ObjectSet};
pub use driver::KubeDriver;
pub use names::{
    labels, Role, COMPONENT_LABEL, FALLBACK_ANNOTATION, GENERATION_ANNOTATION, INSTANCE_LABEL,
    MANAGED_BY, SECRET_HASH_ANNOTATION, ZONE_LABEL,
};
pub use observe::{ContainerView, NodeEndpoints, NodeObservation, Observation, PodView};
pub use settings::{KubeSettings, CONSOLE_PORT, GRPC_PORT, HTTP_PORT};
pub use watch::{watch_observations, WatchError};

/// Why the desired objects of a deployment could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// A generated name is longer than Kubernetes allows for that kind of object.
    #[error("{what} name {name:?} is {len} characters; Kubernetes allows {max}")]
    NameTooLong {
        /// Which name (namespace, statefulset, ...).
        what: &'static str,
        /// The name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An object could not be encoded (a bug: typed objects always encode). Names the kind
    /// only: the encoder's message could quote a value, and Secrets are among the objects.
    #[error("encoding a {kind} failed")]
    Encode {
        /// The kind.
        kind: String,
    },
    /// A setting cannot be turned into an object field (e.g. an invalid quantity).
    #[error("setting {key}: {reason}")]
    Setting {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
