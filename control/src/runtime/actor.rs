//! One actor per deployment: its controller, its mailbox, and the view readers see.
//!
//! Each deployment's steps (controller call, store write, publish to the edge, driver call)
//! run in order under that deployment's own lock, so they reach the store, the edge and the
//! driver in the order the controller took them; nothing is shared between deployments but
//! the store's connection (held for one write) and the publisher. A slow fsync or a stuck
//! publisher therefore delays only its own deployment.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::{mpsc, watch};

use crate::{
    domain::{controller::Event, Controller, Deployment, OpStatus},
    driver::{DesiredNode, DesiredState},
};

/// Messages to a deployment's mailbox.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Something the driver (or an export, or a drain watcher) observed.
    Event(Event),
    /// An armed deadline passed.
    Timer,
}

/// What readers (the API, metrics scrapes, progress lines) see of a deployment: the state
/// after its last persisted step, readable while a later step is still publishing.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) deployment: Deployment,
    /// Operations waiting behind the running one.
    pub(crate) waiting: usize,
}

impl View {
    fn of(ctl: &Controller) -> Self {
        // The running operation heads the controller's queue; only pending ones wait.
        let waiting = ctl
            .queue()
            .filter(|o| o.status == OpStatus::Pending)
            .count();
        Self {
            deployment: ctl.deployment.clone(),
            waiting,
        }
    }
}

/// What one step works on.
pub(crate) struct Step {
    pub(crate) ctl: Controller,
    /// The nodes the driver is asked to run, by id: what the intents so far amount to.
    pub(crate) desired: BTreeMap<String, DesiredNode>,
}

pub(crate) struct Actor {
    step: Mutex<Step>,
    view: Mutex<Arc<View>>,
    tx: mpsc::UnboundedSender<Msg>,
    /// The latest desired state for the driver (its applier applies the newest, in order).
    desired: watch::Sender<Option<DesiredState>>,
}

/// The receiving ends of an actor: its mailbox and its desired state.
pub(crate) struct Inputs {
    pub(crate) mailbox: mpsc::UnboundedReceiver<Msg>,
    pub(crate) desired: watch::Receiver<Option<DesiredState>>,
}

impl Actor {
    /// An actor for `ctl` and its inputs (the caller runs their loops).
    pub(crate) fn new(ctl: Controller) -> (Arc<Self>, Inputs) {
        let (tx, mailbox) = mpsc::unbounded_channel();
        let (desired, desired_rx) = watch::channel(None);
        let view = Mutex::new(Arc::new(View::of(&ctl)));
        let actor = Arc::new(Self {
            step: Mutex::new(Step {
                ctl,
                desired: BTreeMap::new(),
            }),
            view,
            tx,
            desired,
        });
        let inputs = Inputs {
            mailbox,
            desired: desired_rx,
        };
        (actor, inputs)
    }

    /// The controller and desired nodes, for one step.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Step> {
        self.step.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the driver a new desired state (call under the step's lock, so states leave in
    /// the order steps made them).
    pub(crate) fn want(&self, state: DesiredState) {
        self.desired.send_replace(Some(state));
    }

    /// Publishes the controller's state to readers (call after the step is persisted).
    pub(crate) fn refresh(&self, ctl: &Controller) {
        let view = Arc::new(View::of(ctl));
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// The state after the last persisted step (never waits for a running step).
    pub(crate) fn view(&self) -> Arc<View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Delivers a message to the mailbox.
    pub(crate) fn send(&self, msg: Msg) {
        if self.tx.send(msg).is_err() {
            tracing::debug!("deployment actor is gone; dropping a report");
        }
    }
}
