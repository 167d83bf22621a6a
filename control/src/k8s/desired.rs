//! The whole object set of one deployment, in the order it is applied.

use std::fmt;

use k8s_openapi::{
    api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::ObjectMeta, Resource,
};
use kube::api::{ApiResource, DynamicObject};
use serde::Serialize;

use super::{
    database::{cnpg_cluster, cnpg_cluster_resource, postgres_service, postgres_statefulset},
    names::{labels, Names, INSTANCE_LABEL, ZONE_LABEL},
    network::policies,
    nodes::{disruption_budget, service, statefulset},
    secret::{database_secret, database_url, node_secret},
    DatabaseFlavor, KubeSettings, ObjectError,
};
use crate::domain::{Deployment, Spec};

/// What [`desired`] needs besides the settings.
#[derive(Clone, Copy)]
pub struct DesiredInput<'a> {
    /// The deployment (identity, keys, type, edge flags).
    pub deployment: &'a Deployment,
    /// The spec new pods run: the applied one, or the one a rolling operation moves to.
    pub spec: &'a Spec,
    /// The spec's generation (every pod records the one it was created with).
    pub generation: u64,
    /// Which database the cluster can run.
    pub database: DatabaseFlavor,
    /// The database password: generated once by the caller's CSPRNG and kept, since PostgreSQL
    /// takes it only when it initialises its volume.
    pub database_password: &'a str,
}

impl fmt::Debug for DesiredInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesiredInput")
            .field("instance", &self.deployment.instance.as_str())
            .field("generation", &self.generation)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// One object to apply, with the API resource it is served under.
#[derive(Clone)]
pub struct DesiredObject {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether it lives in a namespace (everything but the Namespace itself).
    pub namespaced: bool,
    /// The object.
    pub object: DynamicObject,
}

impl DesiredObject {
    fn typed<K>(object: &K) -> Result<Self, ObjectError>
    where
        K: Resource + kube::Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let object = serde_json::to_value(object)
            .and_then(serde_json::from_value)
            .map_err(|_| ObjectError::Encode {
                kind: resource.kind.clone(),
            })?;
        Ok(Self {
            namespaced: <K as Resource>::URL_PATH_SEGMENT != "namespaces",
            resource,
            object,
        })
    }

    /// `Kind/name`, for logs and errors (never the content: Secrets are among these).
    pub fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.resource.kind,
            self.object.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

impl fmt::Debug for DesiredObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A deployment's objects in dependency order: the Namespace, the Secrets pods mount, the
/// database, the policies, the Service and budget, and the node StatefulSet last (its pods
/// need everything before it).
#[derive(Debug, Clone)]
pub struct ObjectSet {
    /// The namespace everything but the first object lives in.
    pub namespace: String,
    /// The objects, in order.
    pub objects: Vec<DesiredObject>,
}

/// The desired objects of a deployment. Pure: the same input gives the same objects.
pub fn desired(input: DesiredInput<'_>, settings: &KubeSettings) -> Result<ObjectSet, ObjectError> {
    let d = input.deployment;
    let instance = d.instance.as_str();
    let names = Names::new(&settings.namespace_prefix, instance)?;
    // The domain's launch merges config and secret config; every pod runs it.
    let launch = d.launch(0, input.spec, input.generation, settings.grace);
    let url = database_url(
        &input.database.host(&names),
        &names.namespace,
        input.database_password,
    );
    let (node_secret, hash) = node_secret(&names, instance, &d.keys, &launch, &url);

    let mut ns_labels = labels(instance, None);
    ns_labels.insert(INSTANCE_LABEL.into(), instance.into());
    ns_labels.insert(ZONE_LABEL.into(), d.zone.as_str().into());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(names.namespace.clone()),
            labels: Some(ns_labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };

    let mut objects = vec![
        DesiredObject::typed(&namespace)?,
        DesiredObject::typed(&database_secret(&names, instance, input.database_password))?,
        DesiredObject::typed(&node_secret)?,
    ];
    for p in policies(&names, instance, input.database, settings) {
        objects.push(DesiredObject::typed(&p)?);
    }
    match input.database {
        DatabaseFlavor::CloudNativePg => objects.push(DesiredObject {
            resource: cnpg_cluster_resource(),
            namespaced: true,
            object: cnpg_cluster(&names, instance, input.spec.db_cpus, settings)?,
        }),
        DatabaseFlavor::StatefulSet => {
            objects.push(DesiredObject::typed(&postgres_service(&names, instance))?);
            objects.push(DesiredObject::typed(&postgres_statefulset(
                &names,
                instance,
                input.spec.db_cpus,
                settings,
            )?)?);
        }
    }
    objects.push(DesiredObject::typed(&service(&names, d))?);
    objects.push(DesiredObject::typed(&disruption_budget(&names, instance))?);
    objects.push(DesiredObject::typed(&statefulset(
        &names,
        d,
        &launch,
        d.wanted_nodes(input.spec),
        &hash,
        settings,
    ))?);
    Ok(ObjectSet {
        namespace: names.namespace,
        objects,
    })
}
