//! One actor per deployment: its controller, its mailbox, and the view readers see.
//!
//! Each deployment's steps (controller call, store write, publish to the edge, driver call)
//! run in order under that deployment's own lock, so they reach the store, the edge and the
//! driver in the order the controller took them; nothing is shared between deployments but
//! the store's connection (held for one write) and the publisher. A slow fsync or a stuck
//! publisher therefore delays only its own deployment.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::domain::{controller::Event, Controller, Deployment, OpStatus};

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

pub(crate) struct Actor {
    ctl: Mutex<Controller>,
    view: Mutex<Arc<View>>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Actor {
    /// An actor for `ctl` and the receiving end of its mailbox (the caller runs the loop).
    pub(crate) fn new(ctl: Controller) -> (Arc<Self>, mpsc::UnboundedReceiver<Msg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let view = Mutex::new(Arc::new(View::of(&ctl)));
        let actor = Arc::new(Self {
            ctl: Mutex::new(ctl),
            view,
            tx,
        });
        (actor, rx)
    }

    /// The controller, for one step.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Controller> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
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
