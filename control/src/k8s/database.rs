//! The deployment's PostgreSQL: a CloudNativePG `Cluster` where the operator is installed,
//! otherwise a one-replica StatefulSet with its own volume; and the `pg_dump` Job of an export.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        batch::v1::{Job, JobSpec},
        core::v1::{
            Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, PersistentVolumeClaim,
            PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            SecretKeySelector, Service, ServicePort, ServiceSpec, VolumeMount,
            VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    core::TypeMeta,
};
use serde_json::json;

use crate::domain::tier::{postgres_settings, PgSetting};

use super::{
    names::{labels, selector, Names, Role},
    network::POSTGRES_PORT,
    nodes::resources,
    secret::DATABASE_USER,
    settings::KubeSettings,
    ObjectError,
};

/// API version of CloudNativePG's `Cluster`.
pub const CNPG_API_VERSION: &str = "postgresql.cnpg.io/v1";

/// Which kind of database a deployment gets; the caller finds out once per cluster (whether the
/// `postgresql.cnpg.io/v1` API is served) and passes it in, so the object builders stay pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFlavor {
    /// A CloudNativePG `Cluster` of one instance (the operator runs PostgreSQL).
    CloudNativePg,
    /// A single-replica PostgreSQL StatefulSet with a PersistentVolumeClaim.
    StatefulSet,
}

impl DatabaseFlavor {
    /// The Service name clients connect to (CloudNativePG's read-write Service is `{name}-rw`).
    pub(super) fn host(self, names: &Names) -> String {
        match self {
            Self::CloudNativePg => format!("{}-rw", names.database),
            Self::StatefulSet => names.database.clone(),
        }
    }
}

/// The `ApiResource` of CloudNativePG's `Cluster`.
pub fn cnpg_cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    )
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The PostgreSQL settings of a `db_cpus` tier with the memory its resources give it (one
/// sizing rule for both drivers: `domain::tier::postgres_settings`).
fn tier_settings(db_cpus: u32, settings: &KubeSettings) -> Vec<PgSetting> {
    postgres_settings(
        db_cpus,
        u64::from(db_cpus.max(1)) * u64::from(settings.memory_per_cpu_mib),
    )
}

fn storage(settings: &KubeSettings) -> Result<Quantity, ObjectError> {
    let s = settings.database_storage.trim();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ObjectError::Setting {
            key: "database_storage",
            reason: format!("{s:?} is not a quantity such as 10Gi"),
        });
    }
    Ok(Quantity(s.into()))
}

/// The CloudNativePG `Cluster`: one instance, bootstrapped with our credentials so the database
/// URL is known before the operator runs; our labels inherited by its pods, so the
/// NetworkPolicies select them.
pub(super) fn cnpg_cluster(
    names: &Names,
    instance: &str,
    db_cpus: u32,
    settings: &KubeSettings,
) -> Result<DynamicObject, ObjectError> {
    let res = resources(db_cpus, settings);
    // The operator applies them, restarting the instance for those that need it.
    let parameters: BTreeMap<&str, String> = tier_settings(db_cpus, settings)
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    let mut pod_labels = labels(instance, Some(Role::Database));
    pod_labels.extend(selector(instance, Role::Database));
    let mut storage = json!({ "size": storage(settings)? });
    if let Some(class) = &settings.storage_class {
        storage["storageClass"] = json!(class);
    }
    let mut obj = DynamicObject::new(&names.database, &cnpg_cluster_resource())
        .within(&names.namespace)
        .data(json!({
            "spec": {
                "instances": 1,
                "imageName": settings.database_image,
                "inheritedMetadata": { "labels": pod_labels },
                "bootstrap": { "initdb": {
                    "database": DATABASE_USER,
                    "owner": DATABASE_USER,
                    "secret": { "name": names.database_secret },
                }},
                "storage": storage,
                "resources": res,
                "postgresql": { "parameters": parameters },
            }
        }));
    obj.metadata.labels = Some(labels(instance, Some(Role::Database)));
    obj.types = Some(TypeMeta {
        api_version: CNPG_API_VERSION.into(),
        kind: "Cluster".into(),
    });
    Ok(obj)
}

/// The fallback: PostgreSQL in a one-replica StatefulSet, its data on a claim from the
/// volumeClaimTemplate (deleted with the namespace).
pub(super) fn postgres_statefulset(
    names: &Names,
    instance: &str,
    db_cpus: u32,
    settings: &KubeSettings,
) -> Result<StatefulSet, ObjectError> {
    let mut pod_labels = labels(instance, Some(Role::Database));
    pod_labels.extend(selector(instance, Role::Database));
    let container = Container {
        name: "postgres".into(),
        image: Some(settings.database_image.clone()),
        // The official image's entrypoint runs `postgres` with arguments that start with `-`;
        // a new tier changes the pod template, so the pod is replaced and starts with them.
        args: Some(
            tier_settings(db_cpus, settings)
                .into_iter()
                .flat_map(|s| ["-c".to_string(), format!("{}={}", s.name, s.value)])
                .collect(),
        ),
        env: Some(vec![
            secret_env("POSTGRES_USER", &names.database_secret, "username"),
            secret_env("POSTGRES_PASSWORD", &names.database_secret, "password"),
            env("POSTGRES_DB", DATABASE_USER),
            env("PGDATA", "/var/lib/postgresql/data/pgdata"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: POSTGRES_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "pg_isready".into(),
                    "-U".into(),
                    DATABASE_USER.into(),
                    "-d".into(),
                    DATABASE_USER.into(),
                ]),
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: Some(resources(db_cpus, settings)),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/var/lib/postgresql/data".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels(instance, Some(Role::Database))),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: settings.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    storage(settings)?,
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    Ok(StatefulSet {
        metadata: ObjectMeta {
            name: Some(names.database.clone()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(instance, Some(Role::Database))),
            ..ObjectMeta::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names.database.clone()),
            selector: LabelSelector {
                match_labels: Some(selector(instance, Role::Database)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    // The official image's postgres user; the volume is made writable for it.
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(999),
                        run_as_group: Some(999),
                        fs_group: Some(999),
                        run_as_non_root: Some(true),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        status: None,
    })
}

/// The database Service of the StatefulSet flavour (CloudNativePG makes its own).
pub(super) fn postgres_service(names: &Names, instance: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(names.database.clone()),
            namespace: Some(names.namespace.clone()),
            // No kanmon.dev/instance label: the edge would take this Service for the nodes'.
            labels: Some(labels(instance, Some(Role::Database))),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(instance, Role::Database)),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: POSTGRES_PORT,
                target_port: Some(IntOrString::String("postgres".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The Job of one export: `pg_dump` (plain SQL) to its standard output, which the control plane
/// reads through the pod's log (so no volume and no upload credentials are needed). A Job is
/// never retried (`backoffLimit: 0`: a failed export is a failed operation) and is removed an
/// hour after it finished.
pub fn export_job(
    settings: &KubeSettings,
    instance: &str,
    flavor: DatabaseFlavor,
    export_id: u64,
) -> Result<Job, ObjectError> {
    let names = Names::new(&settings.namespace_prefix, instance)?;
    let mut pod_labels = labels(instance, Some(Role::Export));
    pod_labels.extend(selector(instance, Role::Export));
    let container = Container {
        name: "pg-dump".into(),
        image: Some(settings.database_image.clone()),
        command: Some(vec![
            "pg_dump".into(),
            "--format=plain".into(),
            "--no-owner".into(),
            "--no-privileges".into(),
        ]),
        env: Some(vec![
            env("PGHOST", &flavor.host(&names)),
            env("PGPORT", &POSTGRES_PORT.to_string()),
            env("PGDATABASE", DATABASE_USER),
            secret_env("PGUSER", &names.database_secret, "username"),
            secret_env("PGPASSWORD", &names.database_secret, "password"),
        ]),
        security_context: Some(super::nodes::restricted()),
        ..Container::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(format!("{instance}-export-{export_id}")),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(instance, Some(Role::Export))),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(3600),
            active_deadline_seconds: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(999),
                        run_as_group: Some(999),
                        run_as_non_root: Some(true),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}
