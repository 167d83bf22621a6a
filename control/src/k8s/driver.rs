//! [`KubeDriver`]: the runtime's [`Driver`] on a Kubernetes cluster. `apply` server-side-applies
//! a deployment's objects and deletes the pods whose incarnation ended (one OnDelete step); a
//! watcher per deployment, started on its first apply, reports its pods through the
//! [`Book`](super::book) that binds pod UIDs to the seam's incarnations.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use futures_util::StreamExt;
use kube::Client;
use tokio::{sync::OnceCell, task::AbortHandle};

use super::{
    apply::Applier, book::Book, desired, watch_observations, DatabaseFlavor, DesiredInput,
    KubeSettings,
};
use crate::{
    domain::Spec,
    driver::{DesiredState, Driver, DriverError, NodePhase, Observer},
    runtime::random_secret,
    store::Store,
};

/// One deployment as the driver knows it.
#[derive(Default)]
struct Tracked {
    book: Arc<Mutex<Book>>,
    /// The database password, read back from the cluster or generated once.
    password: OnceCell<String>,
    watcher: Option<AbortHandle>,
    /// Each object as last applied (`Kind/name` → JSON). Most desired states differ from the
    /// last only in a node's phase, which changes no object or only the StatefulSet's
    /// replicas; re-applying every object would cost one write each in a rolling step's path
    /// (the pod deletion waits behind them). An object is applied again when it changes, and
    /// every object after a control-plane restart (which also takes back hand edits).
    applied: BTreeMap<String, serde_json::Value>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

/// Sets the node StatefulSet's replicas to cover exactly the nodes the domain runs or drains
/// (pods are `{instance}-{slot}`). The spec's node count would make the StatefulSet controller
/// add a scaled-up node's pod only once the operation is over (the persisted spec changes
/// last) and remove a scaled-down node's pod before the operation drained it; with this, a
/// pod appears when its node is asked to run and goes when it is `Gone`.
fn keep_listed_pods(set: &mut super::ObjectSet, desired: &DesiredState) {
    let listed = desired
        .nodes
        .iter()
        .filter(|n| n.phase != NodePhase::Gone)
        .map(|n| n.launch.slot + 1)
        .max()
        .unwrap_or(0);
    for o in &mut set.objects {
        if o.resource.kind == "StatefulSet"
            && o.object.metadata.name.as_deref() == Some(desired.instance.as_str())
        {
            o.object.data["spec"]["replicas"] = serde_json::Value::from(listed);
        }
    }
}

/// Runs deployments as namespaces of a cluster (see configs/kubernetes/README.md).
pub struct KubeDriver {
    client: Client,
    store: Arc<Store>,
    applier: Applier,
    settings: KubeSettings,
    database: OnceCell<DatabaseFlavor>,
    deployments: Mutex<BTreeMap<String, Arc<Mutex<Tracked>>>>,
}

impl std::fmt::Debug for KubeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDriver")
            .field("namespace_prefix", &self.settings.namespace_prefix)
            .finish_non_exhaustive()
    }
}

fn other(e: impl std::fmt::Display) -> DriverError {
    DriverError::Other(e.to_string())
}

impl KubeDriver {
    /// A driver on `client`, keeping its database passwords in `store`.
    pub fn new(client: Client, settings: KubeSettings, store: Arc<Store>) -> Self {
        Self {
            store,
            applier: Applier::new(client.clone(), settings.clone()),
            client,
            settings,
            database: OnceCell::new(),
            deployments: Mutex::new(BTreeMap::new()),
        }
    }

    fn tracked(&self, instance: &str) -> Arc<Mutex<Tracked>> {
        let mut all = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(instance.to_string()).or_default().clone()
    }

    /// The deployment's database password, generated once and kept in the store (the
    /// cluster's Secret is written, never read back: the driver needs no `get` on Secrets).
    /// PostgreSQL takes it only when it initialises its volume, so it must never change.
    fn password(&self, instance: &str) -> Result<String, DriverError> {
        let key = format!("k8s.database-password.{instance}");
        let failed = |e: crate::store::StoreError| DriverError::Other(format!("store: {e}"));
        if let Some(p) = self.store.meta(&key).map_err(failed)? {
            return Ok(p);
        }
        let p = random_secret();
        self.store.set_meta(&key, &p).map_err(failed)?;
        Ok(p)
    }

    fn start_watcher(
        &self,
        instance: &str,
        book: Arc<Mutex<Book>>,
        observer: &Observer,
    ) -> AbortHandle {
        let mut stream = Box::pin(watch_observations(
            self.client.clone(),
            &self.settings.namespace(instance),
        ));
        let observer = observer.clone();
        let instance = instance.to_string();
        tokio::spawn(async move {
            while let Some(o) = stream.next().await {
                match o {
                    Ok(o) => {
                        let out = book.lock().unwrap_or_else(|p| p.into_inner()).observe(o);
                        for o in out {
                            observer.observe(&instance, o);
                        }
                    }
                    Err(e) => tracing::warn!(instance, error = %e, "pod watch failed; retrying"),
                }
            }
        })
        .abort_handle()
    }
}

#[async_trait]
impl Driver for KubeDriver {
    async fn apply(&self, desired: &DesiredState, observer: &Observer) -> Result<(), DriverError> {
        let instance = desired.instance.as_str();
        let tracked = self.tracked(instance);
        if desired.deployment.deleted {
            self.applier
                .delete_deployment(instance)
                .await
                .map_err(other)?;
            // Its pods go with the namespace and its watcher stops: every node not yet
            // reported gone is answered now.
            let exits = {
                let t = tracked.lock().unwrap_or_else(|p| p.into_inner());
                let mut book = t.book.lock().unwrap_or_else(|p| p.into_inner());
                book.close(&desired.nodes)
            };
            for o in exits {
                observer.observe(instance, o);
            }
            let mut all = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
            all.remove(instance);
            return Ok(());
        }
        let database = *self
            .database
            .get_or_try_init(|| self.applier.database_flavor())
            .await
            .map_err(other)?;
        let (book, password) = {
            let t = tracked.lock().unwrap_or_else(|p| p.into_inner());
            (t.book.clone(), t.password.get().cloned())
        };
        let password = match password {
            Some(p) => p,
            None => {
                let p = self.password(instance)?;
                let t = tracked.lock().unwrap_or_else(|p| p.into_inner());
                // One apply per deployment at a time: nobody set it meanwhile.
                let _ = t.password.set(p.clone());
                p
            }
        };
        // New pods run the newest spec any running node is moving to (mid-rollout the
        // replaced nodes keep theirs: OnDelete).
        let newest = desired
            .nodes
            .iter()
            .filter(|n| n.phase != NodePhase::Gone)
            .map(|n| &n.launch)
            .max_by_key(|l| l.generation)
            .filter(|l| l.generation > desired.deployment.generation);
        // A launch carries the spec's node-facing half (config already merged with the
        // secret config); sizes stay the deployment's.
        let (spec, generation) = match newest {
            Some(l) => (
                Spec {
                    version: l.version,
                    image: l.image.clone(),
                    vars: l.vars.clone(),
                    config: l.config.clone(),
                    secret_config: BTreeMap::new(),
                    ..desired.deployment.spec.clone()
                },
                l.generation,
            ),
            None => (
                desired.deployment.spec.clone(),
                desired.deployment.generation,
            ),
        };
        let mut set = desired::desired(
            DesiredInput {
                deployment: &desired.deployment,
                spec: &spec,
                generation,
                database,
                database_password: &password,
            },
            &self.settings,
        )
        .map_err(other)?;
        keep_listed_pods(&mut set, desired);
        let mut changed = Vec::new();
        {
            let t = tracked.lock().unwrap_or_else(|p| p.into_inner());
            for o in std::mem::take(&mut set.objects) {
                let json = serde_json::to_value(&o.object).map_err(other)?;
                if t.applied.get(&o.describe()) != Some(&json) {
                    changed.push((o, json));
                }
            }
        }
        if !changed.is_empty() {
            let (objects, json): (Vec<_>, Vec<_>) = changed.into_iter().unzip();
            let keys: Vec<String> = objects.iter().map(|o| o.describe()).collect();
            set.objects = objects;
            self.applier.apply(&set).await.map_err(other)?;
            let mut t = tracked.lock().unwrap_or_else(|p| p.into_inner());
            t.applied.extend(keys.into_iter().zip(json));
        }
        // The book knows what is wanted before the watcher's first report arrives.
        let plan = book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .want(&desired.nodes);
        {
            let mut t = tracked.lock().unwrap_or_else(|p| p.into_inner());
            if t.watcher.is_none() {
                t.watcher = Some(self.start_watcher(instance, book.clone(), observer));
            }
        }
        for o in plan.report {
            observer.observe(instance, o);
        }
        for d in plan.delete {
            let outcome = self
                .applier
                .delete_pod(instance, &d.node, Some(&d.uid))
                .await
                .map_err(other)?;
            tracing::info!(instance, node = d.node, ?outcome, "deleted a node pod");
        }
        Ok(())
    }

    /// A deleted pod is drained by the cluster: its endpoint turns `serving && terminating`
    /// at once (the edge's draining), the preStop pause covers the edge's reaction, and the
    /// termination grace is the node's own drain. Waiting the grace before the delete as
    /// well would drain twice.
    fn drains_on_stop(&self) -> bool {
        true
    }
}
