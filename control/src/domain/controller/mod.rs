//! The per-deployment controller: operations queue plus the running rollout.
//!
//! Inputs in ([`Controller::submit`], [`Controller::handle_event`], [`Controller::handle_timeout`],
//! [`Controller::recover`]), intents out ([`Intent`]). The runtime persists the deployment and
//! every operation an intent names after each call, and carries the other intents out.

mod restarts;

use std::collections::VecDeque;

use kanmon_router::Catalog;

pub use super::intents::{Event, Intent, Timings};
pub use super::rules::{export, validate};
use restarts::Restart;

use super::{
    deployment::{Deployment, NodeRunState, Spec},
    ops::{OpId, OpKind, OpStatus, Operation, Progress},
    rolling::{plan, Outcome, Phase, Rollout},
    DomainError, Timestamp,
};

/// The operation in progress and its rollout.
#[derive(Debug, Clone)]
struct Active {
    op: OpId,
    rollout: Option<Rollout>,
    /// A delete whose nodes are gone waits for its certificates' revocation.
    revoking: bool,
}

/// One deployment's lifecycle.
#[derive(Debug, Clone)]
pub struct Controller {
    /// The deployment (persist after every call).
    pub deployment: Deployment,
    queue: VecDeque<Operation>,
    active: Option<Active>,
    timings: Timings,
    /// Serving nodes that died outside any rollout, waiting out their restart delay (in
    /// memory only: a control-plane restart starts every node anyway, see `recover`).
    restarts: std::collections::BTreeMap<u32, Restart>,
}

impl Controller {
    /// A controller for `deployment` with its unfinished operations (oldest first).
    pub fn new(deployment: Deployment, unfinished: Vec<Operation>, timings: Timings) -> Self {
        Self {
            deployment,
            queue: unfinished.into(),
            active: None,
            timings,
            restarts: std::collections::BTreeMap::new(),
        }
    }

    /// Unfinished operations, the in-progress one first.
    pub fn queue(&self) -> impl Iterator<Item = &Operation> {
        self.queue.iter()
    }

    /// Queues an operation (validated against the current state; validated again when it
    /// starts, since the state may change while it waits). A spec-changing operation
    /// ([`OpKind::changes_spec`]: deploy, scale, variables, config) queued while the running
    /// operation is stuck in CrashLoopBackOff supersedes it and starts at once, from the last
    /// applied spec: waiting up to the crash-loop timeout behind a rollout that cannot finish
    /// would block the very change that fixes it. A reboot queues behind it as usual.
    pub fn submit(
        &mut self,
        op: Operation,
        catalog: &Catalog,
        now: Timestamp,
    ) -> Result<Vec<Intent>, DomainError> {
        if self.deployment.deleted || self.queue.iter().any(|o| o.kind == OpKind::Delete) {
            return Err(DomainError::Deleted);
        }
        validate(&self.deployment, &op.kind, catalog)?;
        if op.kind == OpKind::Certificate && self.queue.iter().any(|o| o.kind == op.kind) {
            return Err(DomainError::CertificateQueued);
        }
        let mut out = Vec::new();
        let stuck = self
            .active
            .as_ref()
            .is_some_and(|a| a.rollout.as_ref().is_some_and(|r| r.crash.is_some()));
        out.push(Intent::SaveOp(Box::new(op.clone())));
        if stuck && op.kind.changes_spec() {
            if let Some(old) = self.queue.front() {
                out.push(Intent::Superseded {
                    op: old.id,
                    kind: old.kind.name(),
                    by: op.id,
                    by_kind: op.kind.name(),
                    who: op.requested_by.clone(),
                });
            }
            let reason = format!(
                "{} {} ({}) while in CrashLoopBackOff",
                super::notify::SUPERSEDED,
                op.id,
                op.kind.name()
            );
            self.finish(Err(reason), now, &mut out);
            self.queue.push_front(op);
        } else {
            self.queue.push_back(op);
        }
        self.step(catalog, now, &mut out);
        Ok(out)
    }

    /// Starts queued operations while nothing is in progress. Call after loading and after
    /// [`Controller::recover`].
    pub fn poll(&mut self, catalog: &Catalog, now: Timestamp) -> Vec<Intent> {
        let mut out = Vec::new();
        self.step(catalog, now, &mut out);
        out
    }

    fn step(&mut self, catalog: &Catalog, now: Timestamp, out: &mut Vec<Intent>) {
        // Each pass either starts an operation that keeps running (and stops) or finishes one.
        for _ in 0..=self.queue.len() {
            if self.active.is_some() {
                return;
            }
            let Some(op) = self.queue.front_mut() else {
                return;
            };
            op.status = OpStatus::InProgress;
            op.started_at = Some(now);
            let (id, kind) = (op.id, op.kind.clone());
            self.active = Some(Active {
                op: id,
                rollout: None,
                revoking: false,
            });
            if self.deployment.deleted {
                self.finish(Err(DomainError::Deleted.to_string()), now, out);
                continue;
            }
            if let Err(e) = validate(&self.deployment, &kind, catalog) {
                self.finish(Err(e.to_string()), now, out);
                continue;
            }
            if matches!(kind, OpKind::Export | OpKind::Certificate) {
                // Finishes on `Event::ExportFinished` / `CertificateFinished`; until then it
                // holds the queue.
                if let Some(op) = self.queue.front() {
                    out.push(Intent::SaveOp(Box::new(op.clone())));
                }
                out.push(match kind {
                    OpKind::Export => Intent::Export { op: id },
                    _ => Intent::Certificate {
                        op: id,
                        hostname: self.deployment.hostname.clone(),
                    },
                });
                return;
            }
            if let OpKind::Build { builder, .. } = kind {
                // Finishes on `Event::BuildFinished`; until then it holds the queue.
                if let Some(op) = self.queue.front() {
                    out.push(Intent::SaveOp(Box::new(op.clone())));
                }
                out.push(Intent::Build { op: id, builder });
                return;
            }
            let (spec, generation) = self.target(&kind);
            let wanted = if kind == OpKind::Delete {
                0
            } else {
                self.deployment.wanted_nodes(&spec)
            };
            let mut rollout = Rollout::new(plan(&self.deployment, wanted), spec, generation);
            if let OpKind::RotateKey { key, value } = &kind {
                rollout.keys = Some(self.deployment.keys.with(*key, value));
            }
            let outcome = rollout.begin(&mut self.deployment, &self.timings, now, out);
            if let Some(a) = self.active.as_mut() {
                a.rollout = Some(rollout);
            }
            self.settle(outcome, now, out);
        }
    }

    /// The spec and generation `kind` moves the deployment to.
    fn target(&self, kind: &OpKind) -> (Spec, u64) {
        let dep = &self.deployment;
        let mut spec = dep.spec.clone();
        match kind.clone() {
            OpKind::Deploy { version, image } => {
                spec.version = version;
                spec.image = image;
            }
            OpKind::Scale { node_cpus, db_cpus } => {
                spec.node_cpus = node_cpus;
                spec.db_cpus = db_cpus;
            }
            OpKind::SetVars { vars } => spec.vars = vars,
            OpKind::SetConfig {
                config,
                secret_config,
                remove_config,
                remove_secret_config,
            } => {
                spec.config.retain(|k, _| !remove_config.contains(k));
                spec.config.extend(config);
                spec.secret_config
                    .retain(|k, _| !remove_secret_config.contains(k));
                spec.secret_config.extend(secret_config);
            }
            // New keys are what the nodes run: a new generation, like a config change.
            OpKind::RotateKey { .. } => {}
            OpKind::Reboot
            | OpKind::Export
            | OpKind::Certificate
            | OpKind::Build { .. }
            | OpKind::Delete => return (spec, dep.generation.max(1)),
        }
        (spec, dep.generation + 1)
    }

    /// A node event.
    pub fn handle_event(&mut self, ev: Event, catalog: &Catalog, now: Timestamp) -> Vec<Intent> {
        let mut out = Vec::new();
        match ev {
            Event::ExportFinished { op, result } => {
                self.export_finished(op, result, now, &mut out);
                self.step(catalog, now, &mut out);
                return out;
            }
            Event::CertificateFinished { op, result } => {
                if self.running(op, &OpKind::Certificate) {
                    self.finish(result.map(Some), now, &mut out);
                }
                self.step(catalog, now, &mut out);
                return out;
            }
            Event::RevocationFinished { op, result } => {
                let revoking = self.active.as_ref().is_some_and(|a| a.revoking);
                if revoking && self.running(op, &OpKind::Delete) {
                    let result = (!result.is_null()).then_some(result);
                    self.finish(Ok(result), now, &mut out);
                }
                self.step(catalog, now, &mut out);
                return out;
            }
            _ => {}
        }
        if let Event::BuildFinished { op, result } = ev {
            // A report about an operation that is not the running build (interrupted by a
            // restart) is ignored.
            let running = self.active.as_ref().is_some_and(|a| a.op == op)
                && self
                    .queue
                    .front()
                    .is_some_and(|o| matches!(o.kind, OpKind::Build { .. }));
            if running {
                self.finish(result.map(Some), now, &mut out);
            }
            self.step(catalog, now, &mut out);
            return out;
        }
        let (node, incarnation) = match &ev {
            Event::NodeStarted {
                node, incarnation, ..
            }
            | Event::NodeHealthy { node, incarnation }
            | Event::NodeExited { node, incarnation } => (node.clone(), Some(*incarnation)),
            Event::ConnectionsDrained { node } => (node.clone(), None),
            Event::ExportFinished { .. }
            | Event::CertificateFinished { .. }
            | Event::RevocationFinished { .. }
            | Event::BuildFinished { .. } => return out,
        };
        let Some(record) = self.deployment.nodes.iter_mut().find(|n| n.id == node) else {
            return out;
        };
        if incarnation.is_some_and(|i| i != record.incarnation) {
            // About a process that has since been replaced: stale.
            return out;
        }
        if let Event::NodeStarted {
            addr,
            grpc,
            console,
            ..
        } = &ev
        {
            record.addr = Some(*addr);
            record.grpc = *grpc;
            record.console = *console;
            return out;
        }
        let mut rollout = self.active.as_mut().and_then(|a| a.rollout.take());
        let outcome = match rollout.as_mut() {
            Some(r) if r.is_current(&self.deployment, &node) => {
                let (dep, t) = (&mut self.deployment, &self.timings);
                match ev {
                    Event::NodeHealthy { .. } => r.healthy(dep, t, now, &mut out),
                    Event::NodeExited { .. } => r.exited(dep, t, now, &mut out),
                    Event::ConnectionsDrained { .. } => r.drained(dep, &mut out),
                    _ => Outcome::Running,
                }
            }
            _ => {
                self.outside_rollout(&ev, &node, now, &mut out);
                Outcome::Running
            }
        };
        if let (Some(a), Some(r)) = (self.active.as_mut(), rollout) {
            a.rollout = Some(r);
        }
        self.settle(outcome, now, &mut out);
        self.step(catalog, now, &mut out);
        out
    }

    /// Ends the export in progress with the settings document (taken now: nothing changed
    /// the deployment while it ran) plus the database dump's description. A report about an
    /// operation that is not the running export (interrupted by a restart) is ignored.
    fn export_finished(
        &mut self,
        op: OpId,
        result: Result<Option<serde_json::Value>, String>,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) {
        if !self.running(op, &OpKind::Export) {
            return;
        }
        let result = result.map(|database| {
            let mut doc = export(&self.deployment);
            if let (Some(db), Some(obj)) = (database, doc.as_object_mut()) {
                obj.insert("database".into(), db);
            }
            Some(doc)
        });
        self.finish(result, now, out);
    }

    /// Whether `op` is the operation in progress and of `kind`: a report about another (one
    /// interrupted by a restart) is ignored.
    fn running(&self, op: OpId, kind: &OpKind) -> bool {
        self.active.as_ref().is_some_and(|a| a.op == op)
            && self.queue.front().is_some_and(|o| o.kind == *kind)
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, catalog: &Catalog, now: Timestamp) -> Vec<Intent> {
        let mut out = Vec::new();
        self.run_restarts(now, &mut out);
        let Some(mut rollout) = self.active.as_mut().and_then(|a| a.rollout.take()) else {
            return out;
        };
        let outcome = rollout.timeout(&mut self.deployment, &self.timings, now, &mut out);
        if let Some(a) = self.active.as_mut() {
            a.rollout = Some(rollout);
        }
        self.settle(outcome, now, &mut out);
        self.step(catalog, now, &mut out);
        out
    }

    /// Called once after loading from the store on a control-plane restart.
    ///
    /// An operation that was in progress is **marked failed**, not resumed: the rollout's
    /// in-memory step (which node was draining, whether a start was already requested) died
    /// with the process, and guessing it could stop a second node while the first is still
    /// down. Failing is explicit, keeps the applied spec (a failed operation leaves the
    /// previous state), and lets the operator re-queue; the operations behind it then run.
    /// Every recorded node is (re)started with the applied spec so the deployment converges
    /// to its last good state; drivers treat a start of a node that is already running as
    /// adopting it.
    pub fn recover(&mut self, catalog: &Catalog, now: Timestamp) -> Vec<Intent> {
        let mut out = Vec::new();
        for op in self.queue.iter_mut() {
            if op.status == OpStatus::InProgress {
                op.status = OpStatus::Failed;
                op.finished_at = Some(now);
                op.progress = None;
                op.error = Some("interrupted by a control-plane restart".into());
                out.push(Intent::SaveOp(Box::new(op.clone())));
            }
        }
        self.queue.retain(|o| !o.status.is_final());
        self.active = None;
        if !self.deployment.deleted {
            let dep = &mut self.deployment;
            let (spec, generation) = (dep.spec.clone(), dep.generation);
            let slots: Vec<u32> = dep.nodes.iter().map(|n| n.slot).collect();
            for slot in slots {
                let launch = dep.launch(slot, &spec, generation, self.timings.grace);
                if let Some(n) = dep.node_mut(slot) {
                    n.state = NodeRunState::Starting;
                    n.generation = generation;
                    n.incarnation = launch.incarnation;
                    out.push(Intent::StartNode { spec: launch });
                }
            }
        }
        self.step(catalog, now, &mut out);
        out
    }

    fn settle(&mut self, outcome: Outcome, now: Timestamp, out: &mut Vec<Intent>) {
        match outcome {
            Outcome::Running => self.refresh_progress(out),
            Outcome::Done => {
                if !self.revoke_first(out) {
                    self.finish(Ok(None), now, out);
                }
            }
            Outcome::Failed(why) => self.finish(Err(why), now, out),
        }
    }

    /// Whether the active operation is a delete whose nodes are gone and whose certificates'
    /// revocation is (now) asked for: it ends on [`Event::RevocationFinished`], so the
    /// revocation's outcome is on the delete's record. Asked for once.
    fn revoke_first(&mut self, out: &mut Vec<Intent>) -> bool {
        let delete = self.queue.front().is_some_and(|o| o.kind == OpKind::Delete);
        let Some(active) = self.active.as_mut().filter(|_| delete) else {
            return false;
        };
        if !active.revoking {
            active.revoking = true;
            out.push(Intent::Revoke {
                op: active.op,
                hostname: self.deployment.hostname.clone(),
            });
        }
        true
    }

    fn refresh_progress(&mut self, out: &mut Vec<Intent>) {
        let Some(active) = &self.active else { return };
        let progress = active.rollout.as_ref().and_then(|r| {
            r.progress().map(|(step, of, slot, phase)| Progress {
                step,
                of,
                node: super::deployment::node_id(&self.deployment.instance, slot),
                phase: phase.to_string(),
                until: match r.phase {
                    Some(Phase::Draining { deadline } | Phase::Starting { deadline }) => {
                        Some(deadline)
                    }
                    Some(Phase::Backoff { until }) => Some(until),
                    Some(Phase::Stopping) | None => None,
                },
            })
        });
        if let Some(op) = self.queue.front_mut() {
            if op.progress != progress {
                op.progress = progress;
                out.push(Intent::SaveOp(Box::new(op.clone())));
            }
        }
    }

    /// Ends the active operation. Only success applies the target spec.
    fn finish(
        &mut self,
        result: Result<Option<serde_json::Value>, String>,
        now: Timestamp,
        out: &mut Vec<Intent>,
    ) {
        let Some(active) = self.active.take() else {
            return;
        };
        let Some(mut op) = self.queue.pop_front() else {
            return;
        };
        debug_assert_eq!(op.id, active.op);
        op.finished_at = Some(now);
        op.progress = None;
        match result {
            Ok(doc) => {
                op.status = OpStatus::Completed;
                op.result = doc;
                if let Some(r) = active.rollout {
                    if op.kind == OpKind::Delete {
                        self.deployment.deleted = true;
                        out.push(Intent::RemoveDeployment);
                    } else {
                        self.deployment.spec = r.spec;
                        self.deployment.generation = r.generation;
                        if let Some(keys) = r.keys {
                            self.deployment.keys = keys;
                        }
                        if matches!(op.kind, OpKind::Deploy { .. }) {
                            self.deployment.deployed();
                        }
                    }
                }
            }
            Err(why) => {
                op.status = OpStatus::Failed;
                op.error = Some(why);
            }
        }
        out.push(Intent::SaveOp(Box::new(op)));
        if self.deployment.deleted {
            while let Some(mut rest) = self.queue.pop_front() {
                rest.status = OpStatus::Failed;
                rest.finished_at = Some(now);
                rest.error = Some(DomainError::Deleted.to_string());
                out.push(Intent::SaveOp(Box::new(rest)));
            }
        }
    }
}
