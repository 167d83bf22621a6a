//! Nodes that die while serving, outside any rollout: their CrashLoopBackOff restarts.

use super::{Controller, Event, Intent};
use crate::domain::{crashloop::backoff, deployment::NodeRunState, Timestamp};

/// A restart of a node that died while serving: waiting out its delay, or started and
/// waiting to become healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Restart {
    /// When to start it again or, once started, when it must be healthy.
    pub(super) at: Timestamp,
    /// Deaths in a row without becoming healthy in between (sets the delay).
    pub(super) deaths: u32,
    /// The incarnation started, once it was.
    pub(super) started: Option<u64>,
}

impl Controller {
    /// Events about nodes no rollout step is working on (recovered or restarted nodes coming
    /// up, or a serving node that died): keep the recorded state true, and start a node that
    /// died again after a CrashLoopBackOff delay (10 s, doubling to 5 min while it keeps dying
    /// before it is healthy), as Kubernetes would restart its container.
    pub(super) fn outside_rollout(
        &mut self,
        ev: &Event,
        node: &str,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) {
        let deleted = self.deployment.deleted;
        let Some(n) = self.deployment.nodes.iter_mut().find(|n| n.id == node) else {
            return;
        };
        match ev {
            Event::NodeHealthy { .. } if n.state == NodeRunState::Starting => {
                n.state = NodeRunState::Ready;
                self.restarts.remove(&n.slot);
                out.push(Intent::MarkReady { node: n.id.clone() });
            }
            Event::NodeExited { .. }
                if n.state != NodeRunState::Stopped
                    && n.state != NodeRunState::CrashLoopBackOff =>
            {
                out.push(Intent::Forget { node: n.id.clone() });
                if deleted {
                    n.state = NodeRunState::Stopped;
                    return;
                }
                n.state = NodeRunState::CrashLoopBackOff;
                let deaths = self.restarts.get(&n.slot).map_or(0, |r| r.deaths) + 1;
                let t = &self.timings;
                let at = now.after(backoff(deaths, t.backoff_base, t.backoff_cap));
                self.restarts.insert(
                    n.slot,
                    Restart {
                        at,
                        deaths,
                        started: None,
                    },
                );
                out.push(Intent::ArmTimer { at });
            }
            _ => {}
        }
    }

    /// Starts the nodes whose restart delay is over and stops those that did not become
    /// healthy within `health_timeout` (a hang counts as a death), unless a rollout has taken
    /// them over or they are gone; arms the timer for the next one.
    pub(super) fn run_restarts(&mut self, now: Timestamp, out: &mut Vec<Intent>) {
        let due: Vec<(u32, Restart)> = self
            .restarts
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(slot, r)| (*slot, *r))
            .collect();
        for (slot, restart) in due {
            let dep = &mut self.deployment;
            let rollout = self.active.as_ref().and_then(|a| a.rollout.as_ref());
            let id = crate::domain::deployment::node_id(&dep.instance, slot);
            let ours = dep.node_mut(slot).is_some_and(|n| match restart.started {
                None => n.state == NodeRunState::CrashLoopBackOff,
                Some(i) => n.state == NodeRunState::Starting && n.incarnation == i,
            });
            if dep.deleted || !ours || rollout.is_some_and(|r| r.is_current(dep, &id)) {
                // Gone, moved on, or in a rollout's hands now.
                self.restarts.remove(&slot);
                continue;
            }
            if let Some(incarnation) = restart.started {
                // Started but never healthy: stop it and wait again, longer.
                out.push(Intent::StopNode {
                    node: id,
                    incarnation,
                });
                if let Some(n) = dep.node_mut(slot) {
                    n.state = NodeRunState::CrashLoopBackOff;
                }
                let deaths = restart.deaths + 1;
                let t = &self.timings;
                let at = now.after(backoff(deaths, t.backoff_base, t.backoff_cap));
                self.restarts.insert(
                    slot,
                    Restart {
                        at,
                        deaths,
                        started: None,
                    },
                );
                continue;
            }
            // A node already replaced by the rollout in flight runs its new spec.
            let applied = dep.generation;
            let generation = dep.node_mut(slot).map_or(applied, |n| n.generation);
            let spec = match rollout {
                Some(r) if r.generation == generation => r.spec.clone(),
                _ => dep.spec.clone(),
            };
            let launch = dep.launch(slot, &spec, generation, self.timings.grace);
            if let Some(n) = dep.node_mut(slot) {
                n.state = NodeRunState::Starting;
                n.incarnation = launch.incarnation;
                n.addr = None;
                n.grpc = None;
                n.console = None;
            }
            let started = Some(launch.incarnation);
            out.push(Intent::StartNode { spec: launch });
            self.restarts.insert(
                slot,
                Restart {
                    at: now.after(self.timings.health_timeout),
                    deaths: restart.deaths,
                    started,
                },
            );
        }
        if let Some(next) = self.restarts.values().map(|r| r.at).min() {
            out.push(Intent::ArmTimer { at: next });
        }
    }
}
