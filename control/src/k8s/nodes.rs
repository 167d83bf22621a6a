//! The nodes of a deployment: their StatefulSet, the Service the edge discovers, and the
//! PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
            Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, ResourceRequirements, SecretVolumeSource, SecurityContext,
            Service, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    names::{
        env_name, labels, selector, Names, Role, CONSOLE_ALLOW_ANNOTATION, FALLBACK_ANNOTATION,
        GENERATION_ANNOTATION, INSTANCE_LABEL, SECRET_HASH_ANNOTATION, ZONE_LABEL,
    },
    secret::NODE_CONFIG_KEY,
    settings::{KubeSettings, CONSOLE_PORT, GRPC_PORT, HTTP_PORT},
};
use crate::domain::{Deployment, NodeLaunch};

/// Where the node Secret is mounted (read-only, 0400).
const SECRET_DIR: &str = "/etc/kanmon/node";

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// CPU and memory of one component: requests equal limits (Guaranteed QoS), so a tier is what
/// a deployment gets, not what it may burst to.
pub(super) fn resources(cpus: u32, settings: &KubeSettings) -> ResourceRequirements {
    let q = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!(
                "{}Mi",
                u64::from(cpus) * u64::from(settings.memory_per_cpu_mib)
            )),
        ),
    ]);
    ResourceRequirements {
        requests: Some(q.clone()),
        limits: Some(q),
        ..ResourceRequirements::default()
    }
}

/// Non-root, read-only root, no privilege escalation, no capabilities.
pub(super) fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..SecurityContext::default()
    }
}

fn image(settings: &KubeSettings, launch: &NodeLaunch) -> String {
    launch.image.clone().unwrap_or_else(|| {
        settings
            .image
            .replace("{version}", &launch.version.to_string())
    })
}

/// The node StatefulSet: `OnDelete`, so the operations queue picks every pod that restarts;
/// `Parallel`, so a crashing pod does not hold back the creation of the others.
pub(super) fn statefulset(
    names: &Names,
    d: &Deployment,
    launch: &NodeLaunch,
    replicas: u32,
    secret_hash: &str,
    settings: &KubeSettings,
) -> StatefulSet {
    let instance = d.instance.as_str();
    let mut pod_labels = labels(instance, Some(Role::Node));
    pod_labels.extend(selector(instance, Role::Node));
    let mut env = vec![
        // The pod name is the node id (`{instance}-N`).
        EnvVar {
            name: "KANMON_NODE_ID".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        env("KANMON_VERSION", launch.version.to_string()),
        env("KANMON_GENERATION", launch.generation.to_string()),
        env(
            "KANMON_NODE_CONFIG",
            format!("{SECRET_DIR}/{NODE_CONFIG_KEY}"),
        ),
    ];
    env.extend(
        launch
            .vars
            .iter()
            .map(|(k, v)| self::env(&env_name("KANMON_VAR_", k), v)),
    );
    let container = Container {
        name: "node".into(),
        image: Some(image(settings, launch)),
        args: Some(settings.node_args.clone()),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("console".into()),
                container_port: CONSOLE_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthcheck".into()),
                port: IntOrString::String("http".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(2),
            timeout_seconds: Some(2),
            ..Probe::default()
        }),
        // The pause that lets the edge see the endpoint terminating before the node gets
        // SIGTERM (needs Kubernetes ≥ 1.30, where the sleep action is on by default).
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::try_from(settings.pre_stop.as_secs()).unwrap_or(i64::MAX),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        // The domain's split of the node CPUs over the nodes (`domain::tier::cpus_per_node`).
        resources: Some(resources(launch.cpus, settings)),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "node-secret".into(),
                mount_path: SECRET_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            // The root filesystem is read-only; scratch space is per pod and goes with it.
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(names.nodes.clone()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(instance, Some(Role::Node))),
            ..ObjectMeta::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            service_name: Some(names.nodes.clone()),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector(instance, Role::Node)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        (
                            GENERATION_ANNOTATION.to_string(),
                            launch.generation.to_string(),
                        ),
                        (SECRET_HASH_ANNOTATION.to_string(), secret_hash.to_string()),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(
                        settings.termination_grace_seconds(launch.shutdown_grace),
                    ),
                    // Nodes never talk to the API server.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![
                        Volume {
                            name: "node-secret".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.node_secret.clone()),
                                default_mode: Some(0o400),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

/// The Service the edge discovers: instance and zone labels (mirrored onto its EndpointSlices),
/// ports named `http` and `grpc`.
pub(super) fn service(names: &Names, d: &Deployment) -> Service {
    let instance = d.instance.as_str();
    let mut l = labels(instance, Some(Role::Node));
    l.insert(INSTANCE_LABEL.into(), instance.into());
    l.insert(ZONE_LABEL.into(), d.zone.as_str().into());
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: ObjectMeta {
            name: Some(names.nodes.clone()),
            namespace: Some(names.namespace.clone()),
            labels: Some(l),
            annotations: Some(BTreeMap::from([
                (
                    FALLBACK_ANNOTATION.to_string(),
                    d.fallback_to_draining.to_string(),
                ),
                (
                    CONSOLE_ALLOW_ANNOTATION.to_string(),
                    d.console_allow
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(instance, Role::Node)),
            ports: Some(vec![
                port("http", HTTP_PORT),
                port("grpc", GRPC_PORT),
                port("console", CONSOLE_PORT),
            ]),
            // Endpoints of pods that are starting or terminating stay in the slices, with
            // their conditions: the edge maps `serving && terminating` to draining.
            publish_not_ready_addresses: Some(false),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// At most one node down at a time through voluntary disruptions (a cluster drain), so a
/// production deployment keeps serving.
pub(super) fn disruption_budget(names: &Names, instance: &str) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(names.nodes.clone()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(instance, Some(Role::Node))),
            ..ObjectMeta::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(instance, Role::Node)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
