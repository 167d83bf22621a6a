//! Carrying intents out: driver calls, timers and drain watching, each in its own task that
//! reports back to the actor as a message.

use std::time::Duration;

use crate::{
    domain::{controller::Event, Deployment, Intent, NodeLaunch, Timestamp},
    driver::NodeHealth,
};

use super::{now, Inner, Msg};

/// How often a draining node's connection count is checked.
const DRAIN_POLL: Duration = Duration::from_millis(100);

pub(super) fn carry_out(inner: &std::sync::Arc<Inner>, dep: &Deployment, intents: Vec<Intent>) {
    let name = dep.instance.to_string();
    for intent in intents {
        match intent {
            Intent::SaveOp(_) | Intent::MarkReady { .. } | Intent::Forget { .. } => {}
            Intent::MarkDraining { node } => watch_drain(inner, dep, node),
            Intent::RemoveDeployment => {
                if let Err(e) = inner.publisher.remove(&dep.instance) {
                    tracing::error!(error = %e, instance = %name, "removing deployment from proxy failed");
                }
            }
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
                        Msg::Event(name, Event::NodeExited { node, incarnation }),
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

pub(super) fn send(inner: &Inner, msg: Msg) {
    if inner.tx.send(msg).is_err() {
        tracing::debug!("control loop is gone; dropping a report");
    }
}

fn arm(inner: &std::sync::Arc<Inner>, name: String, at: Timestamp) {
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(at.since(now())).await;
        send(&inner, Msg::Timer(name));
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
                    Msg::Event(name, Event::NodeExited { node, incarnation }),
                );
                return;
            }
        };
        send(
            &inner,
            Msg::Event(
                name.clone(),
                Event::NodeStarted {
                    node: node.clone(),
                    incarnation,
                    addr: endpoints.addr,
                    grpc: endpoints.grpc,
                },
            ),
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
                    send(&inner, Msg::Event(name.clone(), ev));
                    monitor(&inner, name, node, incarnation).await;
                    return;
                }
                NodeHealth::Exited => {
                    send(
                        &inner,
                        Msg::Event(name, Event::NodeExited { node, incarnation }),
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
                Msg::Event(name, Event::NodeExited { node, incarnation }),
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
                    send(&inner, Msg::Event(name, Event::ConnectionsDrained { node }));
                    return;
                }
                // Unknown: the controller's grace timer decides.
                None => return,
                Some(_) => tokio::time::sleep(DRAIN_POLL).await,
            }
        }
    });
}
