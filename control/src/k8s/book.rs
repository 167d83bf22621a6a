//! Which pod is which incarnation: the Kubernetes driver's map from pod UIDs to the seam's
//! incarnation ids, kept in the driver rather than written onto pods.
//!
//! Why a map and not a pod annotation: the StatefulSet controller creates the pods from one
//! template shared by every node, so the template cannot carry a per-node incarnation, and
//! patching each pod after it appears would race the kubelet's first reports. The UID is the
//! cluster's own incarnation id; this book binds each new UID to the incarnation the domain
//! wants for that node at the time, once. Incarnation ids are per node and restart at 1 when a
//! node is removed and added again, so an id alone cannot tell an old pod from a new one: a
//! UID whose incarnation has ended (exited, restarted in place, or its node left the
//! deployment) is *retired*, and nothing it reports is forwarded again.
//!
//! Pure (no I/O): [`Book::want`] folds a desired state in and says which pods to delete,
//! [`Book::observe`] turns a pod observation into the seam's observations.

use std::collections::{BTreeMap, BTreeSet};

use super::observe::{NodeObservation, Observation as PodObservation};
use crate::driver::{DesiredNode, Endpoints, NodePhase, Observation};

/// What the domain wants of one node now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    incarnation: u64,
    generation: u64,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    Drain,
    Gone,
}

/// One pod UID the book has bound.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    node: String,
    incarnation: u64,
    /// Its incarnation ended: drop whatever it reports.
    retired: bool,
}

/// The newest pod seen for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Live {
    uid: String,
    generation: Option<u64>,
    terminating: bool,
}

/// A pod to delete: `node`'s pod, only if it is still incarnation `uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Deletion {
    pub(super) node: String,
    pub(super) uid: String,
}

/// What [`Book::want`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Pods to delete (a replaced or stopped incarnation).
    pub(super) delete: Vec<Deletion>,
    /// Observations to report at once (a `Gone` node that has no pod).
    pub(super) report: Vec<Observation>,
}

/// The binding of pod UIDs to incarnations for one deployment.
#[derive(Debug, Default)]
pub(super) struct Book {
    wanted: BTreeMap<String, Want>,
    bound: BTreeMap<String, Bound>,
    /// Per node, the incarnation a UID was last bound to: each incarnation gets one pod.
    claimed: BTreeMap<String, u64>,
    live: BTreeMap<String, Live>,
    /// `Gone` incarnations already answered with an `Exited`.
    answered: BTreeSet<(String, u64)>,
    /// Reports of a node's newest pod that no incarnation claimed yet (the StatefulSet
    /// controller replaces a deleted pod before the domain asks for its successor): replayed
    /// when the domain does.
    unclaimed: BTreeMap<String, (String, Vec<PodObservation>)>,
}

/// Reports kept per unclaimed pod (a pod reports a handful before it is ready).
const UNCLAIMED_LIMIT: usize = 32;

impl Book {
    /// Folds in the desired nodes; returns the pods to delete and what to report now.
    pub(super) fn want(&mut self, nodes: &[DesiredNode]) -> Plan {
        let listed: BTreeSet<&str> = nodes.iter().map(|n| n.launch.id.as_str()).collect();
        // Nodes that left the deployment: their pods' reports must not reach a later node
        // of the same name (which starts again at incarnation 1).
        for b in self.bound.values_mut() {
            if !listed.contains(b.node.as_str()) {
                b.retired = true;
            }
        }
        self.wanted.retain(|n, _| listed.contains(n.as_str()));
        self.claimed.retain(|n, _| listed.contains(n.as_str()));
        self.answered.retain(|(n, _)| listed.contains(n.as_str()));
        self.unclaimed.retain(|n, _| listed.contains(n.as_str()));
        let mut plan = Plan::default();
        for n in nodes {
            let node = n.launch.id.clone();
            let want = Want {
                incarnation: n.launch.incarnation,
                generation: n.launch.generation,
                phase: match n.phase {
                    NodePhase::Run => Phase::Run,
                    NodePhase::Drain => Phase::Drain,
                    NodePhase::Gone => Phase::Gone,
                },
            };
            // A new incarnation ends every older one of this node.
            for b in self.bound.values_mut() {
                if b.node == node && b.incarnation != want.incarnation {
                    b.retired = true;
                }
            }
            self.wanted.insert(node.clone(), want);
            if want.phase == Phase::Run {
                if let Some((_, held)) = self.unclaimed.remove(&node) {
                    for o in held {
                        plan.report.extend(self.observe(o));
                    }
                }
            }
            let live = self.live.get(&node).filter(|l| !l.terminating);
            let bound = live.and_then(|l| self.bound.get(&l.uid));
            match want.phase {
                Phase::Drain => {}
                Phase::Run => {
                    let stale = match (live, bound) {
                        (Some(_), Some(b)) => b.incarnation != want.incarnation || b.retired,
                        // Not ours yet (e.g. after a control-plane restart): adopt it when it
                        // runs the wanted generation.
                        (Some(l), None) => l.generation.is_some_and(|g| g != want.generation),
                        (None, _) => false,
                    };
                    if let (true, Some(l)) = (stale, live) {
                        plan.delete.push(Deletion {
                            node: node.clone(),
                            uid: l.uid.clone(),
                        });
                    }
                }
                Phase::Gone => {
                    // Any pod of a stopped node goes (adopted first, so its exit is reported
                    // as this incarnation's); without one, the exit is reported now.
                    if let Some(l) = self.live.get(&node).cloned() {
                        if !self.bound.contains_key(&l.uid) {
                            self.bind(&l.uid, &node, want.incarnation);
                        }
                        if !l.terminating {
                            plan.delete.push(Deletion {
                                node: node.clone(),
                                uid: l.uid,
                            });
                        }
                    }
                    let reports = self
                        .live
                        .get(&node)
                        .and_then(|l| self.bound.get(&l.uid))
                        .is_some_and(|b| b.incarnation == want.incarnation && !b.retired);
                    if !reports && self.answered.insert((node.clone(), want.incarnation)) {
                        plan.report.push(Observation::Exited {
                            node: node.clone(),
                            incarnation: want.incarnation,
                            code: None,
                        });
                    }
                }
            }
        }
        plan
    }

    /// The deployment is gone with its namespace and nothing more will be watched: every
    /// listed incarnation that has not reported its exit is answered with one now.
    pub(super) fn close(&mut self, nodes: &[DesiredNode]) -> Vec<Observation> {
        let mut out = Vec::new();
        for n in nodes {
            let (node, incarnation) = (&n.launch.id, n.launch.incarnation);
            let ended = self
                .bound
                .values()
                .any(|b| &b.node == node && b.incarnation == incarnation && b.retired);
            if !ended && self.answered.insert((node.clone(), incarnation)) {
                out.push(Observation::Exited {
                    node: node.clone(),
                    incarnation,
                    code: None,
                });
            }
        }
        out
    }

    /// Keeps a report of an unclaimed pod for [`Book::want`] to replay (a pod that is
    /// going or gone is nobody's successor).
    fn hold(&mut self, o: PodObservation) {
        let ending = matches!(
            o.what,
            NodeObservation::Gone | NodeObservation::Draining | NodeObservation::Exited { .. }
        );
        if ending {
            if self
                .unclaimed
                .get(&o.node)
                .is_some_and(|(u, _)| *u == o.incarnation)
            {
                self.unclaimed.remove(&o.node);
            }
            return;
        }
        let entry = self
            .unclaimed
            .entry(o.node.clone())
            .or_insert_with(|| (o.incarnation.clone(), Vec::new()));
        if entry.0 != o.incarnation {
            *entry = (o.incarnation.clone(), Vec::new());
        }
        if entry.1.len() < UNCLAIMED_LIMIT {
            entry.1.push(o);
        }
    }

    fn bind(&mut self, uid: &str, node: &str, incarnation: u64) {
        self.bound.insert(
            uid.to_string(),
            Bound {
                node: node.to_string(),
                incarnation,
                retired: false,
            },
        );
        self.claimed.insert(node.to_string(), incarnation);
    }

    /// The seam's observations for one pod observation (none for a pod of an ended or
    /// unwanted incarnation).
    pub(super) fn observe(&mut self, o: PodObservation) -> Vec<Observation> {
        let held = o.clone();
        let PodObservation {
            node,
            incarnation: uid,
            generation,
            what,
        } = o;
        match &what {
            NodeObservation::Gone => {
                if self.live.get(&node).is_some_and(|l| l.uid == uid) {
                    self.live.remove(&node);
                }
            }
            NodeObservation::Draining => {
                self.live.insert(
                    node.clone(),
                    Live {
                        uid: uid.clone(),
                        generation,
                        terminating: true,
                    },
                );
            }
            _ => {
                let terminating = self
                    .live
                    .get(&node)
                    .is_some_and(|l| l.uid == uid && l.terminating);
                self.live.insert(
                    node.clone(),
                    Live {
                        uid: uid.clone(),
                        generation,
                        terminating,
                    },
                );
            }
        }
        if !self.bound.contains_key(&uid) {
            let want = self.wanted.get(&node).copied();
            let claimable = want.filter(|w| {
                w.phase == Phase::Run
                    && self.claimed.get(&node) != Some(&w.incarnation)
                    && generation.is_none_or(|g| g == w.generation)
            });
            match claimable {
                Some(w) if !matches!(what, NodeObservation::Gone | NodeObservation::Draining) => {
                    self.bind(&uid, &node, w.incarnation);
                }
                _ => {
                    self.hold(held);
                    return Vec::new();
                }
            }
        }
        let bound = match self.bound.get_mut(&uid) {
            Some(b) if !b.retired => b,
            _ => {
                if what == NodeObservation::Gone {
                    self.bound.remove(&uid);
                }
                return Vec::new();
            }
        };
        let incarnation = bound.incarnation;
        let out = match what {
            NodeObservation::Started(e) => Some(Observation::Started {
                node,
                incarnation,
                endpoints: Endpoints {
                    addr: e.addr,
                    grpc: e.grpc,
                    console: e.console,
                },
            }),
            NodeObservation::Ready => Some(Observation::Ready { node, incarnation }),
            NodeObservation::Draining => Some(Observation::Draining { node, incarnation }),
            NodeObservation::Exited { code } => {
                bound.retired = true;
                Some(Observation::Exited {
                    node,
                    incarnation,
                    code,
                })
            }
            NodeObservation::Restarting { restarts, .. } => {
                bound.retired = true;
                Some(Observation::Restarting {
                    node,
                    incarnation,
                    restarts,
                })
            }
            // The domain counts deaths itself (from `Restarting`) and shows CrashLoopBackOff;
            // a failing readiness probe of a ready node ends in a restart the kubelet reports.
            NodeObservation::CrashLoopBackOff { .. } | NodeObservation::NotReady => None,
            NodeObservation::Gone => {
                self.bound.remove(&uid);
                None
            }
        };
        out.into_iter().collect()
    }
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;
