//! The one executor of intents: the edge first ([`to_edge`]), then the driver's desired state
//! (folded by [`super::desire`]), timers, drain watching and exports, each in its own task that
//! reports back to the deployment's actor as a message.

use std::{sync::Arc, time::Duration};

use crate::{
    domain::{controller::Event, Deployment, Intent, OpId, Timestamp},
    driver::deployment_spec,
    store::{AuditEntry, Outcome},
};

use super::{now, Inner, Msg};

/// How often a draining node's connection count is checked.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// The one path from a step to the edge: the whole deployment is published when a node
/// changed state (or `republish` asks), and taken off when it is deleted. Runs before the
/// driver hears of the step, so a node is unpublished before it is asked to stop.
pub(super) fn to_edge(inner: &Inner, dep: &Deployment, intents: &[Intent], republish: bool) {
    let name = dep.instance.as_str();
    if intents
        .iter()
        .any(|i| matches!(i, Intent::RemoveDeployment))
    {
        if let Err(e) = inner.publisher.remove(&dep.instance) {
            tracing::error!(error = %e, instance = name, "removing deployment from the edge failed");
        }
        return;
    }
    let changed = intents.iter().any(|i| {
        matches!(
            i,
            Intent::MarkDraining { .. } | Intent::MarkReady { .. } | Intent::Forget { .. }
        )
    });
    if (changed || republish) && !dep.deleted {
        if let Err(e) = inner.publisher.publish(deployment_spec(dep)) {
            tracing::error!(error = %e, instance = name, "publishing node states failed");
        }
    }
}

/// Carries out what neither the edge nor the driver's desired state covers.
pub(super) fn carry_out(inner: &Arc<Inner>, dep: &Deployment, intents: Vec<Intent>) {
    let name = dep.instance.to_string();
    for intent in intents {
        match intent {
            // The edge (`to_edge`) and the desired state (`desire`) took these already.
            Intent::SaveOp(_)
            | Intent::MarkReady { .. }
            | Intent::Forget { .. }
            | Intent::RemoveDeployment
            | Intent::StopNode { .. }
            | Intent::StartNode { .. } => {}
            Intent::MarkDraining { node } => watch_drain(inner, dep, node),
            Intent::Superseded {
                op,
                kind,
                by,
                by_kind,
                who,
            } => audit_superseded(inner, &name, (op, kind), (by, by_kind), &who),
            Intent::ArmTimer { at } => arm(inner, name.clone(), at),
            Intent::Export { op } => {
                let secrets = super::scrub::secrets_of(dep)
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                super::exports::run(inner, name.clone(), op, secrets);
            }
            Intent::Certificate { op, hostname } => {
                // The console's hostname has a leaf of its own, obtained by the same operation.
                let s = &inner.settings;
                let console = s.console.hostname(&dep.instance, &dep.zone, &s.base_domain);
                super::certify::run(inner, name.clone(), op, hostname, console)
            }
            Intent::Revoke { op, hostname } => {
                let s = &inner.settings;
                let console = s.console.hostname(&dep.instance, &dep.zone, &s.base_domain);
                super::certify::revoke(inner, name.clone(), op, [hostname, console])
            }
            Intent::Build { op, builder } => {
                super::builds::run(inner, name.clone(), op, builder);
            }
        }
    }
}

/// One audit record per superseded operation, under the name of whoever queued the operation
/// that superseded it (the API's own record of that request names only the new operation).
fn audit_superseded(
    inner: &Inner,
    instance: &str,
    (op, kind): (OpId, &str),
    (by, by_kind): (OpId, &str),
    who: &str,
) {
    let entry = AuditEntry {
        id: 0,
        at: now(),
        who: who.to_string(),
        action: "operations.superseded".to_string(),
        instance: Some(instance.to_string()),
        outcome: Outcome::Allowed,
        detail: format!(
            "operation {op} ({kind}) in CrashLoopBackOff superseded by operation {by} ({by_kind})"
        ),
    };
    if let Err(e) = inner.store.audit(&entry) {
        tracing::error!(error = %e, instance, "writing the superseded audit record failed");
    }
}

pub(super) fn send(inner: &Inner, name: &str, msg: Msg) {
    inner.send(name, msg);
}

fn arm(inner: &Arc<Inner>, name: String, at: Timestamp) {
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(at.since(now())).await;
        send(&inner, &name, Msg::Timer);
    });
}

fn watch_drain(inner: &Arc<Inner>, dep: &Deployment, node: String) {
    let inner = inner.clone();
    let (instance, zone) = (dep.instance.clone(), dep.zone.clone());
    let name = instance.to_string();
    if inner.driver.drains_on_stop() {
        // Nothing to wait for here: the driver drains the node while it stops it. (Sent from
        // a task, as every other report, never from inside the step that asked.)
        tokio::spawn(async move {
            send(
                &inner,
                &name,
                Msg::Event(Event::ConnectionsDrained { node }),
            );
        });
        return;
    }
    // Watched for as long as the domain's drain may last (its timer ends it otherwise).
    let grace = crate::domain::shutdown_grace(&dep.spec, inner.settings.timings.grace);
    let rounds = grace.as_millis() / DRAIN_POLL.as_millis() + 1;
    tokio::spawn(async move {
        for _ in 0..rounds {
            match inner.publisher.active_connections(&instance, &zone, &node) {
                Some(0) => {
                    send(
                        &inner,
                        &name,
                        Msg::Event(Event::ConnectionsDrained { node }),
                    );
                    return;
                }
                // Unknown: the controller's grace timer decides.
                None => return,
                Some(_) => tokio::time::sleep(DRAIN_POLL).await,
            }
        }
    });
}
