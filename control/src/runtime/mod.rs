//! The runtime around the sans-io controllers: one [`Controller`] per deployment behind a
//! lock, an actor task that feeds them driver events and timer firings, and the code that
//! carries their intents out (persist, publish, drive nodes, arm timers).

mod effects;
mod exports;
pub mod scrub;
mod settings;
mod support;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::mpsc;

pub use exports::{DatabaseExporter, Downloads, DOWNLOAD_TTL};
pub use settings::{default_catalog, default_zones, Settings, SettingsError};

use crate::{
    domain::{
        controller::Event, Controller, CreateDeployment, Deployment, DeploymentEdit, DomainError,
        Intent, Keys, OpKind, Operation, Timestamp,
    },
    driver::{deployment_spec, Driver, NodeStatePublisher},
    metrics::ControlMetrics,
    store::{Store, StoreError},
};

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A lifecycle rule refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store failed (or the name is taken).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such deployment.
    #[error("deployment {0:?} not found")]
    NotFound(String),
    /// The metrics could not be registered.
    #[error("registering control-plane metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Reads the wall clock: the only place the control plane does.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Timestamp(ms)
}

/// 256 bits from the thread-local CSPRNG (ChaCha, seeded from the OS), hex-encoded.
pub fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Messages to the actor.
#[derive(Debug)]
pub(crate) enum Msg {
    Event(String, Event),
    Timer(String),
}

pub(crate) struct Inner {
    pub(crate) store: Arc<Store>,
    pub(crate) settings: Settings,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) publisher: Arc<dyn NodeStatePublisher>,
    controllers: Mutex<BTreeMap<String, Controller>>,
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
    /// Next operation id: allocated here rather than read from the store per request, so two
    /// concurrent submits can never get the same id.
    next_op: AtomicU64,
    /// Dumps databases for `export` (set by `kanmon up`; none: exports hold settings only).
    exporter: OnceLock<Arc<dyn DatabaseExporter>>,
    /// Download links of database dumps.
    downloads: Downloads,
    /// Operations, restarts and the API's requests (see [`crate::metrics`]).
    metrics: ControlMetrics,
}

impl Inner {
    /// The current incarnation of a node, if the node still exists.
    pub(crate) fn incarnation(&self, instance: &str, node: &str) -> Option<u64> {
        let all = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        let dep = &all.get(instance)?.deployment;
        dep.nodes
            .iter()
            .find(|n| n.id == node)
            .map(|n| n.incarnation)
    }
}

/// Handle to the running control plane (cheap to clone).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Loads every deployment from the store, recovers them (see [`Controller::recover`]:
    /// interrupted operations are marked failed, nodes restarted with the applied spec) and
    /// starts the actor. Must be called inside a tokio runtime.
    pub fn start(
        store: Arc<Store>,
        settings: Settings,
        driver: Arc<dyn Driver>,
        publisher: Arc<dyn NodeStatePublisher>,
    ) -> Result<Self, RuntimeError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut controllers = BTreeMap::new();
        for dep in store.deployments()? {
            let ops = store.unfinished_ops(dep.instance.as_str())?;
            let name = dep.instance.to_string();
            controllers.insert(name, Controller::new(dep, ops, settings.timings));
        }
        let names: Vec<String> = controllers.keys().cloned().collect();
        let next_op = store.next_op_id()?;
        let rt = Self {
            inner: Arc::new(Inner {
                store,
                settings,
                driver,
                publisher,
                controllers: Mutex::new(controllers),
                tx,
                next_op: AtomicU64::new(next_op),
                exporter: OnceLock::new(),
                downloads: Downloads::default(),
                metrics: ControlMetrics::new()?,
            }),
        };
        for name in names {
            let catalog = rt.inner.settings.catalog.clone();
            let (_, dep) = rt.with(&name, |ctl| Ok(ctl.recover(&catalog, now())))?;
            // The proxy may have restarted too: give it every live deployment again.
            if !dep.deleted {
                if let Err(e) = rt.inner.publisher.publish(deployment_spec(&dep)) {
                    tracing::error!(error = %e, instance = %name, "publishing node states failed");
                }
            }
        }
        let actor = rt.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                actor.handle(msg);
            }
        });
        Ok(rt)
    }

    fn controllers(&self) -> MutexGuard<'_, BTreeMap<String, Controller>> {
        self.inner
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, msg: Msg) {
        let catalog = self.inner.settings.catalog.clone();
        let result = match msg {
            Msg::Event(name, ev) => {
                self.with(&name, |ctl| Ok(ctl.handle_event(ev, &catalog, now())))
            }
            Msg::Timer(name) => self.with(&name, |ctl| Ok(ctl.handle_timeout(&catalog, now()))),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "control loop step failed");
        }
    }

    /// Runs `f` on a deployment's controller, then persists and carries out its intents, all
    /// under the lock so that the store, the proxy and the controller see steps in one order.
    fn with(
        &self,
        instance: &str,
        f: impl FnOnce(&mut Controller) -> Result<Vec<Intent>, RuntimeError>,
    ) -> Result<(Vec<Intent>, Deployment), RuntimeError> {
        let mut all = self.controllers();
        let ctl = all
            .get_mut(instance)
            .ok_or_else(|| RuntimeError::NotFound(instance.to_string()))?;
        let before = crashlooping(&ctl.deployment);
        let mut intents = f(ctl)?;
        let entered = crashlooping(&ctl.deployment)
            .iter()
            .filter(|id| !before.contains(id))
            .count();
        if entered > 0 {
            self.inner
                .metrics
                .crashloop_entered(instance, entered as u64);
        }
        scrub_errors(&ctl.deployment, &mut intents);
        let ops: Vec<Operation> = intents
            .iter()
            .filter_map(|i| match i {
                Intent::SaveOp(op) => Some((**op).clone()),
                _ => None,
            })
            .collect();
        self.inner.store.persist(&ctl.deployment, &ops)?;
        for op in &ops {
            self.inner.metrics.operation_finished(op);
        }
        let dep = ctl.deployment.clone();
        let publish = intents.iter().any(|i| {
            matches!(
                i,
                Intent::MarkDraining { .. } | Intent::MarkReady { .. } | Intent::Forget { .. }
            )
        });
        if publish && !dep.deleted {
            if let Err(e) = self.inner.publisher.publish(deployment_spec(&dep)) {
                tracing::error!(error = %e, instance, "publishing node states failed");
            }
        }
        drop(all);
        effects::carry_out(&self.inner, &dep, intents.clone());
        Ok((intents, dep))
    }

    /// Creates a deployment with fresh keys and queues its first deploy (which starts the
    /// nodes), both recorded as done by `who`.
    pub fn create(
        &self,
        req: CreateDeployment,
        who: &str,
    ) -> Result<(Deployment, Operation), RuntimeError> {
        let s = &self.inner.settings;
        let keys = Keys {
            server_key: random_secret(),
            runtime_key: random_secret(),
        };
        let version = req.version;
        let zones = self.zones_for(&req.org)?;
        let dep = Deployment::create(req, &s.catalog, &zones, &s.base_domain, keys, who, now())?;
        let name = dep.instance.to_string();
        {
            let mut all = self.controllers();
            self.inner.store.insert_deployment(&dep)?;
            all.insert(name.clone(), Controller::new(dep, Vec::new(), s.timings));
        }
        let op = self.submit(
            &name,
            OpKind::Deploy {
                version,
                image: None,
            },
            who,
        )?;
        Ok((self.deployment(&name)?, op))
    }

    /// Queues an operation.
    pub fn submit(
        &self,
        instance: &str,
        kind: OpKind,
        who: &str,
    ) -> Result<Operation, RuntimeError> {
        let id = self.inner.next_op.fetch_add(1, Ordering::Relaxed);
        let catalog = self.inner.settings.catalog.clone();
        let op = Operation::new(id, instance, kind, who, now());
        let (intents, _) = self.with(instance, |ctl| Ok(ctl.submit(op, &catalog, now())?))?;
        // The last saved copy is the freshest status (it may have started or even finished).
        let latest = intents.iter().rev().find_map(|i| match i {
            Intent::SaveOp(o) if o.id == id => Some((**o).clone()),
            _ => None,
        });
        latest.ok_or_else(|| RuntimeError::NotFound(format!("operation {id}")))
    }

    /// Edits mutable settings (refusing permanent ones) and republishes.
    pub fn edit(&self, instance: &str, edit: &DeploymentEdit) -> Result<Deployment, RuntimeError> {
        let (_, dep) = self.with(instance, |ctl| {
            ctl.deployment.edit(edit)?;
            Ok(Vec::new())
        })?;
        if !dep.deleted {
            if let Err(e) = self.inner.publisher.publish(deployment_spec(&dep)) {
                tracing::error!(error = %e, instance, "publishing node states failed");
            }
        }
        Ok(dep)
    }

    /// The current state of one deployment.
    pub fn deployment(&self, instance: &str) -> Result<Deployment, RuntimeError> {
        self.controllers()
            .get(instance)
            .map(|c| c.deployment.clone())
            .ok_or_else(|| RuntimeError::NotFound(instance.to_string()))
    }

    /// Every deployment (deleted ones included).
    pub fn deployments(&self) -> Vec<Deployment> {
        self.controllers()
            .values()
            .map(|c| c.deployment.clone())
            .collect()
    }

    /// The store (operations log, audit, users).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Lets `export` operations dump databases through `exporter` (once; later calls are
    /// ignored).
    pub fn set_exporter(&self, exporter: Arc<dyn DatabaseExporter>) {
        if self.inner.exporter.set(exporter).is_err() {
            tracing::warn!("database exporter already set");
        }
    }

    /// The download links of database dumps.
    pub fn downloads(&self) -> &Downloads {
        &self.inner.downloads
    }

    /// The control plane's metric handles.
    pub fn metrics(&self) -> &ControlMetrics {
        &self.inner.metrics
    }

    /// Every deployment with the number of operations queued behind its running one.
    pub fn queue_depths(&self) -> Vec<(Deployment, usize)> {
        self.controllers()
            .values()
            .map(|c| {
                // The running operation heads the controller's queue; only pending ones wait.
                let waiting = c
                    .queue()
                    .filter(|o| o.status == crate::domain::OpStatus::Pending)
                    .count();
                (c.deployment.clone(), waiting)
            })
            .collect()
    }

    /// The settings the runtime was started with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}

/// Ids of the deployment's nodes in CrashLoopBackOff (compared before and after a step to
/// count the nodes that entered it).
fn crashlooping(dep: &Deployment) -> Vec<String> {
    dep.nodes
        .iter()
        .filter(|n| n.state == crate::domain::NodeRunState::CrashLoopBackOff)
        .map(|n| n.id.clone())
        .collect()
}

/// Removes the deployment's secrets from the errors of operations about to be stored, the
/// one place every operation error passes through on its way to the store and the API.
fn scrub_errors(dep: &Deployment, intents: &mut [Intent]) {
    let secrets = scrub::secrets_of(dep);
    for intent in intents {
        if let Intent::SaveOp(op) = intent {
            if let Some(e) = op.error.as_mut() {
                *e = scrub::scrub(e, secrets.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests;
