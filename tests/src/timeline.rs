//! Recording what the control plane tells the proxy, to check routing against it.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Instant,
};

use kanmon_control::driver::{NodeStatePublisher, PublishError};
use kanmon_router::{DeploymentSpec, InstanceName, NodeState, Zone};

/// The `ready` node sets over time, keyed `instance/node`.
#[derive(Debug, Default)]
pub struct Timeline {
    events: Mutex<Vec<(Instant, BTreeSet<String>)>>,
    current: Mutex<BTreeSet<String>>,
}

impl Timeline {
    fn events(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, BTreeSet<String>)>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `instance/node` was `ready` at some instant of `[from, to]` (the window in
    /// which the proxy chose the node for a connection).
    pub fn ready_during(&self, key: &str, from: Instant, to: Instant) -> bool {
        let events = self.events();
        let at_start = events
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .is_some_and(|(_, set)| set.contains(key));
        at_start
            || events
                .iter()
                .any(|(t, set)| *t > from && *t <= to && set.contains(key))
    }

    /// Instants at which `instance/node` stopped being ready (a drain began, or it failed).
    pub fn left_ready(&self, key: &str) -> Vec<Instant> {
        let events = self.events();
        let mut out = Vec::new();
        let mut was = false;
        for (t, set) in events.iter() {
            let is = set.contains(key);
            if was && !is {
                out.push(*t);
            }
            was = is;
        }
        out
    }
}

/// A publisher that records every change into a [`Timeline`] around forwarding it. It
/// records conservatively: before the swap, the union of the old and new `ready` sets (a
/// node leaving is still routable until the swap); after it, the new set.
pub struct Recording {
    inner: Arc<dyn NodeStatePublisher>,
    timeline: Arc<Timeline>,
}

impl Recording {
    /// Records into `timeline`, forwards to `inner`.
    pub fn new(inner: Arc<dyn NodeStatePublisher>, timeline: Arc<Timeline>) -> Self {
        Self { inner, timeline }
    }
}

impl NodeStatePublisher for Recording {
    fn publish(&self, spec: DeploymentSpec) -> Result<(), PublishError> {
        let instance = spec.instance.to_string();
        let ready: BTreeSet<String> = spec
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .map(|n| format!("{instance}/{}", n.id))
            .collect();
        let prefix = format!("{instance}/");
        let mut current = self
            .timeline
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let others: BTreeSet<String> = current
            .iter()
            .filter(|k| !k.starts_with(&prefix))
            .cloned()
            .collect();
        let union: BTreeSet<String> = current.union(&ready).cloned().collect();
        self.timeline.events().push((Instant::now(), union));
        let result = self.inner.publish(spec);
        let after: BTreeSet<String> = others.union(&ready).cloned().collect();
        self.timeline.events().push((Instant::now(), after.clone()));
        *current = after;
        result
    }

    fn remove(&self, instance: &InstanceName) -> Result<(), PublishError> {
        let result = self.inner.remove(instance);
        let prefix = format!("{instance}/");
        let mut current = self
            .timeline
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        current.retain(|k| !k.starts_with(&prefix));
        self.timeline
            .events()
            .push((Instant::now(), current.clone()));
        result
    }

    fn active_connections(&self, instance: &InstanceName, zone: &Zone, node: &str) -> Option<u64> {
        self.inner.active_connections(instance, zone, node)
    }
}
