//! The deployment's keys on the nodes: given as Nakama's config keys, rotated by a rolling
//! reboot that applies them only when it completes.

use std::{collections::BTreeMap, time::Duration};

use super::sim::*;
use super::*;

fn running() -> Sim {
    let timings = Timings {
        health_timeout: Duration::from_secs(60),
        crashloop_timeout: Duration::from_secs(600),
        ..Timings::default()
    };
    let mut sim = Sim::new(DeploymentType::Production, 2, timings);
    let id = sim
        .submit(OpKind::Deploy {
            version: v("3.35.0"),
            image: None,
        })
        .unwrap();
    sim.settle();
    assert_eq!(sim.status(id), OpStatus::Completed);
    sim
}

fn rotate(value: &str) -> OpKind {
    OpKind::RotateKey {
        key: KeyName::Server,
        value: value.into(),
    }
}

#[test]
fn every_launch_carries_both_keys_as_secret_config() {
    let dep = running_deployment();
    let launch = dep.launch(0, &dep.spec, 1, std::time::Duration::from_secs(30));
    assert_eq!(launch.config[SERVER_KEY_CONFIG], dep.keys.server_key);
    assert_eq!(launch.config[RUNTIME_KEY_CONFIG], dep.keys.runtime_key);
    assert!(launch.secret_keys.contains(SERVER_KEY_CONFIG));
    assert!(launch.secret_keys.contains(RUNTIME_KEY_CONFIG));
    assert!(!format!("{launch:?}").contains(&dep.keys.server_key));
}

#[test]
fn a_rotation_restarts_every_node_with_the_new_key_and_applies_it_on_completion() {
    let mut sim = running();
    let before = sim.ctl.deployment.keys.clone();
    let id = sim.submit(rotate("fresh-key")).unwrap();
    // Mid-rollout the deployment still has the old key.
    sim.deliver(0);
    assert_eq!(sim.ctl.deployment.keys, before);
    sim.settle();
    assert_eq!(sim.status(id), OpStatus::Completed);
    assert_eq!(sim.ctl.deployment.keys.server_key, "fresh-key");
    assert_eq!(sim.ctl.deployment.keys.runtime_key, before.runtime_key);
    assert!(sim
        .ctl
        .deployment
        .nodes
        .iter()
        .all(|n| n.generation == 2 && n.state == NodeRunState::Ready));
}

#[test]
fn a_failed_rotation_keeps_the_old_keys() {
    let mut sim = running();
    let before = sim.ctl.deployment.keys.clone();
    sim.behaviour = NodeBehaviour::CrashOnStart;
    let id = sim.submit(rotate("fresh-key")).unwrap();
    sim.settle();
    assert_eq!(sim.status(id), OpStatus::Failed);
    assert_eq!(sim.ctl.deployment.keys, before);
}

#[test]
fn config_cannot_set_the_keys_and_views_never_show_a_new_key() {
    let mut sim = running();
    for key in [SERVER_KEY_CONFIG, RUNTIME_KEY_CONFIG] {
        let err = sim
            .submit(OpKind::SetConfig {
                config: BTreeMap::new(),
                secret_config: BTreeMap::from([(key.to_string(), "mine".into())]),
                remove_config: Default::default(),
                remove_secret_config: Default::default(),
            })
            .unwrap_err();
        assert_eq!(err, DomainError::ReservedKey(key.into()));
    }
    assert!(
        sim.submit(rotate("")).is_err(),
        "a rotation needs a drawn key"
    );
    let shown = serde_json::to_string(&rotate("fresh-key").without_new_key()).unwrap();
    assert!(!shown.contains("fresh-key"), "{shown}");
    let redacted = serde_json::to_string(&rotate("fresh-key").redacted()).unwrap();
    assert!(!redacted.contains("fresh-key"), "{redacted}");
    assert_eq!(
        rotate("x").permissions(),
        vec![Permission::Deploy, Permission::Secrets]
    );
    assert!(!rotate("x").changes_spec());
}
