//! The `certificate` operation in the queue: it holds the queue while the CA works, one at a
//! time, and its outcome is the operation's.

use super::sim::*;
use super::*;

fn sim() -> Sim {
    Sim::new(DeploymentType::Production, 2, Timings::default())
}

#[test]
fn a_certificate_op_holds_the_queue_until_its_report() {
    let mut sim = sim();
    let cert = sim.submit(OpKind::Certificate).unwrap();
    let deploy = sim
        .submit(OpKind::Deploy {
            version: v("3.35.0"),
            image: None,
        })
        .unwrap();
    assert_eq!(sim.status(cert), OpStatus::InProgress);
    assert_eq!(sim.status(deploy), OpStatus::Pending);
    // A second one while the first waits is refused, not queued.
    assert_eq!(
        sim.submit(OpKind::Certificate),
        Err(DomainError::CertificateQueued)
    );
    // A report about another operation changes nothing.
    let stray = sim.ctl.handle_event(
        Event::CertificateFinished {
            op: deploy,
            result: Ok(serde_json::Value::Null),
        },
        &catalog(),
        sim.now,
    );
    assert!(stray.is_empty(), "{stray:?}");
    assert_eq!(sim.status(cert), OpStatus::InProgress);
    let pending = std::mem::take(&mut sim.pending);
    assert!(
        pending
            .iter()
            .any(|e| matches!(e, Event::CertificateFinished { op, .. } if *op == cert)),
        "the op asked for a certificate: {pending:?}"
    );
    let out = sim.ctl.handle_event(
        Event::CertificateFinished {
            op: cert,
            result: Ok(serde_json::json!({"not_after": "2027-03-02T00:00:00Z"})),
        },
        &catalog(),
        sim.now,
    );
    sim.apply(out);
    assert_eq!(sim.status(cert), OpStatus::Completed);
    assert_eq!(
        sim.saved[&cert].result,
        Some(serde_json::json!({"not_after": "2027-03-02T00:00:00Z"}))
    );
    assert_eq!(
        sim.status(deploy),
        OpStatus::InProgress,
        "the queue moved on"
    );
    sim.settle();
    assert_eq!(sim.status(deploy), OpStatus::Completed);
    // Done: the next renewal may queue again.
    let again = sim.submit(OpKind::Certificate).unwrap();
    assert_eq!(sim.status(again), OpStatus::InProgress);
}

#[test]
fn a_failed_certificate_op_records_why_and_changes_nothing() {
    let mut sim = sim();
    let before = sim.ctl.deployment.clone();
    let cert = sim.submit(OpKind::Certificate).unwrap();
    sim.pending.clear();
    let out = sim.ctl.handle_event(
        Event::CertificateFinished {
            op: cert,
            result: Err("ACME: connection refused".into()),
        },
        &catalog(),
        sim.now,
    );
    sim.apply(out);
    assert_eq!(sim.status(cert), OpStatus::Failed);
    assert_eq!(
        sim.saved[&cert].error.as_deref(),
        Some("ACME: connection refused")
    );
    assert_eq!(sim.ctl.deployment, before);
}

#[test]
fn a_certificate_op_in_progress_at_a_restart_fails_and_can_be_queued_again() {
    let mut sim = sim();
    let cert = sim.submit(OpKind::Certificate).unwrap();
    let out = sim.ctl.recover(&catalog(), sim.now);
    sim.apply(out);
    assert_eq!(sim.status(cert), OpStatus::Failed);
    sim.submit(OpKind::Certificate).unwrap();
}

#[test]
fn a_delete_ends_with_its_revocation_report_and_records_it() {
    let mut sim = Sim::new(DeploymentType::Development, 1, Timings::default());
    sim.submit(OpKind::Deploy {
        version: v("3.35.0"),
        image: None,
    })
    .unwrap();
    sim.settle();
    let delete = sim.submit(OpKind::Delete).unwrap();
    // Everything but the revocation's report: the nodes go, the delete waits.
    for _ in 0..1000 {
        let next = sim
            .pending
            .iter()
            .position(|e| !matches!(e, Event::RevocationFinished { .. }));
        match next {
            Some(i) => {
                sim.deliver(i);
            }
            None if sim.fire_timer() => {}
            None => break,
        }
    }
    assert!(sim.ctl.deployment.nodes.is_empty());
    assert_eq!(sim.status(delete), OpStatus::InProgress);
    assert!(!sim.removed && !sim.ctl.deployment.deleted);
    let asked: Vec<_> = std::mem::take(&mut sim.pending);
    assert!(
        matches!(asked.as_slice(), [Event::RevocationFinished { op, .. }] if *op == delete),
        "revocation asked for once: {asked:?}"
    );
    // A report about another operation changes nothing.
    let stray = sim.ctl.handle_event(
        Event::RevocationFinished {
            op: delete + 100,
            result: serde_json::json!({}),
        },
        &catalog(),
        sim.now,
    );
    assert!(stray.is_empty(), "{stray:?}");
    let outcome = serde_json::json!({"certificates": [{"hostname": "h", "status": "retrying"}]});
    let out = sim.ctl.handle_event(
        Event::RevocationFinished {
            op: delete,
            result: outcome.clone(),
        },
        &catalog(),
        sim.now,
    );
    sim.apply(out);
    // A deferred revocation does not hold the delete: it completes with the outcome.
    assert_eq!(sim.status(delete), OpStatus::Completed);
    assert_eq!(sim.saved[&delete].result, Some(outcome));
    assert!(sim.removed && sim.ctl.deployment.deleted);
}
