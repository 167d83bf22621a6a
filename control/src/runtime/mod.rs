//! The runtime around the sans-io controllers: one actor per deployment (its [`Controller`],
//! its mailbox of driver observations and timer firings, see [`actor`]), and the one executor
//! that carries intents out (persist, publish to the edge, drive nodes, arm timers).

mod actor;
mod builds;
mod certify;
mod desire;
mod effects;
mod exports;
pub mod scrub;
mod settings;
mod support;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock, RwLock,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use actor::{Actor, Inputs, Msg};

pub use certify::{Certifier, Revocation, SYSTEM_USER};
pub(crate) use desire::event_of;
pub use exports::{DatabaseExporter, Downloads, DOWNLOAD_TTL};
pub use settings::{
    default_catalog, default_zones, NotifySettings, Settings, SettingsError, Smtp, SmtpSecurity,
};

use crate::{
    domain::{
        Controller, CreateDeployment, Deployment, DeploymentEdit, DomainError, Intent, Keys,
        OpKind, Operation, Timestamp,
    },
    driver::{DesiredState, Driver, NodeStatePublisher, Observer},
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

pub(crate) struct Inner {
    pub(crate) store: Arc<Store>,
    pub(crate) settings: Settings,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) publisher: Arc<dyn NodeStatePublisher>,
    /// Every deployment's actor; the map is locked only to find or add one.
    actors: RwLock<BTreeMap<String, Arc<Actor>>>,
    /// Handed to the driver with every desired state; what it reports reaches the actors.
    observer: Observer,
    /// Next operation id: allocated here rather than read from the store per request, so two
    /// concurrent submits can never get the same id.
    next_op: AtomicU64,
    /// Dumps databases for `export` (set by `kanmon up`; none: exports hold settings only).
    exporter: OnceLock<Arc<dyn DatabaseExporter>>,
    /// Obtains certificates for `certificate` operations (none: no certificate is managed
    /// here, and creating a deployment queues none).
    certifier: OnceLock<Arc<dyn Certifier>>,
    /// Download links of database dumps.
    downloads: Downloads,
    /// Operations, restarts and the API's requests (see [`crate::metrics`]).
    metrics: ControlMetrics,
    /// Wakes the notification worker when a step queued deliveries.
    deliveries: Arc<tokio::sync::Notify>,
    /// The control plane's own listeners (API, metrics), which webhooks may never reach.
    listeners: OnceLock<Vec<std::net::SocketAddr>>,
    /// Runs builds (set under the Kubernetes driver; none: child processes of this machine).
    build_runner: OnceLock<Arc<dyn crate::driver::build::BuildRunner>>,
    /// Builds a restart interrupted, for the runner set later to clean up after.
    interrupted_builds: std::sync::Mutex<Vec<(String, u64)>>,
}

impl Inner {
    fn actor(&self, instance: &str) -> Option<Arc<Actor>> {
        let all = self.actors.read().unwrap_or_else(|p| p.into_inner());
        all.get(instance).cloned()
    }

    fn actors(&self) -> Vec<Arc<Actor>> {
        let all = self.actors.read().unwrap_or_else(|p| p.into_inner());
        all.values().cloned().collect()
    }

    /// Delivers `msg` to the mailbox of `instance`'s actor.
    pub(crate) fn send(&self, instance: &str, msg: Msg) {
        match self.actor(instance) {
            Some(actor) => actor.send(msg),
            None => tracing::debug!(instance, "no such deployment; dropping a report"),
        }
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
        let next_op = store.next_op_id()?;
        let deployments = store.deployments()?;
        let mut unfinished = Vec::with_capacity(deployments.len());
        for dep in deployments {
            let ops = store.unfinished_ops(dep.instance.as_str())?;
            unfinished.push((dep, ops));
        }
        let (observer, mut observations) = Observer::channel();
        let rt = Self {
            inner: Arc::new(Inner {
                store,
                settings,
                driver,
                publisher,
                actors: RwLock::new(BTreeMap::new()),
                observer,
                next_op: AtomicU64::new(next_op),
                exporter: OnceLock::new(),
                certifier: OnceLock::new(),
                downloads: Downloads::default(),
                metrics: ControlMetrics::new()?,
                deliveries: Arc::default(),
                listeners: OnceLock::new(),
                build_runner: OnceLock::new(),
                interrupted_builds: std::sync::Mutex::default(),
            }),
        };
        // A build's runner dies with the process that ran it: a build still recorded as
        // running was interrupted (its operation is failed by the recovery below).
        for (instance, id) in rt
            .inner
            .store
            .fail_running_builds(builds::INTERRUPTED, now())?
        {
            tracing::warn!(instance, build = id, "build interrupted by a restart");
            rt.inner
                .interrupted_builds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((instance, id));
        }
        let inner = rt.inner.clone();
        tokio::spawn(async move {
            while let Some((instance, observation)) = observations.recv().await {
                if let Some(ev) = event_of(&instance, observation) {
                    inner.send(&instance, Msg::Event(ev));
                }
            }
        });
        for (dep, ops) in unfinished {
            let name = dep.instance.to_string();
            rt.add(Controller::new(dep, ops, rt.inner.settings.timings));
            let catalog = rt.inner.settings.catalog.clone();
            // The proxy may have restarted too: every live deployment is published again.
            rt.with(&name, true, |ctl| Ok(ctl.recover(&catalog, now())))?;
        }
        Ok(rt)
    }

    /// Adds a deployment's actor and starts its mailbox loop. Each message is handled on the
    /// blocking pool: a step may wait on the store or a publisher, and must not hold up the
    /// async workers other deployments' steps and the API run on.
    fn add(&self, ctl: Controller) {
        let name = ctl.deployment.instance.to_string();
        let (actor, inputs) = Actor::new(ctl);
        let Inputs {
            mut mailbox,
            desired,
        } = inputs;
        self.inner
            .actors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), actor);
        tokio::spawn(desire::applier(self.inner.clone(), desired));
        let rt = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = mailbox.recv().await {
                let (rt, name) = (rt.clone(), name.clone());
                if let Err(e) = tokio::task::spawn_blocking(move || rt.handle(&name, msg)).await {
                    tracing::error!(error = %e, "control loop step panicked");
                }
            }
        });
    }

    fn handle(&self, name: &str, msg: Msg) {
        let catalog = self.inner.settings.catalog.clone();
        let result = match msg {
            Msg::Event(ev) => {
                self.with(name, false, |ctl| Ok(ctl.handle_event(ev, &catalog, now())))
            }
            Msg::Timer => self.with(name, false, |ctl| Ok(ctl.handle_timeout(&catalog, now()))),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, instance = name, "control loop step failed");
        }
    }

    /// Runs `f` on a deployment's controller, then persists, publishes to the edge and carries
    /// out its intents, under that deployment's lock only, so that the store, the edge and the
    /// controller see its steps in one order while other deployments go on. `republish`
    /// publishes even when no intent changed a node state (recovery, edits).
    fn with(
        &self,
        instance: &str,
        republish: bool,
        f: impl FnOnce(&mut Controller) -> Result<Vec<Intent>, RuntimeError>,
    ) -> Result<(Vec<Intent>, Deployment), RuntimeError> {
        let actor = self
            .inner
            .actor(instance)
            .ok_or_else(|| RuntimeError::NotFound(instance.to_string()))?;
        let mut step = actor.lock();
        let ctl = &mut step.ctl;
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
        actor.refresh(ctl);
        for op in &ops {
            self.inner.metrics.operation_finished(op);
        }
        if ops.iter().any(|o| o.status.is_final()) {
            // The store queued their notifications with them; the worker sends them.
            self.inner.deliveries.notify_one();
        }
        certify::audit_finished(&self.inner, &ops);
        let dep = ctl.deployment.clone();
        effects::to_edge(&self.inner, &dep, &intents, republish);
        let cap = self.inner.settings.timings.grace;
        let changed = desire::desire(&mut step.desired, &dep, &intents, cap);
        // A delete ends a step after its nodes are gone (its revocation comes last), so the
        // driver learns of the deletion (namespace, database) from a state of its own.
        let removed = intents
            .iter()
            .any(|i| matches!(i, Intent::RemoveDeployment));
        if changed || removed {
            actor.want(self.desired_state(&dep, &step.desired));
        }
        drop(step);
        effects::carry_out(&self.inner, &dep, intents.clone());
        Ok((intents, dep))
    }

    fn desired_state(
        &self,
        dep: &Deployment,
        nodes: &BTreeMap<String, crate::driver::DesiredNode>,
    ) -> DesiredState {
        let s = &self.inner.settings;
        DesiredState {
            instance: dep.instance.to_string(),
            deployment: dep.clone(),
            nodes: {
                let mut by_slot: Vec<_> = nodes.values().cloned().collect();
                by_slot.sort_by_key(|n| n.launch.slot);
                by_slot
            },
            probe: crate::driver::Probe {
                interval: s.health_poll,
                timeout: s.timings.health_timeout,
                liveness: s.monitor_interval,
            },
        }
    }

    /// Creates a deployment with fresh keys and queues its certificate (when certificates are
    /// managed here: first, so the nodes are served with it as soon as they are ready) and its
    /// first deploy (which starts the nodes), all recorded as done by `who`.
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
        if s.console.claims(req.instance.as_str()) {
            return Err(DomainError::ReservedName {
                name: req.instance.to_string(),
                pattern: s.console.pattern(),
            }
            .into());
        }
        let zones = self.zones_for(&req.org)?;
        let dep = Deployment::create(req, &s.catalog, &zones, &s.base_domain, keys, who, now())?;
        let name = dep.instance.to_string();
        // The store refuses a taken name, so two creates of one name cannot both add an actor.
        self.inner.store.insert_deployment(&dep)?;
        self.add(Controller::new(dep, Vec::new(), s.timings));
        if self.inner.certifier.get().is_some() {
            self.queue_certificate(&name, who)?;
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
        // A rotation's new key comes from here, never from the request.
        let kind = match kind {
            OpKind::RotateKey { key, .. } => OpKind::RotateKey {
                key,
                value: random_secret(),
            },
            other => other,
        };
        let op = Operation::new(id, instance, kind, who, now());
        let (intents, _) = self.with(instance, false, |ctl| {
            Ok(ctl.submit(op, &catalog, now())?)
        })?;
        // The last saved copy is the freshest status (it may have started or even finished).
        let latest = intents.iter().rev().find_map(|i| match i {
            Intent::SaveOp(o) if o.id == id => Some((**o).clone()),
            _ => None,
        });
        latest.ok_or_else(|| RuntimeError::NotFound(format!("operation {id}")))
    }

    /// Queues a certificate operation for `instance` unless one is already waiting or running
    /// (then `Ok(None)`).
    pub fn queue_certificate(
        &self,
        instance: &str,
        who: &str,
    ) -> Result<Option<Operation>, RuntimeError> {
        match self.submit(instance, OpKind::Certificate, who) {
            Ok(op) => Ok(Some(op)),
            Err(RuntimeError::Domain(DomainError::CertificateQueued)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Edits mutable settings (refusing permanent ones) and republishes.
    pub fn edit(&self, instance: &str, edit: &DeploymentEdit) -> Result<Deployment, RuntimeError> {
        let (_, dep) = self.with(instance, true, |ctl| {
            ctl.deployment.edit(edit)?;
            Ok(Vec::new())
        })?;
        Ok(dep)
    }

    /// Replaces the console allow-list of `instance` and republishes the deployment to the
    /// edge at once (the store first, so a restart keeps it).
    pub fn set_console_allow(
        &self,
        instance: &str,
        allow: Vec<ipnet::IpNet>,
    ) -> Result<Deployment, RuntimeError> {
        let (_, dep) = self.with(instance, true, |ctl| {
            if ctl.deployment.deleted {
                return Err(DomainError::Deleted.into());
            }
            ctl.deployment.console_allow = allow;
            Ok(Vec::new())
        })?;
        Ok(dep)
    }

    /// The current state of one deployment.
    pub fn deployment(&self, instance: &str) -> Result<Deployment, RuntimeError> {
        self.inner
            .actor(instance)
            .map(|a| a.view().deployment.clone())
            .ok_or_else(|| RuntimeError::NotFound(instance.to_string()))
    }

    /// Every deployment (deleted ones included).
    pub fn deployments(&self) -> Vec<Deployment> {
        self.inner
            .actors()
            .iter()
            .map(|a| a.view().deployment.clone())
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

    /// Runs `build` operations through `runner` instead of as local child processes (once;
    /// later calls are ignored), and has it stop what builds interrupted by the restart left
    /// behind. Set before the API serves, inside a tokio runtime.
    pub fn set_build_runner(&self, runner: Arc<dyn crate::driver::build::BuildRunner>) {
        if self.inner.build_runner.set(runner.clone()).is_err() {
            tracing::warn!("build runner already set");
            return;
        }
        // What the interrupted builds left running where this runner runs them (a Job of
        // the cluster) is stopped.
        let left = std::mem::take(
            &mut *self
                .inner
                .interrupted_builds
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if !left.is_empty() {
            tokio::spawn(async move {
                for (instance, id) in left {
                    runner.abandon(&instance, id).await;
                }
            });
        }
    }

    /// Lets `certificate` operations obtain certificates through `certifier` (once; later calls
    /// are ignored). Set before the API serves, so every created deployment queues one.
    pub fn set_certifier(&self, certifier: Arc<dyn Certifier>) {
        if self.inner.certifier.set(certifier).is_err() {
            tracing::warn!("certifier already set");
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
        self.inner
            .actors()
            .iter()
            .map(|a| {
                let view = a.view();
                (view.deployment.clone(), view.waiting)
            })
            .collect()
    }

    /// What the notification worker waits on for new deliveries ([`crate::notify::run`]).
    pub fn delivery_wake(&self) -> Arc<tokio::sync::Notify> {
        self.inner.deliveries.clone()
    }

    /// Records the control plane's own listeners (once), so that webhooks never target them.
    pub fn set_listeners(&self, addrs: Vec<std::net::SocketAddr>) {
        if self.inner.listeners.set(addrs).is_err() {
            tracing::warn!("listeners already recorded");
        }
    }

    /// Where webhooks may go: the loopback switch of the settings and the own listeners.
    pub fn reach(&self) -> crate::domain::notify::Reach {
        crate::domain::notify::Reach {
            allow_loopback: self.inner.settings.notify.allow_loopback,
            own: self.inner.listeners.get().cloned().unwrap_or_default(),
        }
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
