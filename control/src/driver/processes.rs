//! The declarative side of drivers whose nodes are processes the control plane starts itself:
//! one worker task per node compares what is wanted with what it started, makes the
//! [`Processes`] calls in order, probes readiness and liveness, and reports each incarnation's
//! fate once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use tokio::{sync::watch, task::JoinHandle};

use super::{
    DesiredNode, DesiredState, Driver, DriverError, NodeHealth, NodePhase, Observation, Observer,
    Probe, Processes,
};

/// What one node's worker is asked for; `None`: the node is no longer listed (stop it
/// without reporting, then end).
type Want = Option<(DesiredNode, Probe)>;

struct Worker {
    want: watch::Sender<Want>,
    task: JoinHandle<()>,
}

/// A [`Driver`] over [`Processes`] (the local process driver, the loopback driver).
pub struct ProcessDriver<P> {
    procs: Arc<P>,
    workers: Mutex<HashMap<(String, String), Worker>>,
    /// Workers of unlisted nodes still stopping them: a worker started later for the same
    /// node waits for its predecessor, so an old stop can never hit a new process.
    retiring: Mutex<HashMap<(String, String), JoinHandle<()>>>,
}

impl<P> std::fmt::Debug for ProcessDriver<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessDriver").finish_non_exhaustive()
    }
}

impl<P: Processes> ProcessDriver<P> {
    /// Drives nodes through `procs`.
    pub fn new(procs: Arc<P>) -> Self {
        Self {
            procs,
            workers: Mutex::default(),
            retiring: Mutex::default(),
        }
    }

    /// The processes this driver drives.
    pub fn processes(&self) -> &Arc<P> {
        &self.procs
    }
}

#[async_trait]
impl<P: Processes> Driver for ProcessDriver<P> {
    async fn apply(&self, desired: &DesiredState, observer: &Observer) -> Result<(), DriverError> {
        let instance = &desired.instance;
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let listed: HashSet<&str> = desired.nodes.iter().map(|n| n.launch.id.as_str()).collect();
        for node in &desired.nodes {
            let key = (instance.clone(), node.launch.id.clone());
            let want = Some((node.clone(), desired.probe));
            match workers.get(&key) {
                Some(w) if !w.task.is_finished() => {
                    w.want.send_if_modified(|cur| {
                        let changed = *cur != want;
                        if changed {
                            *cur = want.clone();
                        }
                        changed
                    });
                }
                _ => {
                    let before = self
                        .retiring
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    let (tx, rx) = watch::channel(want);
                    let task = tokio::spawn(work(
                        self.procs.clone(),
                        key.clone(),
                        rx,
                        observer.clone(),
                        before,
                    ));
                    workers.insert(key, Worker { want: tx, task });
                }
            }
        }
        let unlisted: Vec<(String, String)> = workers
            .keys()
            .filter(|(i, n)| i == instance && !listed.contains(n.as_str()))
            .cloned()
            .collect();
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        retiring.retain(|_, t| !t.is_finished());
        for key in unlisted {
            if let Some(w) = workers.remove(&key) {
                w.want.send_replace(None);
                retiring.insert(key, w.task);
            }
        }
        Ok(())
    }
}

/// What one worker knows of its node.
#[derive(Debug, Default)]
struct Seen {
    /// The incarnation it started (or adopted) and has not seen exit.
    running: Option<u64>,
    /// Whether `running` is still being checked for readiness.
    checking: bool,
    /// Whether `running` was reported ready (then its liveness is checked).
    ready: bool,
    /// The last incarnation reported exited: never started or reported again.
    exited: Option<u64>,
    /// The last incarnation reported draining.
    draining: Option<u64>,
    /// The last incarnation stopped as asked (and reported so).
    stopped: Option<u64>,
}

/// One node's worker: runs until the node is unlisted or the driver is dropped.
async fn work<P: Processes>(
    procs: Arc<P>,
    (instance, node): (String, String),
    mut want: watch::Receiver<Want>,
    observer: Observer,
    before: Option<JoinHandle<()>>,
) {
    if let Some(before) = before {
        if let Err(e) = before.await {
            tracing::warn!(error = %e, node, "previous node worker failed");
        }
    }
    let mut seen = Seen::default();
    loop {
        let current = want.borrow_and_update().clone();
        let Some((wanted, probe)) = current else {
            if seen.running.is_some() {
                stop(&*procs, &instance, &node).await;
            }
            return;
        };
        let incarnation = wanted.launch.incarnation;
        let report = |o| observer.observe(&instance, o);
        match wanted.phase {
            // Every stop is answered, even of an incarnation already seen dying: the domain
            // may have asked for it before the crash report reached it.
            NodePhase::Gone => {
                if seen.stopped != Some(incarnation) {
                    stop(&*procs, &instance, &node).await;
                    seen = Seen {
                        exited: Some(incarnation),
                        stopped: Some(incarnation),
                        ..Seen::default()
                    };
                    report(exited(&node, incarnation, None));
                }
            }
            NodePhase::Run | NodePhase::Drain => {
                if seen.running != Some(incarnation) && seen.exited != Some(incarnation) {
                    seen = Seen {
                        exited: seen.exited,
                        ..Seen::default()
                    };
                    match procs.start_node(&instance, &wanted.launch).await {
                        Ok(endpoints) => {
                            seen.running = Some(incarnation);
                            seen.checking = true;
                            report(Observation::Started {
                                node: node.clone(),
                                incarnation,
                                endpoints,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, node, "node failed to start");
                            seen.exited = Some(incarnation);
                            report(exited(&node, incarnation, None));
                        }
                    }
                }
                if seen.checking && seen.running == Some(incarnation) {
                    match readiness(&*procs, &instance, &node, probe, &mut want).await {
                        Checked::Ready => {
                            seen.checking = false;
                            seen.ready = true;
                            report(Observation::Ready {
                                node: node.clone(),
                                incarnation,
                            });
                        }
                        Checked::Exited(code) => {
                            seen = Seen {
                                exited: Some(incarnation),
                                ..Seen::default()
                            };
                            report(exited(&node, incarnation, code));
                        }
                        // Re-read what is wanted now (checks resume if it is still this one).
                        Checked::Changed => continue,
                        // The domain's own health deadline decides.
                        Checked::GaveUp => seen.checking = false,
                    }
                }
                let running = seen.running == Some(incarnation);
                if wanted.phase == NodePhase::Drain && running && seen.draining != Some(incarnation)
                {
                    seen.draining = Some(incarnation);
                    report(Observation::Draining {
                        node: node.clone(),
                        incarnation,
                    });
                }
            }
        }
        // Wait for the next change; meanwhile watch a ready node die.
        loop {
            let live = seen.ready.then_some(seen.running).flatten();
            let Some(incarnation) = live else {
                if want.changed().await.is_err() {
                    return;
                }
                break;
            };
            tokio::select! {
                changed = want.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                () = tokio::time::sleep(probe.liveness) => {
                    if procs.health(&instance, &node).await == NodeHealth::Exited {
                        let code = procs.exit_code(&instance, &node).await;
                        seen = Seen {
                            exited: Some(incarnation),
                            ..Seen::default()
                        };
                        observer.observe(&instance, exited(&node, incarnation, code));
                    }
                }
            }
        }
    }
}

fn exited(node: &str, incarnation: u64, code: Option<i32>) -> Observation {
    Observation::Exited {
        node: node.to_string(),
        incarnation,
        code,
    }
}

async fn stop<P: Processes>(procs: &P, instance: &str, node: &str) {
    if let Err(e) = procs.stop_node(instance, node).await {
        tracing::error!(error = %e, instance, node, "stopping node failed");
    }
}

enum Checked {
    Ready,
    Exited(Option<i32>),
    /// What is wanted changed while checking.
    Changed,
    /// Not ready within the probe's timeout (plus two checks' slack).
    GaveUp,
}

/// Checks a started node until it is ready or exits, at most the probe's timeout.
async fn readiness<P: Processes>(
    procs: &P,
    instance: &str,
    node: &str,
    probe: Probe,
    want: &mut watch::Receiver<Want>,
) -> Checked {
    let interval = probe.interval.max(std::time::Duration::from_millis(10));
    let checks = probe.timeout.as_millis() / interval.as_millis() + 2;
    for _ in 0..checks {
        match procs.health(instance, node).await {
            NodeHealth::Healthy => return Checked::Ready,
            NodeHealth::Exited => return Checked::Exited(procs.exit_code(instance, node).await),
            NodeHealth::NotYet => {}
        }
        tokio::select! {
            changed = want.changed() => {
                // The sender is gone only when the driver is: stop checking.
                return if changed.is_ok() { Checked::Changed } else { Checked::GaveUp };
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
    Checked::GaveUp
}

#[cfg(test)]
mod tests;
