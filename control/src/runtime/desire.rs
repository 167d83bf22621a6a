//! The driver half of the executor: a step's node intents folded into the deployment's
//! desired state, the task that applies those states in order, and what the domain makes of
//! the driver's observations.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{
    domain::{controller::Event, Deployment, Intent, NodeLaunch},
    driver::{DesiredNode, DesiredState, NodePhase, Observation},
};

use super::Inner;

/// First and largest pause before a failed apply is tried again.
const APPLY_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Folds a step's node intents into the deployment's desired nodes; true if they changed.
/// Nodes that left the deployment (removed by a scale-down or a delete) leave it too.
/// `grace_cap` (the platform's `--grace`) caps the shutdown grace of a node described from
/// its record, as the domain caps it for the nodes it starts.
pub(super) fn desire(
    desired: &mut BTreeMap<String, DesiredNode>,
    dep: &Deployment,
    intents: &[Intent],
    grace_cap: Duration,
) -> bool {
    let before = desired.clone();
    for intent in intents {
        match intent {
            Intent::StartNode { spec } => {
                let node = DesiredNode {
                    launch: spec.clone(),
                    phase: NodePhase::Run,
                };
                desired.insert(spec.id.clone(), node);
            }
            Intent::MarkDraining { node } => {
                if let Some(n) = desired.get_mut(node) {
                    if n.phase == NodePhase::Run {
                        n.phase = NodePhase::Drain;
                    }
                }
            }
            Intent::StopNode { node, incarnation } => {
                let launch = match desired.get(node) {
                    Some(n) => n.launch.clone(),
                    // Never asked to run by this process: describe it from its record.
                    None => match dep.nodes.iter().find(|n| &n.id == node) {
                        Some(r) => dep.launch(r.slot, &dep.spec, r.generation, grace_cap),
                        None => continue,
                    },
                };
                let launch = NodeLaunch {
                    incarnation: *incarnation,
                    ..launch
                };
                let node = DesiredNode {
                    launch,
                    phase: NodePhase::Gone,
                };
                desired.insert(node.launch.id.clone(), node);
            }
            _ => {}
        }
    }
    desired.retain(|id, _| dep.nodes.iter().any(|n| &n.id == id));
    *desired != before
}

/// Applies a deployment's desired states in order, skipping to the newest when several
/// queued up; a failed apply is tried again (with a growing pause) until it succeeds or a
/// newer state replaces it.
pub(super) async fn applier(inner: Arc<Inner>, mut desired: watch::Receiver<Option<DesiredState>>) {
    loop {
        let state = desired.borrow_and_update().clone();
        if let Some(state) = state {
            let mut pause = APPLY_RETRY.0;
            loop {
                let Err(e) = inner.driver.apply(&state, &inner.observer).await else {
                    break;
                };
                tracing::error!(error = %e, instance = state.instance, "applying desired nodes failed");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    changed = desired.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                }
                pause = (pause * 2).min(APPLY_RETRY.1);
            }
        }
        if desired.has_changed().unwrap_or(false) {
            continue;
        }
        if desired.changed().await.is_err() {
            return;
        }
    }
}

/// What the domain makes of an observation (`None`: nothing it acts on).
pub(crate) fn event_of(instance: &str, observation: Observation) -> Option<Event> {
    match observation {
        Observation::Started {
            node,
            incarnation,
            endpoints,
        } => Some(Event::NodeStarted {
            node,
            incarnation,
            addr: endpoints.addr,
            grpc: endpoints.grpc,
            console: endpoints.console,
        }),
        Observation::Ready { node, incarnation } => Some(Event::NodeHealthy { node, incarnation }),
        // The domain marked it draining itself, and the edge heard of it before the driver.
        Observation::Draining { .. } => None,
        Observation::Exited {
            node,
            incarnation,
            code,
        } => {
            tracing::info!(instance, node, incarnation, code, "node exited");
            Some(Event::NodeExited { node, incarnation })
        }
        Observation::Restarting {
            node,
            incarnation,
            restarts,
        } => {
            tracing::info!(
                instance,
                node,
                incarnation,
                restarts,
                "node restarted in place"
            );
            Some(Event::NodeExited { node, incarnation })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sim::running_deployment;

    #[test]
    fn intents_fold_into_run_drain_gone_and_removed_nodes_leave() {
        let mut dep = running_deployment();
        let cap = Duration::from_secs(30);
        dep.spec
            .config
            .insert("shutdown_grace_sec".into(), "12".into());
        let launch = dep.launch(0, &dep.spec, dep.generation, cap);
        assert_eq!(launch.shutdown_grace, Duration::from_secs(12));
        let desire =
            |d: &mut BTreeMap<_, _>, dep: &Deployment, i: &[Intent]| desire(d, dep, i, cap);
        let mut desired = BTreeMap::new();
        let start = Intent::StartNode {
            spec: launch.clone(),
        };
        assert!(desire(&mut desired, &dep, std::slice::from_ref(&start)));
        assert!(!desire(&mut desired, &dep, &[start]), "same state again");
        assert_eq!(desired["alpha-0"].phase, NodePhase::Run);
        let drain = Intent::MarkDraining {
            node: "alpha-0".into(),
        };
        assert!(desire(&mut desired, &dep, &[drain]));
        assert_eq!(desired["alpha-0"].phase, NodePhase::Drain);
        // A stop of a node this process never started is still described (from its record).
        let stops = [
            Intent::StopNode {
                node: "alpha-0".into(),
                incarnation: launch.incarnation,
            },
            Intent::StopNode {
                node: "alpha-1".into(),
                incarnation: 7,
            },
        ];
        assert!(desire(&mut desired, &dep, &stops));
        assert_eq!(desired["alpha-0"].phase, NodePhase::Gone);
        assert_eq!(desired["alpha-1"].phase, NodePhase::Gone);
        assert_eq!(desired["alpha-1"].launch.incarnation, 7);
        // Described from its record, it still stops with the deployment's grace.
        assert_eq!(
            desired["alpha-1"].launch.shutdown_grace,
            Duration::from_secs(12)
        );
        dep.nodes.retain(|n| n.slot == 0);
        assert!(desire(&mut desired, &dep, &[]));
        assert!(
            !desired.contains_key("alpha-1"),
            "removed from the deployment"
        );
    }
}
