//! Unit tests of the lifecycle rules, driven through the simulation.

use std::{collections::BTreeMap, time::Duration};

use super::sim::*;
use super::*;

fn fast() -> Timings {
    Timings {
        grace: Duration::from_secs(30),
        health_timeout: Duration::from_secs(60),
        crashloop_timeout: Duration::from_secs(600),
        ..Timings::default()
    }
}

/// A production deployment with `cpus` nodes, initial deploy done.
fn running(kind: DeploymentType, cpus: u32) -> Sim {
    let mut sim = Sim::new(kind, cpus, fast());
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

#[test]
fn create_checks_zone_version_and_defaults() {
    let cat = catalog();
    let mk = |c: CreateDeployment| {
        Deployment::create(
            c,
            &cat,
            &zones(),
            "Kanmon.Test",
            keys(),
            "ann",
            Timestamp(0),
        )
    };
    let prod = mk(create(DeploymentType::Production, 2)).unwrap();
    assert!(prod.delete_protection);
    assert_eq!(prod.hostname, "alpha.us-east1.kanmon.test");
    assert!(
        !mk(create(DeploymentType::Development, 1))
            .unwrap()
            .delete_protection
    );
    let mut c = create(DeploymentType::Production, 2);
    c.zone = kanmon_router::Zone::parse("mars-1").unwrap();
    assert_eq!(
        mk(c).unwrap_err(),
        DomainError::UnknownZone("mars-1".into())
    );
    let mut c = create(DeploymentType::Production, 2);
    c.zone = kanmon_router::Zone::parse("us-east-1").unwrap();
    assert!(matches!(mk(c), Err(DomainError::ZoneOnRequest { .. })));
    let mut c = create(DeploymentType::Production, 2);
    c.version = v("3.30.0");
    assert!(matches!(
        mk(c),
        Err(DomainError::VersionNotSupported {
            status: "unknown",
            ..
        })
    ));
    let mut c = create(DeploymentType::Production, 0);
    c.node_cpus = 0;
    assert!(matches!(
        mk(c),
        Err(DomainError::CpuRange {
            what: "node_cpus",
            ..
        })
    ));
}

#[test]
fn permanent_choices_are_refused() {
    let mut dep = running(DeploymentType::Production, 2).ctl.deployment;
    let before = dep.clone();
    for (edit, field) in [
        (
            DeploymentEdit {
                kind: Some("development".into()),
                ..Default::default()
            },
            "type",
        ),
        (
            DeploymentEdit {
                zone: Some("eu-west1".into()),
                ..Default::default()
            },
            "zone",
        ),
        (
            DeploymentEdit {
                instance: Some("beta".into()),
                ..Default::default()
            },
            "instance",
        ),
        (
            DeploymentEdit {
                version: Some("3.37.0".into()),
                ..Default::default()
            },
            "version",
        ),
    ] {
        let with_change = DeploymentEdit {
            delete_protection: Some(false),
            ..edit
        };
        assert_eq!(
            dep.edit(&with_change),
            Err(DomainError::PermanentChoice { field })
        );
        assert_eq!(dep, before, "a refused edit changes nothing");
    }
    let same = DeploymentEdit {
        zone: Some("US-EAST1".into()),
        delete_protection: Some(false),
        ..Default::default()
    };
    dep.edit(&same).unwrap();
    assert!(!dep.delete_protection);
}

#[test]
fn initial_deploy_starts_one_node_per_cpu_in_production() {
    let sim = running(DeploymentType::Production, 3);
    let nodes = &sim.ctl.deployment.nodes;
    assert_eq!(nodes.len(), 3);
    assert!(nodes
        .iter()
        .all(|n| n.state == NodeRunState::Ready && n.generation == 1));
    assert_eq!(nodes[2].id, "alpha-2");
    assert_eq!(nodes[1].addr, Some("127.0.0.1:7001".parse().unwrap()));
    let dev = running(DeploymentType::Development, 4);
    assert_eq!(dev.ctl.deployment.nodes.len(), 1);
}

#[test]
fn rolling_reboot_runs_node_by_node() {
    let mut sim = running(DeploymentType::Production, 2);
    let id = sim.submit(OpKind::Reboot).unwrap();
    // The first node is drained at once and the proxy told; nothing else happens yet.
    assert_eq!(sim.draining, vec!["alpha-0".to_string()]);
    assert_eq!(sim.status(id), OpStatus::InProgress);
    let p = sim.saved[&id].progress.clone().unwrap();
    assert_eq!(
        (p.step, p.of, p.node.as_str(), p.phase.as_str()),
        (1, 2, "alpha-0", "draining")
    );
    // Connections drained → stop; exited → start; healthy → ready → next node drains.
    let cat = sim.catalog.clone();
    let node = || "alpha-0".to_string();
    let out = sim
        .ctl
        .handle_event(Event::ConnectionsDrained { node: node() }, &cat, sim.now);
    assert!(out.contains(&Intent::StopNode {
        node: node(),
        incarnation: 1
    }));
    let out = sim.ctl.handle_event(
        Event::NodeExited {
            node: node(),
            incarnation: 1,
        },
        &cat,
        sim.now,
    );
    assert!(
        matches!(&out[0], Intent::StartNode { spec } if spec.id == "alpha-0" && spec.incarnation == 2)
    );
    // A late report about the stopped incarnation changes nothing.
    let stale = sim.ctl.handle_event(
        Event::NodeHealthy {
            node: node(),
            incarnation: 1,
        },
        &cat,
        sim.now,
    );
    assert!(stale.is_empty());
    let out = sim.ctl.handle_event(
        Event::NodeHealthy {
            node: node(),
            incarnation: 2,
        },
        &cat,
        sim.now,
    );
    assert_eq!(
        out[0],
        Intent::MarkReady {
            node: "alpha-0".into()
        }
    );
    assert_eq!(
        out[1],
        Intent::MarkDraining {
            node: "alpha-1".into()
        }
    );
    sim.pending.clear();
    sim.apply(out);
    sim.settle();
    assert_eq!(sim.status(id), OpStatus::Completed);
    assert_eq!(sim.nodes_down(), 0);
}

#[test]
fn grace_period_ends_draining() {
    let mut sim = running(DeploymentType::Development, 1);
    // The deployment's own grace (Nakama's default, 0, would not wait at all).
    sim.submit(OpKind::SetConfig {
        config: BTreeMap::from([("shutdown_grace_sec".into(), "30".into())]),
        secret_config: BTreeMap::new(),
        remove_config: Default::default(),
        remove_secret_config: Default::default(),
    })
    .unwrap();
    sim.settle();
    let incarnation = sim.ctl.deployment.nodes[0].incarnation;
    sim.submit(OpKind::Reboot).unwrap();
    sim.pending.clear(); // the node never reports its connections drained
    let cat = sim.catalog.clone();
    let early = sim.ctl.handle_timeout(&cat, Timestamp(sim.now.0 + 29_000));
    assert!(early.iter().all(|i| !matches!(i, Intent::StopNode { .. })));
    let late = sim.ctl.handle_timeout(&cat, Timestamp(sim.now.0 + 30_000));
    assert!(late.contains(&Intent::StopNode {
        node: "alpha-0".into(),
        incarnation
    }));
}

#[test]
fn ops_run_one_at_a_time() {
    let mut sim = running(DeploymentType::Production, 2);
    let a = sim.submit(OpKind::Reboot).unwrap();
    let b = sim
        .submit(OpKind::Scale {
            node_cpus: 3,
            db_cpus: 4,
        })
        .unwrap();
    let c = sim.submit(OpKind::Export).unwrap();
    assert_eq!(
        [sim.status(a), sim.status(b), sim.status(c)],
        [OpStatus::InProgress, OpStatus::Pending, OpStatus::Pending]
    );
    sim.settle();
    assert_eq!(
        [sim.status(a), sim.status(b), sim.status(c)],
        [OpStatus::Completed; 3]
    );
    assert!(sim.saved[&b].started_at >= sim.saved[&a].finished_at);
    assert_eq!(sim.ctl.deployment.nodes.len(), 3);
    assert_eq!(sim.ctl.deployment.spec.db_cpus, 4);
    let down = sim.submit(OpKind::Scale {
        node_cpus: 1,
        db_cpus: 2,
    });
    assert_eq!(down, Err(DomainError::DatabaseCpuDown { from: 4, to: 2 }));
    let id = sim
        .submit(OpKind::Scale {
            node_cpus: 1,
            db_cpus: 4,
        })
        .unwrap();
    sim.settle();
    assert_eq!(sim.status(id), OpStatus::Completed);
    assert_eq!(sim.ctl.deployment.nodes.len(), 1);
}

#[test]
fn downgrade_and_unknown_versions_are_refused() {
    let mut sim = running(DeploymentType::Production, 2);
    let down = sim.submit(OpKind::Deploy {
        version: v("3.34.0"),
        image: None,
    });
    assert!(matches!(down, Err(DomainError::Downgrade { .. })));
    let unknown = sim.submit(OpKind::Deploy {
        version: v("9.0.0"),
        image: None,
    });
    assert!(matches!(
        unknown,
        Err(DomainError::VersionNotSupported { .. })
    ));
    let up = sim
        .submit(OpKind::Deploy {
            version: v("3.37.1"),
            image: None,
        })
        .unwrap();
    sim.settle();
    assert_eq!(sim.status(up), OpStatus::Completed);
    assert_eq!(sim.ctl.deployment.spec.version, v("3.37.1"));
    assert_eq!(sim.ctl.deployment.generation, 2);
}

#[test]
fn crash_loop_backs_off_then_fails_leaving_previous_spec() {
    let mut sim = running(DeploymentType::Production, 2);
    sim.behaviour = NodeBehaviour::CrashOnStart;
    let id = sim
        .submit(OpKind::Deploy {
            version: v("3.37.0"),
            image: None,
        })
        .unwrap();
    let mut delays = Vec::new();
    let mut last_crash = None;
    for _ in 0..1000 {
        if sim.status(id).is_final() {
            break;
        }
        let before = sim.ctl.deployment.nodes[0].state;
        if !sim.deliver(0) && !sim.fire_timer() {
            break;
        }
        let after = sim.ctl.deployment.nodes[0].state;
        if before != after && after == NodeRunState::CrashLoopBackOff {
            if let Some(t) = last_crash {
                delays.push((sim.now.0 - t) / 1000);
            }
            last_crash = Some(sim.now.0);
        }
        // The other node keeps serving throughout.
        assert_eq!(sim.ctl.deployment.nodes[1].state, NodeRunState::Ready);
    }
    assert_eq!(&delays[..5], &[10, 20, 40, 80, 160]);
    assert_eq!(sim.status(id), OpStatus::Failed);
    assert!(sim.saved[&id]
        .error
        .as_deref()
        .unwrap()
        .contains("CrashLoopBackOff"));
    assert_eq!(sim.ctl.deployment.spec.version, v("3.35.0"));
    assert_eq!(sim.ctl.deployment.generation, 1);
}

#[test]
fn new_deploy_supersedes_a_crash_loop() {
    let mut sim = running(DeploymentType::Production, 2);
    sim.behaviour = NodeBehaviour::CrashOnStart;
    let bad = sim
        .submit(OpKind::Deploy {
            version: v("3.36.0"),
            image: Some("bad".into()),
        })
        .unwrap();
    let queued = sim.submit(OpKind::Reboot).unwrap();
    for _ in 0..4 {
        sim.deliver(0);
    }
    assert_eq!(
        sim.ctl.deployment.nodes[0].state,
        NodeRunState::CrashLoopBackOff
    );
    sim.behaviour = NodeBehaviour::Healthy;
    let good = sim
        .submit(OpKind::Deploy {
            version: v("3.36.0"),
            image: None,
        })
        .unwrap();
    assert_eq!(sim.status(bad), OpStatus::Failed);
    assert!(sim.saved[&bad]
        .error
        .as_deref()
        .unwrap()
        .contains("superseded"));
    sim.settle();
    assert_eq!(sim.status(good), OpStatus::Completed);
    assert_eq!(sim.status(queued), OpStatus::Completed);
    assert!(sim.saved[&queued].started_at >= sim.saved[&good].finished_at);
    assert_eq!(sim.nodes_down(), 0);
    assert_eq!(sim.ctl.deployment.spec.image, None);
}

/// Turns delete protection off (production deployments start with it on).
fn unprotect(sim: &mut Sim) {
    sim.ctl
        .deployment
        .edit(&DeploymentEdit {
            delete_protection: Some(false),
            ..Default::default()
        })
        .unwrap();
}

#[test]
fn delete_protection_and_delete() {
    let mut sim = running(DeploymentType::Production, 2);
    assert_eq!(
        sim.submit(OpKind::Delete),
        Err(DomainError::DeleteProtected)
    );
    unprotect(&mut sim);
    let id = sim.submit(OpKind::Delete).unwrap();
    assert_eq!(sim.submit(OpKind::Reboot), Err(DomainError::Deleted));
    sim.settle();
    assert_eq!(sim.status(id), OpStatus::Completed);
    assert!(sim.removed && sim.ctl.deployment.deleted);
    assert!(sim.ctl.deployment.nodes.is_empty());
}

#[test]
fn export_and_config_keep_secrets_out() {
    let mut sim = running(DeploymentType::Development, 1);
    let secret = BTreeMap::from([("db_password".to_string(), "hunter2".to_string())]);
    let cfg = OpKind::SetConfig {
        config: BTreeMap::new(),
        secret_config: secret,
        remove_config: Default::default(),
        remove_secret_config: Default::default(),
    };
    assert!(!format!("{cfg:?}").contains("hunter2"));
    assert!(!serde_json::to_string(&cfg.redacted())
        .unwrap()
        .contains("hunter2"));
    sim.submit(cfg).unwrap();
    let ex = sim.submit(OpKind::Export).unwrap();
    sim.settle();
    let doc = sim.saved[&ex].result.clone().unwrap().to_string();
    assert!(doc.contains("db_password") && !doc.contains("hunter2"));
    let launch = sim
        .ctl
        .deployment
        .launch(0, &sim.ctl.deployment.spec.clone(), 2, fast().grace);
    assert_eq!(launch.config["db_password"], "hunter2");
    assert!(!format!("{launch:?}").contains("hunter2"));
    let bad = OpKind::SetVars {
        vars: BTreeMap::from([("bad key".into(), "x".into())]),
    };
    assert!(matches!(sim.submit(bad), Err(DomainError::InvalidKey(_))));
}

/// A config change only touches the keys it names; wiping secret config takes an explicit
/// removal, and any change to secret config (setting or removing) needs `secrets`.
#[test]
fn config_changes_merge_and_secret_changes_need_secrets() {
    use crate::domain::Permission;
    let mut sim = running(DeploymentType::Development, 1);
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let set = |config, secret_config| OpKind::SetConfig {
        config,
        secret_config,
        remove_config: Default::default(),
        remove_secret_config: Default::default(),
    };
    sim.submit(set(
        map(&[("mode", "pvp"), ("map", "dust")]),
        map(&[("db_password", "hunter2"), ("api", "k")]),
    ))
    .unwrap();
    sim.settle();
    // A plain change (what an `edit` user may send) leaves secret config alone.
    let plain = set(map(&[("mode", "pve")]), BTreeMap::new());
    assert_eq!(plain.permissions(), vec![Permission::Edit]);
    sim.submit(plain).unwrap();
    sim.settle();
    let spec = &sim.ctl.deployment.spec;
    assert_eq!(spec.config, map(&[("mode", "pve"), ("map", "dust")]));
    assert_eq!(
        spec.secret_config,
        map(&[("db_password", "hunter2"), ("api", "k")])
    );
    let remove = OpKind::SetConfig {
        config: BTreeMap::new(),
        secret_config: BTreeMap::new(),
        remove_config: ["map".to_string()].into(),
        remove_secret_config: ["api".to_string()].into(),
    };
    assert_eq!(
        remove.permissions(),
        vec![Permission::Edit, Permission::Secrets]
    );
    assert_eq!(
        set(BTreeMap::new(), map(&[("x", "y")])).permissions(),
        vec![Permission::Edit, Permission::Secrets]
    );
    sim.submit(remove).unwrap();
    sim.settle();
    let spec = &sim.ctl.deployment.spec;
    assert_eq!(spec.config, map(&[("mode", "pve")]));
    assert_eq!(spec.secret_config, map(&[("db_password", "hunter2")]));
}

#[test]
fn recover_fails_the_interrupted_op_and_restarts_nodes() {
    let mut sim = running(DeploymentType::Production, 2);
    let a = sim
        .submit(OpKind::Deploy {
            version: v("3.37.0"),
            image: None,
        })
        .unwrap();
    let b = sim.submit(OpKind::Reboot).unwrap();
    sim.deliver(0); // alpha-0 drained → stopping
    let unfinished: Vec<_> = sim.ctl.queue().cloned().collect();
    let mut dep = sim.ctl.deployment.clone();
    dep.nodes
        .iter_mut()
        .for_each(|n| n.state = NodeRunState::Stopped);
    let mut restarted = Sim::new(DeploymentType::Production, 2, fast());
    restarted.ctl = Controller::new(dep, unfinished, fast());
    let cat = restarted.catalog.clone();
    let out = restarted.ctl.recover(&cat, restarted.now);
    restarted.apply(out);
    assert_eq!(restarted.status(a), OpStatus::Failed);
    assert!(restarted.saved[&a]
        .error
        .as_deref()
        .unwrap()
        .contains("restart"));
    assert_eq!(restarted.status(b), OpStatus::InProgress);
    restarted.settle();
    assert_eq!(restarted.status(b), OpStatus::Completed);
    assert_eq!(restarted.ctl.deployment.spec.version, v("3.35.0"));
    assert_eq!(restarted.nodes_down(), 0);
}

/// The process of a serving node dies (not during any operation).
fn kill(sim: &mut Sim, slot: usize) {
    let n = sim.ctl.deployment.nodes[slot].clone();
    let out = sim.ctl.handle_event(
        Event::NodeExited {
            node: n.id.clone(),
            incarnation: n.incarnation,
        },
        &sim.catalog,
        sim.now,
    );
    assert!(out.contains(&Intent::Forget { node: n.id }), "{out:?}");
    sim.apply(out);
}

/// Fires timers (stale ones from earlier rollouts included) until node `slot` is started
/// again; returns when that happened.
fn fire_until_started(sim: &mut Sim, slot: usize) -> Timestamp {
    let before = sim.ctl.deployment.nodes[slot].incarnation;
    for _ in 0..10 {
        assert!(sim.fire_timer(), "no timer armed");
        if sim.ctl.deployment.nodes[slot].incarnation == before + 1 {
            return sim.now;
        }
    }
    panic!("node {slot} was not started again");
}

#[test]
fn a_serving_node_that_dies_is_restarted_with_growing_delays() {
    let mut sim = running(DeploymentType::Production, 2);
    let incarnation = |sim: &Sim| sim.ctl.deployment.nodes[0].incarnation;
    let state = |sim: &Sim| sim.ctl.deployment.nodes[0].state;
    let first = incarnation(&sim);
    let died = sim.now;
    kill(&mut sim, 0);
    assert_eq!(state(&sim), NodeRunState::CrashLoopBackOff);
    assert_eq!(
        sim.ctl.deployment.nodes[1].state,
        NodeRunState::Ready,
        "the other node is untouched"
    );
    // It keeps dying on start: restarted after 10 s, then 20 s, then 40 s.
    sim.behaviour = NodeBehaviour::CrashOnStart;
    let mut started_at = Vec::new();
    for _ in 0..3 {
        started_at.push(fire_until_started(&mut sim, 0));
        while sim.deliver(0) {}
        assert_eq!(state(&sim), NodeRunState::CrashLoopBackOff);
    }
    let secs = |a: Timestamp, b: Timestamp| (b.0 - a.0) / 1000;
    assert_eq!(
        [
            secs(died, started_at[0]),
            secs(started_at[0], started_at[1]),
            secs(started_at[1], started_at[2])
        ],
        [10, 20, 40]
    );
    // Then it comes up healthy: ready again, and the proxy is told.
    sim.behaviour = NodeBehaviour::Healthy;
    let healthy_start = fire_until_started(&mut sim, 0);
    assert_eq!(secs(started_at[2], healthy_start), 80);
    while sim.deliver(0) {}
    assert_eq!(state(&sim), NodeRunState::Ready);
    assert_eq!(incarnation(&sim), first + 4);
    // Healthy resets the delay: the next death is restarted after 10 s again.
    let died = sim.now;
    kill(&mut sim, 0);
    assert_eq!(secs(died, fire_until_started(&mut sim, 0)), 10);
    sim.settle();
    assert_eq!(state(&sim), NodeRunState::Ready);
}

#[test]
fn a_rollout_takes_over_a_node_waiting_to_restart() {
    let mut sim = running(DeploymentType::Production, 2);
    kill(&mut sim, 1);
    // An operation arrives before the restart delay is over: the rollout replaces the dead
    // node first, and the pending restart does not start it a second time.
    let id = sim.submit(OpKind::Reboot).unwrap();
    sim.settle();
    assert_eq!(sim.status(id), OpStatus::Completed);
    assert!(sim
        .ctl
        .deployment
        .nodes
        .iter()
        .all(|n| n.state == NodeRunState::Ready));
    assert!(sim.pending.is_empty() && sim.timers.is_empty());
}

#[test]
fn nodes_of_a_deleted_deployment_are_not_restarted() {
    let mut sim = running(DeploymentType::Production, 2);
    kill(&mut sim, 0);
    unprotect(&mut sim);
    let id = sim.submit(OpKind::Delete).unwrap();
    sim.settle();
    assert_eq!(sim.status(id), OpStatus::Completed);
    assert!(sim.ctl.deployment.nodes.is_empty());
}

#[test]
fn a_restarted_node_that_never_becomes_healthy_is_stopped_and_tried_again() {
    let mut sim = running(DeploymentType::Production, 2);
    kill(&mut sim, 0);
    sim.behaviour = NodeBehaviour::Hang;
    let started = fire_until_started(&mut sim, 0);
    while sim.deliver(0) {}
    let hung = sim.ctl.deployment.nodes[0].clone();
    assert_eq!(hung.state, NodeRunState::Starting);
    // After health_timeout (60 s here) it is stopped and counts as a second death (20 s).
    sim.behaviour = NodeBehaviour::Healthy;
    let again = fire_until_started(&mut sim, 0);
    assert_eq!((again.0 - started.0) / 1000, 60 + 20);
    sim.settle();
    let n = &sim.ctl.deployment.nodes[0];
    assert_eq!(n.state, NodeRunState::Ready);
    assert_eq!(n.incarnation, hung.incarnation + 1);
}
