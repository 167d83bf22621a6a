//! The support team's downgrade allowance: one deploy to one older version.

use super::sim::*;
use super::*;

fn deploy(version: &str) -> OpKind {
    OpKind::Deploy {
        version: v(version),
        image: None,
    }
}

fn upgraded_sim() -> Sim {
    let mut sim = Sim::new(DeploymentType::Production, 2, Timings::default());
    let first = sim.submit(deploy("3.35.0")).unwrap();
    sim.settle();
    let up = sim.submit(deploy("3.37.0")).unwrap();
    sim.settle();
    assert_eq!(sim.status(first), OpStatus::Completed);
    assert_eq!(sim.status(up), OpStatus::Completed);
    sim
}

#[test]
fn an_allowed_downgrade_deploys_once_and_is_used_up() {
    let mut sim = upgraded_sim();
    assert!(matches!(
        sim.submit(deploy("3.36.0")),
        Err(DomainError::Downgrade { .. })
    ));
    let cat = sim.catalog.clone();
    sim.ctl
        .deployment
        .allow_downgrade(&cat, v("3.36.0"), "support", Timestamp(5))
        .unwrap();
    // Only the allowed version: another older one is still refused.
    assert!(matches!(
        sim.submit(deploy("3.35.0")),
        Err(DomainError::Downgrade { .. })
    ));
    let down = sim.submit(deploy("3.36.0")).unwrap();
    sim.settle();
    assert_eq!(sim.status(down), OpStatus::Completed);
    assert_eq!(sim.ctl.deployment.spec.version, v("3.36.0"));
    assert_eq!(sim.ctl.deployment.downgrade_allowance, None);
    // Back up, then the same downgrade again: refused, the allowance is gone.
    sim.submit(deploy("3.37.0")).unwrap();
    sim.settle();
    assert!(matches!(
        sim.submit(deploy("3.36.0")),
        Err(DomainError::Downgrade { .. })
    ));
}

#[test]
fn a_failed_downgrade_keeps_the_allowance() {
    let mut sim = upgraded_sim();
    let cat = sim.catalog.clone();
    sim.ctl
        .deployment
        .allow_downgrade(&cat, v("3.36.0"), "support", Timestamp(5))
        .unwrap();
    sim.behaviour = NodeBehaviour::Hang;
    let down = sim.submit(deploy("3.36.0")).unwrap();
    sim.settle();
    assert_eq!(sim.status(down), OpStatus::Failed);
    assert_eq!(sim.ctl.deployment.spec.version, v("3.37.0"));
    assert!(sim.ctl.deployment.downgrade_allowed(&v("3.36.0")));
}

#[test]
fn only_older_supported_versions_can_be_allowed() {
    let mut sim = upgraded_sim();
    let cat = sim.catalog.clone();
    let dep = &mut sim.ctl.deployment;
    assert!(matches!(
        dep.allow_downgrade(&cat, v("3.37.1"), "support", Timestamp(5)),
        Err(DomainError::NotADowngrade { .. })
    ));
    assert!(matches!(
        dep.allow_downgrade(&cat, v("3.37.0"), "support", Timestamp(5)),
        Err(DomainError::NotADowngrade { .. })
    ));
    assert!(matches!(
        dep.allow_downgrade(&cat, v("3.30.0"), "support", Timestamp(5)),
        Err(DomainError::VersionNotSupported { .. })
    ));
    assert_eq!(dep.downgrade_allowance, None);
}
