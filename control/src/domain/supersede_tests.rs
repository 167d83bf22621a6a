//! A rollout stuck in CrashLoopBackOff is superseded by any spec-changing operation (deploy,
//! scale, variables, config), never by a reboot, an export or a delete.

use std::{collections::BTreeMap, time::Duration};

use proptest::prelude::*;

use super::sim::*;
use super::*;

fn timings() -> Timings {
    Timings {
        grace: Duration::from_secs(30),
        health_timeout: Duration::from_secs(60),
        crashloop_timeout: Duration::from_secs(600),
        ..Timings::default()
    }
}

/// A two-node production deployment whose operation `stuck` is crash-looping on node 0.
fn crash_looping(stuck: OpKind) -> (Sim, OpId) {
    let mut sim = Sim::new(DeploymentType::Production, 2, timings());
    let first = sim
        .submit(OpKind::Deploy {
            version: v("3.35.0"),
            image: None,
        })
        .unwrap();
    sim.settle();
    assert_eq!(sim.status(first), OpStatus::Completed);
    sim.behaviour = NodeBehaviour::CrashOnStart;
    let id = sim.submit(stuck).unwrap();
    for _ in 0..4 {
        sim.deliver(0);
    }
    assert!(sim
        .ctl
        .deployment
        .nodes
        .iter()
        .any(|n| n.state == NodeRunState::CrashLoopBackOff));
    assert_eq!(sim.status(id), OpStatus::InProgress);
    (sim, id)
}

fn kind(k: u8, x: u8) -> OpKind {
    match k % 7 {
        0 => OpKind::Deploy {
            version: v(["3.35.0", "3.36.0", "3.37.0"][x as usize % 3]),
            image: x.is_multiple_of(2).then(|| format!("img{x}")),
        },
        1 => OpKind::Scale {
            node_cpus: u32::from(x % 3) + 1,
            db_cpus: u32::from(x % 2) + 2,
        },
        2 => OpKind::SetVars {
            vars: BTreeMap::from([(format!("v{x}"), "1".into())]),
        },
        3 => OpKind::SetConfig {
            config: BTreeMap::from([(format!("c{x}"), "1".into())]),
            secret_config: BTreeMap::new(),
            remove_config: Default::default(),
            remove_secret_config: Default::default(),
        },
        4 => OpKind::Reboot,
        5 => OpKind::Export,
        _ => OpKind::Delete,
    }
}

#[test]
fn a_config_change_supersedes_a_crash_looping_deploy_and_keeps_the_good_version() {
    let (mut sim, bad) = crash_looping(OpKind::Deploy {
        version: v("3.36.0"),
        image: Some("bad".into()),
    });
    sim.behaviour = NodeBehaviour::Healthy;
    let fix = sim.submit(kind(3, 7)).unwrap();
    assert_eq!(sim.status(bad), OpStatus::Failed);
    let why = sim.saved[&bad].error.clone().unwrap();
    assert!(why.contains(&format!("superseded by operation {fix} (set-config)")));
    assert_eq!(sim.superseded, vec![(bad, fix)]);
    sim.settle();
    assert_eq!(sim.status(fix), OpStatus::Completed);
    let spec = &sim.ctl.deployment.spec;
    assert_eq!((spec.version, spec.image.clone()), (v("3.35.0"), None));
    assert_eq!(spec.config.get("c7").map(String::as_str), Some("1"));
    assert_eq!(sim.nodes_down(), 0);
}

#[test]
fn a_reboot_waits_behind_a_crash_loop() {
    let (mut sim, stuck) = crash_looping(kind(2, 1));
    let reboot = sim.submit(OpKind::Reboot).unwrap();
    assert_eq!(sim.status(stuck), OpStatus::InProgress);
    assert_eq!(sim.status(reboot), OpStatus::Pending);
    assert!(sim.superseded.is_empty());
    // The crash loop runs out its timeout; only then does the reboot run.
    sim.behaviour = NodeBehaviour::CrashOnStart;
    for _ in 0..200 {
        if sim.status(stuck).is_final() {
            break;
        }
        if !sim.deliver(0) && !sim.fire_timer() {
            break;
        }
    }
    assert_eq!(sim.status(stuck), OpStatus::Failed);
    assert!(sim.saved[&stuck]
        .error
        .as_deref()
        .unwrap()
        .contains("CrashLoopBackOff"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever was crash-looping, a spec-changing operation ends it at once (audited with
    /// both ids) and then completes; any other operation leaves it running.
    #[test]
    fn only_spec_changes_supersede_a_crash_loop(
        stuck_k in 0u8..5, stuck_x in 0u8..8, next_k in 0u8..7, next_x in 0u8..8,
    ) {
        let (mut sim, stuck) = crash_looping(kind(stuck_k, stuck_x));
        let next = kind(next_k, next_x);
        let supersedes = next.changes_spec();
        sim.behaviour = NodeBehaviour::Healthy;
        let Ok(by) = sim.submit(next) else {
            // Only the delete of a protected deployment is refused here.
            prop_assert!(next_k % 7 == 6);
            return Ok(());
        };
        if supersedes {
            prop_assert_eq!(sim.status(stuck), OpStatus::Failed);
            prop_assert_eq!(sim.superseded.clone(), vec![(stuck, by)]);
            sim.settle();
            prop_assert_eq!(sim.status(by), OpStatus::Completed);
            prop_assert_eq!(sim.nodes_down(), 0);
        } else {
            prop_assert_eq!(sim.status(stuck), OpStatus::InProgress);
            prop_assert_eq!(sim.status(by), OpStatus::Pending);
            prop_assert!(sim.superseded.is_empty());
        }
    }
}

/// The operation shows how long its current phase may wait: the drain's grace, then (while
/// crash-looping) the next restart.
#[test]
fn progress_shows_when_the_wait_ends() {
    let mut sim = Sim::new(DeploymentType::Production, 2, timings());
    sim.submit(kind(0, 0)).unwrap();
    sim.settle();
    sim.submit(set_grace("30")).unwrap();
    sim.settle();
    let reboot = sim.submit(OpKind::Reboot).unwrap();
    let p = sim.saved[&reboot].progress.clone().unwrap();
    assert_eq!(p.phase, "draining");
    assert_eq!(p.until, Some(sim.now.after(timings().grace)));
    sim.settle();
    let (sim, stuck) = crash_looping(kind(2, 3));
    let p = sim.saved[&stuck].progress.clone().unwrap();
    assert_eq!(p.phase, "crash_loop_back_off");
    assert!(p.until.is_some_and(|t| t > sim.now), "{p:?}");
}

/// Sets the deployment's `shutdown_grace_sec` (Nakama's config key).
fn set_grace(v: &str) -> OpKind {
    OpKind::SetConfig {
        config: BTreeMap::from([("shutdown_grace_sec".to_string(), v.to_string())]),
        secret_config: BTreeMap::new(),
        remove_config: Default::default(),
        remove_secret_config: Default::default(),
    }
}

/// A rolling operation waits the deployment's own `shutdown_grace_sec` (at most the
/// platform's cap) for a draining node, Nakama's default (0: no wait) when it is unset, and
/// every node it starts carries that grace for its driver; a bad value is refused.
#[test]
fn the_drain_waits_the_deployments_shutdown_grace() {
    let mut sim = Sim::new(DeploymentType::Production, 2, timings());
    sim.submit(kind(0, 0)).unwrap();
    sim.settle();
    // Unset: Nakama's default of 0 s, not the platform's 30 s.
    let reboot = sim.submit(OpKind::Reboot).unwrap();
    let p = sim.saved[&reboot].progress.clone().unwrap();
    assert_eq!(p.phase, "draining");
    assert_eq!(p.until, Some(sim.now));
    sim.settle();
    assert_eq!(sim.status(reboot), OpStatus::Completed);
    assert!(sim
        .started
        .iter()
        .all(|l| l.shutdown_grace == Duration::ZERO));
    let set = set_grace;
    for bad in ["-1", "ten", "3601"] {
        assert_eq!(
            sim.submit(set(bad)).unwrap_err(),
            DomainError::InvalidGrace(bad.into())
        );
    }
    sim.submit(set("7")).unwrap();
    sim.settle();
    let reboot = sim.submit(OpKind::Reboot).unwrap();
    let p = sim.saved[&reboot].progress.clone().unwrap();
    assert_eq!(p.until, Some(sim.now.after(Duration::from_secs(7))));
    sim.settle();
    let last = sim.started.last().unwrap();
    assert_eq!(last.shutdown_grace, Duration::from_secs(7), "{last:?}");
    // Above the platform's cap (30 s here), the cap holds.
    sim.submit(set("3600")).unwrap();
    sim.settle();
    let reboot = sim.submit(OpKind::Reboot).unwrap();
    let p = sim.saved[&reboot].progress.clone().unwrap();
    assert_eq!(p.until, Some(sim.now.after(timings().grace)));
    sim.settle();
    assert_eq!(sim.started.last().unwrap().shutdown_grace, timings().grace);
}
