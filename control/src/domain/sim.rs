//! A deterministic simulation of drivers and the proxy around a [`Controller`], used by the
//! unit and property tests: it answers intents with the events a real driver would produce,
//! in an order the test chooses, and moves virtual time to armed timers.

use std::collections::BTreeMap;

use kanmon_router::{Catalog, InstanceName, Version, Zone};

use super::*;

pub(crate) fn v(s: &str) -> Version {
    s.parse().unwrap()
}

pub(crate) fn catalog() -> Catalog {
    Catalog::new(
        ["3.33.0", "3.34.0", "3.35.0", "3.36.0", "3.37.0", "3.37.1"]
            .iter()
            .map(|s| v(s))
            .collect(),
    )
}

pub(crate) fn zones() -> Vec<(Zone, bool)> {
    vec![
        (Zone::parse("us-east1").unwrap(), false),
        (Zone::parse("us-east-1").unwrap(), true),
    ]
}

pub(crate) fn keys() -> Keys {
    Keys {
        server_key: "sk".into(),
        runtime_key: "rk".into(),
    }
}

pub(crate) fn create(kind: DeploymentType, node_cpus: u32) -> CreateDeployment {
    CreateDeployment {
        org: "acme".into(),
        title: "rpg".into(),
        instance: InstanceName::parse("alpha").unwrap(),
        zone: Zone::parse("us-east1").unwrap(),
        kind,
        version: v("3.35.0"),
        node_cpus,
        db_cpus: 2,
        delete_protection: None,
    }
}

/// How the simulated driver treats starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeBehaviour {
    Healthy,
    CrashOnStart,
    /// Starts but never passes its health check.
    Hang,
}

/// The simulation: a controller plus the events the world owes it.
pub(crate) struct Sim {
    pub(crate) ctl: Controller,
    pub(crate) now: Timestamp,
    pub(crate) pending: Vec<Event>,
    pub(crate) timers: Vec<Timestamp>,
    pub(crate) behaviour: NodeBehaviour,
    pub(crate) draining: Vec<String>,
    /// Every process (node, generation, incarnation) ever marked draining: it must never be
    /// ready again. The generation is part of it because a node removed by a scale-down and
    /// added back later starts its incarnations again from 1.
    pub(crate) marked: std::collections::BTreeSet<(String, u64, u64)>,
    pub(crate) saved: BTreeMap<OpId, Operation>,
    pub(crate) next_id: OpId,
    pub(crate) catalog: Catalog,
    pub(crate) removed: bool,
    /// Every (stuck operation, the operation that superseded it) the controller reported.
    pub(crate) superseded: Vec<(OpId, OpId)>,
    /// Every launch the controller asked for, in order.
    pub(crate) started: Vec<NodeLaunch>,
}

impl Sim {
    pub(crate) fn new(kind: DeploymentType, node_cpus: u32, timings: Timings) -> Self {
        let cat = catalog();
        let dep = Deployment::create(
            create(kind, node_cpus),
            &cat,
            &zones(),
            "kanmon.test",
            keys(),
            "ann",
            Timestamp(0),
        )
        .unwrap();
        Self {
            ctl: Controller::new(dep, Vec::new(), timings),
            now: Timestamp(1_000),
            pending: Vec::new(),
            timers: Vec::new(),
            behaviour: NodeBehaviour::Healthy,
            draining: Vec::new(),
            marked: Default::default(),
            saved: BTreeMap::new(),
            next_id: 1,
            catalog: cat,
            removed: false,
            superseded: Vec::new(),
            started: Vec::new(),
        }
    }

    pub(crate) fn submit(&mut self, kind: OpKind) -> Result<OpId, DomainError> {
        let id = self.next_id;
        self.next_id += 1;
        let op = Operation::new(id, "alpha", kind, "ann", self.now);
        let out = self.ctl.submit(op, &self.catalog, self.now)?;
        self.apply(out);
        Ok(id)
    }

    pub(crate) fn apply(&mut self, intents: Vec<Intent>) {
        for i in intents {
            match i {
                Intent::StartNode { spec } => {
                    self.started.push(spec.clone());
                    let incarnation = spec.incarnation;
                    self.pending.push(Event::NodeStarted {
                        node: spec.id.clone(),
                        incarnation,
                        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + spec.slot as u16)),
                        grpc: None,
                        console: None,
                    });
                    match self.behaviour {
                        NodeBehaviour::Healthy => self.pending.push(Event::NodeHealthy {
                            node: spec.id,
                            incarnation,
                        }),
                        NodeBehaviour::CrashOnStart => self.pending.push(Event::NodeExited {
                            node: spec.id,
                            incarnation,
                        }),
                        NodeBehaviour::Hang => {}
                    }
                }
                Intent::StopNode { node, incarnation } => {
                    self.pending.push(Event::NodeExited { node, incarnation })
                }
                Intent::MarkDraining { node } => {
                    let record = self.ctl.deployment.nodes.iter().find(|n| n.id == node);
                    if let Some(r) = record {
                        self.marked
                            .insert((node.clone(), r.generation, r.incarnation));
                    }
                    self.draining.push(node.clone());
                    self.pending.push(Event::ConnectionsDrained { node });
                }
                Intent::MarkReady { node } | Intent::Forget { node } => {
                    self.draining.retain(|n| *n != node)
                }
                Intent::ArmTimer { at } => self.timers.push(at),
                Intent::SaveOp(op) => {
                    self.saved.insert(op.id, *op);
                }
                Intent::RemoveDeployment => self.removed = true,
                Intent::Superseded { op, by, .. } => self.superseded.push((op, by)),
                Intent::Export { op } => self.pending.push(Event::ExportFinished {
                    op,
                    result: Ok(None),
                }),
                Intent::Certificate { op, .. } => self.pending.push(Event::CertificateFinished {
                    op,
                    result: Ok(serde_json::Value::Null),
                }),
                Intent::Revoke { op, .. } => self.pending.push(Event::RevocationFinished {
                    op,
                    result: serde_json::Value::Null,
                }),
                Intent::Build { op, builder } => self.pending.push(Event::BuildFinished {
                    op,
                    result: Ok(serde_json::json!({ "image": format!("sim/{builder}") })),
                }),
            }
        }
    }

    /// Delivers pending event `i` (modulo the count); false when none is pending.
    pub(crate) fn deliver(&mut self, i: usize) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let ev = self.pending.remove(i % self.pending.len());
        let out = self.ctl.handle_event(ev, &self.catalog, self.now);
        self.apply(out);
        true
    }

    /// Jumps to the earliest armed timer and fires it; false when none is armed.
    pub(crate) fn fire_timer(&mut self) -> bool {
        let Some((idx, at)) = self
            .timers
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(_, t)| *t)
        else {
            return false;
        };
        self.timers.remove(idx);
        self.now = self.now.max(at);
        let out = self.ctl.handle_timeout(&self.catalog, self.now);
        self.apply(out);
        true
    }

    /// Runs until nothing is pending or armed (bounded).
    pub(crate) fn settle(&mut self) {
        for _ in 0..10_000 {
            if !self.deliver(0) && !self.fire_timer() {
                return;
            }
        }
        panic!("simulation did not settle");
    }

    pub(crate) fn status(&self, id: OpId) -> OpStatus {
        self.saved[&id].status
    }

    pub(crate) fn nodes_down(&self) -> usize {
        self.ctl
            .deployment
            .nodes
            .iter()
            .filter(|n| n.state != NodeRunState::Ready)
            .count()
    }
}

/// A production deployment with two ready nodes, for other modules' tests.
pub(crate) fn running_deployment() -> Deployment {
    let mut sim = Sim::new(DeploymentType::Production, 2, Timings::default());
    sim.submit(OpKind::Deploy {
        version: v("3.35.0"),
        image: None,
    })
    .unwrap();
    sim.settle();
    sim.ctl.deployment
}
