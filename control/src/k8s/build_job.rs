//! A build as cluster objects, pure (no I/O): the `batch/v1` Job that runs one build in the
//! deployment's namespace, and the NetworkPolicy its pods get.
//!
//! The Job: an init container clones the builder's git source (depth 1, `ext` transport off)
//! into an `emptyDir`; the build container (the configured image, `{version}` replaced by the
//! builder's version) runs the configured command there by `sh -c`, with CPU and memory
//! requested and limited, `backoffLimit: 0` (a failed build is not retried),
//! `activeDeadlineSeconds` the build time limit and `ttlSecondsAfterFinished` so the cluster
//! removes it. The command publishes the image it built by writing its reference to
//! `$KANMON_BUILD_RESULT`, the container's termination message file: the control plane reads it
//! from the pod's status (no registry access, no log parsing). A local directory source cannot
//! be built in a cluster: the pods do not see the control plane's disk.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
            ResourceRequirements, Volume, VolumeMount,
        },
        networking::v1::{NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicySpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
    },
};

use super::{
    names::{labels, selector, Names, Role},
    network::{dns, tcp},
    KubeSettings, ObjectError,
};
use crate::{
    domain::build::{BuildSource, Builder},
    driver::build::LocalBuildConfig,
};

/// The build container's name (its termination message is the result).
pub const BUILD_CONTAINER: &str = "build";
/// Where the command writes the image reference (the default `terminationMessagePath`).
pub const RESULT_PATH: &str = "/dev/termination-log";
/// How long the cluster keeps a finished build Job (and its pod's log).
pub const TTL_AFTER_FINISHED: i32 = 3600;
/// The checkout, in the shared `emptyDir`.
const WORKSPACE: &str = "/workspace";
const SOURCE_DIR: &str = "/workspace/src";

/// The name of build `id`'s Job (`{instance}-build-{id}`).
pub fn build_job_name(instance: &str, id: u64) -> String {
    format!("{instance}-build-{id}")
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn quantity(key: &'static str, q: &str) -> Result<Quantity, ObjectError> {
    let ok = !q.is_empty()
        && q.starts_with(|c: char| c.is_ascii_digit())
        && q.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    if !ok {
        return Err(ObjectError::Setting {
            key,
            reason: format!("{q:?} is not a quantity"),
        });
    }
    Ok(Quantity(q.to_string()))
}

fn mount() -> Vec<VolumeMount> {
    vec![VolumeMount {
        name: "workspace".into(),
        mount_path: WORKSPACE.into(),
        ..VolumeMount::default()
    }]
}

/// The Job of build `id` of `builder` (see the module docs). Refused: a directory source, a
/// bad quantity, a name too long.
pub fn build_job(
    settings: &KubeSettings,
    cfg: &LocalBuildConfig,
    instance: &str,
    builder: &Builder,
    id: u64,
) -> Result<Job, ObjectError> {
    let names = Names::new(&settings.namespace_prefix, instance)?;
    let BuildSource::Git(url) = &builder.source else {
        return Err(ObjectError::Setting {
            key: "source",
            reason: "a local directory cannot be built by a Kubernetes Job (its pod does not \
                     see the control plane's disk): give the builder a git URL"
                .into(),
        });
    };
    let name = build_job_name(instance, id);
    if name.len() > 63 {
        return Err(ObjectError::NameTooLong {
            what: "build job",
            len: name.len(),
            name,
            max: 63,
        });
    }
    let resources = BTreeMap::from([
        ("cpu".to_string(), quantity("builds.cpu", &cfg.job.cpu)?),
        (
            "memory".to_string(),
            quantity("builds.memory", &cfg.job.memory)?,
        ),
    ]);
    let version = builder.version.to_string();
    let security = Some(super::nodes::restricted());
    let clone = Container {
        name: "source".into(),
        image: Some(cfg.job.git_image.clone()),
        command: Some(
            [
                "git",
                "-c",
                "protocol.ext.allow=never",
                "clone",
                "--depth",
                "1",
                "--",
                url,
                SOURCE_DIR,
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![
            env("GIT_TERMINAL_PROMPT", "0"),
            env("HOME", WORKSPACE),
        ]),
        volume_mounts: Some(mount()),
        resources: Some(ResourceRequirements {
            limits: Some(resources.clone()),
            requests: Some(resources.clone()),
            ..ResourceRequirements::default()
        }),
        security_context: security.clone(),
        ..Container::default()
    };
    let build = Container {
        name: BUILD_CONTAINER.into(),
        image: Some(cfg.job.image.replace("{version}", &version)),
        command: Some(vec!["sh".into(), "-c".into(), cfg.command.clone()]),
        working_dir: Some(SOURCE_DIR.into()),
        env: Some(vec![
            env("KANMON_BUILD_VERSION", version.clone()),
            env("KANMON_BUILD_SOURCE", SOURCE_DIR),
            env("KANMON_BUILD_RESULT", RESULT_PATH),
            env("HOME", WORKSPACE),
        ]),
        volume_mounts: Some(mount()),
        resources: Some(ResourceRequirements {
            limits: Some(resources.clone()),
            requests: Some(resources),
            ..ResourceRequirements::default()
        }),
        termination_message_path: Some(RESULT_PATH.into()),
        termination_message_policy: Some("File".into()),
        security_context: security,
        ..Container::default()
    };
    let mut pod_labels = labels(instance, Some(Role::Build));
    pod_labels.extend(selector(instance, Role::Build));
    pod_labels.insert("kanmon.dev/builder".into(), builder.name.clone());
    let deadline = i64::try_from(cfg.timeout.as_secs().max(1)).unwrap_or(i64::MAX);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(names.namespace.clone()),
            labels: Some(pod_labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(vec![clone]),
                    containers: vec![build],
                    volumes: Some(vec![Volume {
                        name: "workspace".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    restart_policy: Some("Never".into()),
                    // A build runs tenant code: no API credentials, no service links.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(1000),
                        run_as_group: Some(1000),
                        fs_group: Some(1000),
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

/// The policy of build pods: nothing may connect to them; they may reach DNS and, on the
/// ports of git and registries (22, 80, 443, 9418), the world outside — never the
/// deployment's database or nodes, whose policies admit no build pod.
pub fn build_policy(settings: &KubeSettings, instance: &str) -> Result<NetworkPolicy, ObjectError> {
    let names = Names::new(&settings.namespace_prefix, instance)?;
    Ok(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some("build".into()),
            namespace: Some(names.namespace),
            labels: Some(labels(instance, Some(Role::Build))),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(instance, Role::Build)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: None,
                    ports: Some(vec![tcp(22), tcp(80), tcp(443), tcp(9418)]),
                },
                dns(),
            ]),
        }),
    })
}

/// The image reference a build's termination message names: one line, no spaces, at most
/// 512 characters; and its digest when the reference is pinned (`…@sha256:HEX`).
pub fn parse_result(message: &str) -> Result<(String, Option<String>), String> {
    let image = message.trim();
    if image.is_empty() {
        return Err(format!(
            "the build wrote no image reference to $KANMON_BUILD_RESULT ({RESULT_PATH})"
        ));
    }
    if image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "$KANMON_BUILD_RESULT must hold one image reference (no spaces, at most 512 bytes)"
                .into(),
        );
    }
    let digest = image
        .rsplit_once("@sha256:")
        .map(|(_, hex)| hex.to_string())
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    Ok((image.to_string(), digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanmon_router::Catalog;
    use std::time::Duration;

    fn cfg() -> LocalBuildConfig {
        LocalBuildConfig {
            command: "make image".into(),
            dir: "/b".into(),
            timeout: Duration::from_secs(600),
            keep: 5,
            job: Default::default(),
        }
    }

    fn builder(source: &str) -> Builder {
        let catalog = Catalog::new(vec!["3.37.0".parse().unwrap()]);
        Builder::new("main", source, "3.37.0".parse().unwrap(), &catalog).unwrap()
    }

    #[test]
    fn a_build_is_a_bounded_job_that_clones_then_runs_the_command() {
        let job = build_job(
            &KubeSettings::default(),
            &cfg(),
            "alpha",
            &builder("https://git.example/game.git"),
            42,
        )
        .unwrap();
        let j = serde_json::to_value(&job).unwrap();
        assert_eq!(j["metadata"]["name"], "alpha-build-42");
        assert_eq!(j["metadata"]["namespace"], "kanmon-alpha");
        assert_eq!(j["spec"]["backoffLimit"], 0);
        assert_eq!(j["spec"]["ttlSecondsAfterFinished"], TTL_AFTER_FINISHED);
        assert_eq!(j["spec"]["activeDeadlineSeconds"], 600);
        let pod = &j["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["automountServiceAccountToken"], false);
        let init = &pod["initContainers"][0];
        assert_eq!(init["command"][7], "https://git.example/game.git");
        assert_eq!(
            init["command"][6], "--",
            "the URL is never read as an option"
        );
        let c = &pod["containers"][0];
        assert_eq!(c["name"], BUILD_CONTAINER);
        assert_eq!(c["image"], "heroiclabs/nakama-pluginbuilder:3.37.0");
        assert_eq!(c["command"], serde_json::json!(["sh", "-c", "make image"]));
        assert_eq!(c["terminationMessagePath"], RESULT_PATH);
        assert_eq!(c["resources"]["limits"]["cpu"], "1");
        assert_eq!(c["resources"]["requests"]["memory"], "2Gi");
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"]["kanmon.dev/component"],
            "build"
        );
        let env: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(env.contains(&"KANMON_BUILD_VERSION") && env.contains(&"KANMON_BUILD_RESULT"));
    }

    #[test]
    fn a_directory_or_a_bad_quantity_is_refused() {
        let s = KubeSettings::default();
        let e = build_job(&s, &cfg(), "alpha", &builder("/srv/game"), 1).unwrap_err();
        assert!(e.to_string().contains("git URL"), "{e}");
        let mut bad = cfg();
        bad.job.memory = "2 Gi;".into();
        let e = build_job(&s, &bad, "alpha", &builder("https://g/x.git"), 1).unwrap_err();
        assert!(e.to_string().contains("builds.memory"), "{e}");
    }

    #[test]
    fn build_pods_reach_no_one_of_the_deployment_and_nobody_reaches_them() {
        let p =
            serde_json::to_value(build_policy(&KubeSettings::default(), "alpha").unwrap()).unwrap();
        assert_eq!(p["spec"]["ingress"], serde_json::json!([]));
        assert_eq!(
            p["spec"]["podSelector"]["matchLabels"]["kanmon.dev/component"],
            "build"
        );
        let egress = p["spec"]["egress"].to_string();
        assert!(!egress.contains("5432"), "{egress}");
    }

    #[test]
    fn the_result_is_one_image_reference() {
        let pinned = format!("reg.example/game@sha256:{}", "ab".repeat(32));
        assert_eq!(
            parse_result(&format!("{pinned}\n")).unwrap(),
            (pinned.clone(), Some("ab".repeat(32)))
        );
        assert_eq!(
            parse_result("reg.example/game:1").unwrap(),
            ("reg.example/game:1".into(), None)
        );
        assert!(parse_result("  \n").is_err());
        assert!(parse_result("two words").is_err());
    }
}
