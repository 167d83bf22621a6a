//! Carrying intents out: driver calls, timers and drain watching, each in its own task that
//! reports back to the actor as a message.

use std::time::Duration;

use crate::{
    domain::{controller::Event, Deployment, Intent, NodeLaunch, Timestamp},
    driver::{deployment_spec, NodeHealth},
};

use super::{now, Inner, Msg};

/// The one path from a step to the edge: the whole deployment is published when a node
/// changed state (or `republish` asks), and taken off when it is deleted. Runs before any
/// other intent is carried out, so a node is unpublished before it is asked to stop.
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

/// How often a draining node's connection count is checked.
const DRAIN_POLL: Duration = Duration::from_millis(100);

pub(super) fn carry_out(inner: &std::sync::Arc<Inner>, dep: &Deployment, intents: Vec<Intent>) {
    let name = dep.instance.to_string();
    for intent in intents {
        match intent {
            // Published by `to_edge` before anything else is carried out.
            Intent::SaveOp(_)
            | Intent::MarkReady { .. }
            | Intent::Forget { .. }
            | Intent::RemoveDeployment => {}
            Intent::MarkDraining { node } => watch_drain(inner, dep, node),
            Intent::ArmTimer { at } => arm(inner, name.clone(), at),
            Intent::StopNode { node, incarnation } => {
                let inner = inner.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    if let Err(e) = inner.driver.stop_node(&name, &node).await {
                        tracing::error!(error = %e, node, "stopping node failed");
                    }
                    send(
                        &inner,
                        &name,
                        Msg::Event(Event::NodeExited { node, incarnation }),
                    );
                });
            }
            Intent::StartNode { spec } => start(inner, name.clone(), spec),
            Intent::Export { op } => {
                let secrets = super::scrub::secrets_of(dep)
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                super::exports::run(inner, name.clone(), op, secrets);
            }
        }
    }
}

pub(super) fn send(inner: &Inner, name: &str, msg: Msg) {
    inner.send(name, msg);
}

fn arm(inner: &std::sync::Arc<Inner>, name: String, at: Timestamp) {
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(at.since(now())).await;
        send(&inner, &name, Msg::Timer);
    });
}

fn start(inner: &std::sync::Arc<Inner>, name: String, spec: NodeLaunch) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let (node, incarnation) = (spec.id.clone(), spec.incarnation);
        let endpoints = match inner.driver.start_node(&name, &spec).await {
            Ok(ep) => ep,
            Err(e) => {
                tracing::warn!(error = %e, node, "node failed to start");
                send(
                    &inner,
                    &name,
                    Msg::Event(Event::NodeExited { node, incarnation }),
                );
                return;
            }
        };
        send(
            &inner,
            &name,
            Msg::Event(Event::NodeStarted {
                node: node.clone(),
                incarnation,
                addr: endpoints.addr,
                grpc: endpoints.grpc,
            }),
        );
        // Checks stop once the controller's own health deadline has surely passed.
        let poll = inner.settings.health_poll.max(Duration::from_millis(10));
        let checks = inner.settings.timings.health_timeout.as_millis() / poll.as_millis() + 2;
        for _ in 0..checks {
            match inner.driver.health(&name, &node).await {
                NodeHealth::Healthy => {
                    let ev = Event::NodeHealthy {
                        node: node.clone(),
                        incarnation,
                    };
                    send(&inner, &name, Msg::Event(ev));
                    monitor(&inner, name, node, incarnation).await;
                    return;
                }
                NodeHealth::Exited => {
                    send(
                        &inner,
                        &name,
                        Msg::Event(Event::NodeExited { node, incarnation }),
                    );
                    return;
                }
                NodeHealth::NotYet => tokio::time::sleep(poll).await,
            }
        }
    });
}

/// Watches a healthy node until it exits (reported, so a crash of a serving node is marked
/// unhealthy at the proxy) or until it is replaced by a newer incarnation (the new one has its
/// own watcher).
async fn monitor(inner: &std::sync::Arc<Inner>, name: String, node: String, incarnation: u64) {
    loop {
        tokio::time::sleep(inner.settings.monitor_interval).await;
        if inner.incarnation(&name, &node) != Some(incarnation) {
            return;
        }
        if inner.driver.health(&name, &node).await == NodeHealth::Exited {
            send(
                inner,
                &name,
                Msg::Event(Event::NodeExited { node, incarnation }),
            );
            return;
        }
    }
}

fn watch_drain(inner: &std::sync::Arc<Inner>, dep: &Deployment, node: String) {
    let inner = inner.clone();
    let (instance, zone) = (dep.instance.clone(), dep.zone.clone());
    let name = instance.to_string();
    let rounds = inner.settings.timings.grace.as_millis() / DRAIN_POLL.as_millis() + 1;
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
