//! Carrying object sets to the API server: server-side apply under one field manager, and the
//! two deletions the driver needs (a pod for a rolling step, a namespace for a deployment).

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy},
    Client,
};

use super::{database::CNPG_API_VERSION, desired::ObjectSet, DatabaseFlavor, KubeSettings};

/// The one field manager of every object the driver writes: a field changed by hand is taken
/// back on the next apply (`force`), and `kubectl` shows who owns what.
pub const FIELD_MANAGER: &str = "kanmon-control";

/// Why an API call failed. Messages name the object (`Kind/name`), never its content.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Server-side apply of one object was refused or failed.
    #[error("applying {object} in {namespace}: {source}")]
    Apply {
        /// `Kind/name`.
        object: String,
        /// Namespace of the deployment.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an object failed (other than it being gone already).
    #[error("deleting {object}: {source}")]
    Delete {
        /// `Kind/namespace/name`.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An export Job could not be run to completion or its output not be read.
    #[error("export {job}: {reason}")]
    Export {
        /// `Job/namespace/name`.
        job: String,
        /// What went wrong.
        reason: String,
    },
    /// Asking the API server which APIs it serves failed.
    #[error("discovering the {api} API: {source}")]
    Discovery {
        /// API group/version.
        api: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What a pod deletion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodDeletion {
    /// The pod was asked to terminate (it drains through preStop and its grace period).
    Deleted,
    /// No such pod, or it is another incarnation already: nothing to stop.
    Gone,
}

fn is_status(e: &kube::Error, codes: &[u16]) -> bool {
    matches!(e, kube::Error::Api(s) if codes.contains(&s.code))
}

/// Applies and deletes the objects of deployments.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    settings: KubeSettings,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("namespace_prefix", &self.settings.namespace_prefix)
            .finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier on `client`.
    pub fn new(client: Client, settings: KubeSettings) -> Self {
        Self { client, settings }
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// Which database this cluster can run: CloudNativePG when its API is served.
    pub async fn database_flavor(&self) -> Result<DatabaseFlavor, ApplyError> {
        match self.client.list_api_group_resources(CNPG_API_VERSION).await {
            Ok(list) if list.resources.iter().any(|r| r.kind == "Cluster") => {
                Ok(DatabaseFlavor::CloudNativePg)
            }
            Ok(_) => Ok(DatabaseFlavor::StatefulSet),
            Err(e) if is_status(&e, &[404]) => Ok(DatabaseFlavor::StatefulSet),
            Err(source) => Err(ApplyError::Discovery {
                api: CNPG_API_VERSION,
                source,
            }),
        }
    }

    /// Server-side applies every object in order, stopping at the first failure (later
    /// objects depend on earlier ones; the next apply starts over, which is idempotent).
    pub async fn apply(&self, set: &ObjectSet) -> Result<(), ApplyError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for o in &set.objects {
            let api: Api<DynamicObject> = if o.namespaced {
                Api::namespaced_with(self.client.clone(), &set.namespace, &o.resource)
            } else {
                Api::all_with(self.client.clone(), &o.resource)
            };
            let name = o.object.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(&o.object))
                .await
                .map_err(|source| ApplyError::Apply {
                    object: o.describe(),
                    namespace: set.namespace.clone(),
                    source,
                })?;
            tracing::debug!(object = %o.describe(), namespace = %set.namespace, "applied");
        }
        Ok(())
    }

    /// Deletes the pod of `node` (one OnDelete step: the StatefulSet controller then creates its
    /// successor from the current template). With `uid`, only that incarnation is deleted: a
    /// late step cannot stop the successor.
    pub async fn delete_pod(
        &self,
        instance: &str,
        node: &str,
        uid: Option<&str>,
    ) -> Result<PodDeletion, ApplyError> {
        let ns = self.settings.namespace(instance);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = DeleteParams {
            preconditions: uid.map(|u| Preconditions {
                uid: Some(u.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(node, &params).await {
            Ok(_) => Ok(PodDeletion::Deleted),
            // 404: gone; 409: the precondition names an incarnation that was already replaced.
            Err(e) if is_status(&e, &[404, 409]) => Ok(PodDeletion::Gone),
            Err(source) => Err(ApplyError::Delete {
                object: format!("Pod/{ns}/{node}"),
                source,
            }),
        }
    }

    /// Deletes a deployment: its namespace, and with it every object the driver made (the
    /// namespace controller removes them; PersistentVolumeClaims included). Returns once the
    /// deletion is accepted; deleting a deployment that has no namespace succeeds.
    pub async fn delete_deployment(&self, instance: &str) -> Result<(), ApplyError> {
        let ns = self.settings.namespace(instance);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&ns, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, &[404]) => Ok(()),
            Err(source) => Err(ApplyError::Delete {
                object: format!("Namespace/{ns}"),
                source,
            }),
        }
    }
}
