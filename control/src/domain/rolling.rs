//! The rolling update / reboot state machine: one node at a time.
//!
//! Per node: mark draining (the proxy stops sending new connections at once) → wait until its
//! connections end or the grace period passes → stop → start the new node → wait for its health
//! check → ready → next. A node that exits on start enters CrashLoopBackOff and the rollout stays
//! on it, so the other nodes keep serving; the operation fails once the crash loop outlasts its
//! timeout.

use serde::{Deserialize, Serialize};

use super::{
    controller::{Intent, Timings},
    crashloop::{backoff, CrashLoop},
    deployment::{shutdown_grace, Deployment, Keys, NodeRecord, NodeRunState, Spec},
    Timestamp,
};

/// One unit of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Start a node in a new slot.
    Add(u32),
    /// Drain, stop and restart the node in the slot with the target spec.
    Replace(u32),
    /// Drain and stop the node in the slot, and forget it.
    Remove(u32),
}

impl Step {
    fn slot(self) -> u32 {
        match self {
            Self::Add(s) | Self::Replace(s) | Self::Remove(s) => s,
        }
    }
}

/// Where the current step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for connections to end, or the deadline.
    Draining {
        /// End of the grace period.
        deadline: Timestamp,
    },
    /// Waiting for the driver to report the node gone.
    Stopping,
    /// Waiting for the new node's health check, or the deadline.
    Starting {
        /// Health deadline.
        deadline: Timestamp,
    },
    /// Waiting out a CrashLoopBackOff delay.
    Backoff {
        /// When to restart.
        until: Timestamp,
    },
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Draining { .. } => "draining",
            Self::Stopping => "stopping",
            Self::Starting { .. } => "starting",
            Self::Backoff { .. } => "crash_loop_back_off",
        }
    }
}

/// What a rollout says after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still going.
    Running,
    /// Every step done.
    Done,
    /// Gave up (crash loop timeout).
    Failed(String),
}

/// A rollout towards `spec` at `generation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The plan.
    pub steps: Vec<Step>,
    /// Index of the current step.
    pub index: usize,
    /// Phase of the current step (`None` only before the first step or once done).
    pub phase: Option<Phase>,
    /// Crash-loop record of the current step.
    pub crash: Option<CrashLoop>,
    /// Target spec.
    pub spec: Spec,
    /// Target generation.
    pub generation: u64,
    /// New keys the nodes start with (a key rotation); `None`: the deployment's own.
    pub keys: Option<Keys>,
}

/// Plans the steps that take `dep` to `wanted` nodes, each restarted with the new spec.
/// Nodes that are already down go first so that at most one node is ever down; then new
/// slots, then the serving nodes; serving nodes being removed go last.
pub fn plan(dep: &Deployment, wanted: u32) -> Vec<Step> {
    let step_for = |n: &NodeRecord| {
        if n.slot < wanted {
            Step::Replace(n.slot)
        } else {
            Step::Remove(n.slot)
        }
    };
    let mut steps: Vec<Step> = dep
        .nodes
        .iter()
        .filter(|n| !n.state.is_up())
        .map(step_for)
        .collect();
    steps.extend(
        (0..wanted)
            .filter(|s| dep.nodes.iter().all(|n| n.slot != *s))
            .map(Step::Add),
    );
    steps.extend(
        dep.nodes
            .iter()
            .filter(|n| n.state.is_up() && n.slot < wanted)
            .map(step_for),
    );
    let mut removes: Vec<Step> = dep
        .nodes
        .iter()
        .filter(|n| n.state.is_up() && n.slot >= wanted)
        .map(step_for)
        .collect();
    removes.sort_by_key(|s| std::cmp::Reverse(s.slot()));
    steps.extend(removes);
    steps
}

impl Rollout {
    /// A rollout of `steps` towards `spec` at `generation`; call [`Rollout::begin`] next.
    pub fn new(steps: Vec<Step>, spec: Spec, generation: u64) -> Self {
        Self {
            steps,
            index: 0,
            phase: None,
            crash: None,
            spec,
            generation,
            keys: None,
        }
    }

    /// The step being worked on.
    pub fn current(&self) -> Option<Step> {
        self.steps.get(self.index).copied()
    }

    /// `(step number, step count, node slot, phase name)` for progress reports.
    pub fn progress(&self) -> Option<(u32, u32, u32, &'static str)> {
        let step = self.current()?;
        let phase = self.phase?;
        Some((
            self.index as u32 + 1,
            self.steps.len() as u32,
            step.slot(),
            phase.name(),
        ))
    }

    /// Starts the first step.
    pub fn begin(
        &mut self,
        dep: &mut Deployment,
        t: &Timings,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) -> Outcome {
        self.begin_step(dep, t, now, out)
    }

    fn begin_step(
        &mut self,
        dep: &mut Deployment,
        t: &Timings,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) -> Outcome {
        self.crash = None;
        let Some(step) = self.current() else {
            self.phase = None;
            return Outcome::Done;
        };
        let slot = step.slot();
        match step {
            Step::Add(_) => {
                dep.nodes.push(NodeRecord {
                    slot,
                    id: super::deployment::node_id(&dep.instance, slot),
                    state: NodeRunState::Stopped,
                    generation: self.generation,
                    incarnation: 0,
                    addr: None,
                    grpc: None,
                    console: None,
                });
                dep.nodes.sort_by_key(|n| n.slot);
                self.start(dep, slot, t, now, out);
            }
            Step::Replace(_) | Step::Remove(_) => {
                // The draining node runs the applied spec: its own shutdown grace.
                let grace = shutdown_grace(&dep.spec, t.grace);
                let Some(node) = dep.node_mut(slot) else {
                    // The node vanished (e.g. removed by recovery): nothing to do for it.
                    return self.next(dep, t, now, out);
                };
                if node.state == NodeRunState::Ready {
                    node.state = NodeRunState::Draining;
                    let deadline = now.after(grace);
                    out.push(Intent::MarkDraining {
                        node: node.id.clone(),
                    });
                    out.push(Intent::ArmTimer { at: deadline });
                    self.phase = Some(Phase::Draining { deadline });
                } else {
                    self.stop(dep, slot, out);
                }
            }
        }
        Outcome::Running
    }

    fn stop(&mut self, dep: &mut Deployment, slot: u32, out: &mut Vec<Intent>) {
        if let Some(node) = dep.node_mut(slot) {
            node.state = NodeRunState::Stopped;
            out.push(Intent::StopNode {
                node: node.id.clone(),
                incarnation: node.incarnation,
            });
        }
        self.phase = Some(Phase::Stopping);
    }

    fn start(
        &mut self,
        dep: &mut Deployment,
        slot: u32,
        t: &Timings,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) {
        let keys = self.keys.as_ref().unwrap_or(&dep.keys);
        let launch = dep.launch_with(slot, &self.spec, keys, self.generation, t.grace);
        if let Some(node) = dep.node_mut(slot) {
            node.state = NodeRunState::Starting;
            node.generation = self.generation;
            node.incarnation = launch.incarnation;
            node.addr = None;
            node.grpc = None;
            node.console = None;
        }
        let deadline = now.after(t.health_timeout);
        out.push(Intent::StartNode { spec: launch });
        out.push(Intent::ArmTimer { at: deadline });
        self.phase = Some(Phase::Starting { deadline });
    }

    fn next(
        &mut self,
        dep: &mut Deployment,
        t: &Timings,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) -> Outcome {
        self.index += 1;
        self.begin_step(dep, t, now, out)
    }

    /// Is `node` the node of the current step?
    pub fn is_current(&self, dep: &Deployment, node: &str) -> bool {
        self.current()
            .is_some_and(|s| super::deployment::node_id(&dep.instance, s.slot()) == node)
    }

    /// The current node's connections ended.
    pub fn drained(&mut self, dep: &mut Deployment, out: &mut Vec<Intent>) -> Outcome {
        if let (Some(Phase::Draining { .. }), Some(step)) = (self.phase, self.current()) {
            self.stop(dep, step.slot(), out);
        }
        Outcome::Running
    }

    /// The current node is up and passed its health check.
    pub fn healthy(
        &mut self,
        dep: &mut Deployment,
        t: &Timings,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) -> Outcome {
        let (Some(Phase::Starting { .. }), Some(step)) = (self.phase, self.current()) else {
            return Outcome::Running;
        };
        if let Some(node) = dep.node_mut(step.slot()) {
            node.state = NodeRunState::Ready;
            out.push(Intent::MarkReady {
                node: node.id.clone(),
            });
        }
        self.next(dep, t, now, out)
    }

    /// The current node exited: either the stop we asked for, or a crash on start.
    pub fn exited(
        &mut self,
        dep: &mut Deployment,
        t: &Timings,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) -> Outcome {
        let Some(step) = self.current() else {
            return Outcome::Running;
        };
        let slot = step.slot();
        match self.phase {
            Some(Phase::Stopping) => match step {
                Step::Remove(_) => {
                    let id = super::deployment::node_id(&dep.instance, slot);
                    dep.nodes.retain(|n| n.slot != slot);
                    out.push(Intent::Forget { node: id });
                    self.next(dep, t, now, out)
                }
                Step::Replace(_) | Step::Add(_) => {
                    self.start(dep, slot, t, now, out);
                    Outcome::Running
                }
            },
            Some(Phase::Starting { .. }) => self.crashed(dep, slot, t, now, out),
            // A node that crashed while draining is as good as drained and stopped.
            Some(Phase::Draining { .. }) => {
                self.stop(dep, slot, out);
                Outcome::Running
            }
            Some(Phase::Backoff { .. }) | None => Outcome::Running,
        }
    }

    fn crashed(
        &mut self,
        dep: &mut Deployment,
        slot: u32,
        t: &Timings,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) -> Outcome {
        let crash = self.crash.get_or_insert(CrashLoop {
            since: now,
            restarts: 0,
        });
        crash.restarts += 1;
        let fail_at = crash.since.after(t.crashloop_timeout);
        if now >= fail_at {
            return self.give_up(dep, slot);
        }
        let until = now.after(backoff(crash.restarts, t.backoff_base, t.backoff_cap));
        if let Some(node) = dep.node_mut(slot) {
            node.state = NodeRunState::CrashLoopBackOff;
        }
        out.push(Intent::ArmTimer {
            at: until.min(fail_at),
        });
        self.phase = Some(Phase::Backoff { until });
        Outcome::Running
    }

    fn give_up(&mut self, dep: &mut Deployment, slot: u32) -> Outcome {
        let crash = self.crash.unwrap_or(CrashLoop {
            since: Timestamp(0),
            restarts: 0,
        });
        if let Some(node) = dep.node_mut(slot) {
            node.state = NodeRunState::Stopped;
        }
        self.phase = None;
        Outcome::Failed(format!(
            "node {} stayed in CrashLoopBackOff after {} restarts",
            super::deployment::node_id(&dep.instance, slot),
            crash.restarts
        ))
    }

    /// Time passed: act on whichever deadline of the current phase has passed. Stale timers
    /// are harmless because every deadline is re-checked against `now`.
    pub fn timeout(
        &mut self,
        dep: &mut Deployment,
        t: &Timings,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) -> Outcome {
        let Some(step) = self.current() else {
            return Outcome::Running;
        };
        let slot = step.slot();
        match self.phase {
            Some(Phase::Draining { deadline }) if now >= deadline => {
                self.stop(dep, slot, out);
                Outcome::Running
            }
            Some(Phase::Starting { deadline }) if now >= deadline => {
                // No health within the deadline counts as a crash; stop whatever is left.
                if let Some(node) = dep.node_mut(slot) {
                    out.push(Intent::StopNode {
                        node: node.id.clone(),
                        incarnation: node.incarnation,
                    });
                }
                self.crashed(dep, slot, t, now, out)
            }
            Some(Phase::Backoff { until }) => {
                let fail_at = self
                    .crash
                    .map(|c| c.since.after(t.crashloop_timeout))
                    .unwrap_or(Timestamp(u64::MAX));
                if now >= fail_at {
                    self.give_up(dep, slot)
                } else if now >= until {
                    self.start(dep, slot, t, now, out);
                    Outcome::Running
                } else {
                    Outcome::Running
                }
            }
            _ => Outcome::Running,
        }
    }
}
