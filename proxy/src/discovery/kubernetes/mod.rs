//! Kubernetes discovery: the node table from Services and their EndpointSlices.
//!
//! A game deployment is a Service labelled `kanmon.dev/instance` and `kanmon.dev/zone` with a
//! port named `http` (and optionally `grpc`); its nodes are the endpoints of the
//! EndpointSlices that name it. One watch task per resource and namespace ([`watch`]) reduces
//! objects to views ([`mapping`]) and sends them here; the source folds them into a sans-io
//! [`state::Store`], coalescing whatever has queued up, and publishes per deployment.
//!
//! The table is published for the first time once every watch has listed. API failures never
//! change it: they are counted, the watch starts over with backoff and a fresh list, and after
//! `stale_after` without contact `/readyz` says "stale" while the last good table keeps
//! routing.
//!
//! Tenancy ([`policy`]): an instance is routed only from the namespace that owns it and only to
//! addresses in `allowed_cidrs`; refusals are counted in `kanmon_discovery_rejected_total`.
//!
//! Liveness: a silent API server (a partition: no reset, no close) is noticed within
//! [`DEAD_API_WITHIN`]. Each watch asks the server to end it after [`WATCH_TIMEOUT_SECS`] (a
//! resume from the last resourceVersion, cheap), so a healthy socket is never silent for
//! longer than that; a read silent for [`READ_TIMEOUT`] ends the stream, and the resume that
//! follows fails after another read timeout (or [`CONNECT_TIMEOUT`] when SYNs are lost).
//! While every watch is in step, the last-success gauge advances every [`IN_SYNC_TICK`]
//! (kube's watcher consumes the bookmarks it asks for, to resume from a fresh version, and
//! reports nothing for them).

mod certs;
pub mod mapping;
pub mod policy;
pub mod state;
mod watch;

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
    Api, Client,
};
use tokio::{
    sync::{mpsc, watch as signal},
    task::JoinSet,
};

pub use self::certs::{secret_cert, CertificateSecrets};
use self::{
    mapping::{INSTANCE_LABEL, SERVICE_NAME_LABEL, ZONE_LABEL},
    policy::{Policy, Rejection},
    state::{Change, Flush, Kind, Object, Store, StreamId},
    watch::Signal,
};
use super::{DiscoverySource, Publisher};
use crate::config::Discovery;

/// Label `source` of the discovery metrics.
const SOURCE: &str = "kubernetes";
/// Most signals folded into one publish (a bound on the time a burst can delay a flush).
const MAX_BATCH: usize = 1024;
/// Delay before retrying to build a client (bad kubeconfig, no service account yet).
const CLIENT_RETRY: Duration = Duration::from_secs(5);
/// The API server ends each watch after this long and the watcher resumes it from the last
/// resourceVersion (cheap: served from the watch cache). Shorter than [`READ_TIMEOUT`], so a
/// healthy quiet watch ends cleanly before the read timeout could fire on it.
pub const WATCH_TIMEOUT_SECS: u32 = 5;
/// A request whose socket stays silent this long fails. Without it a partitioned API server
/// (no reset, no close) would hang a list or watch for as long as TCP retransmits (minutes).
pub const READ_TIMEOUT: Duration = Duration::from_secs(7);
/// TCP + TLS connect to the API server (kube's default is 30 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a dead API is counted as an error: the stream's read timeout, then the resume's.
pub const DEAD_API_WITHIN: Duration = Duration::from_secs(2 * READ_TIMEOUT.as_secs());
/// How often the last-success gauge advances while every watch is in step.
const IN_SYNC_TICK: Duration = Duration::from_secs(5);

/// Why a Kubernetes client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither the in-cluster service account nor a kubeconfig is usable.
    #[error("no Kubernetes credentials (in-cluster service account or KUBECONFIG): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Where the API and its credentials come from.
#[derive(Clone)]
enum Credentials {
    /// In-cluster service account, else `KUBECONFIG` / `~/.kube/config`.
    Infer,
    /// An explicit kubeconfig file.
    File(PathBuf),
    /// A ready-made client (benchmarks, embedding).
    Client(Client),
}

/// The Kubernetes discovery source.
pub struct KubernetesSource {
    credentials: Credentials,
    namespaces: Vec<String>,
    stale_after: Duration,
    max_connections: Option<u64>,
    policy: Policy,
    certificates: Option<CertificateSecrets>,
}

impl KubernetesSource {
    /// The source of a `[discovery]` table; every deployment gets `max_connections`.
    pub fn new(cfg: &Discovery, max_connections: Option<u64>) -> Self {
        Self {
            credentials: cfg
                .kubeconfig
                .clone()
                .map_or(Credentials::Infer, Credentials::File),
            namespaces: cfg.namespaces.clone(),
            stale_after: cfg.stale_after,
            max_connections,
            policy: Policy::from_config(cfg),
            certificates: None,
        }
    }

    /// Also watches the certificate Secrets `certs` describes into its store.
    pub fn with_certificates(mut self, certs: CertificateSecrets) -> Self {
        self.certificates = Some(certs);
        self
    }

    /// A source on an existing client (for benchmarks and embedding).
    pub fn with_client(client: Client, cfg: &Discovery, max_connections: Option<u64>) -> Self {
        Self {
            credentials: Credentials::Client(client),
            ..Self::new(cfg, max_connections)
        }
    }

    async fn client(&self) -> Result<Client, ClientError> {
        let mut config = match &self.credentials {
            Credentials::Client(c) => return Ok(c.clone()),
            Credentials::Infer => kube::Config::infer().await.map_err(ClientError::Infer)?,
            Credentials::File(path) => {
                let err = |source| ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                };
                let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(err)?
            }
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        // Time a pooled connection sat idle must not count against the next request.
        config.reset_reader_on_write = true;
        Client::try_from(config).map_err(ClientError::Client)
    }

    /// One stream per kind and namespace (or per kind, for all namespaces).
    fn streams(&self) -> Vec<StreamId> {
        let scopes: Vec<Option<String>> = if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        };
        [Kind::Services, Kind::Slices]
            .into_iter()
            .flat_map(|kind| {
                scopes.iter().map(move |ns| StreamId {
                    kind,
                    namespace: ns.clone(),
                })
            })
            .collect()
    }

    fn spawn_watches(&self, client: &Client, tasks: &mut JoinSet<()>, tx: &mpsc::Sender<Signal>) {
        for stream in self.streams() {
            let tx = tx.clone();
            match stream.kind {
                Kind::Services => {
                    let api: Api<Service> = api(client, &stream);
                    let config = watcher::Config::default()
                        .labels(&format!("{INSTANCE_LABEL},{ZONE_LABEL}"))
                        .timeout(WATCH_TIMEOUT_SECS);
                    tasks.spawn(watch::run(api, config, stream, service_object, tx));
                }
                Kind::Slices => {
                    let api: Api<EndpointSlice> = api(client, &stream);
                    // Every Service's slices, not only those carrying `kanmon.dev/instance`:
                    // only the EndpointSlice controller mirrors the Service's labels, and a
                    // slice written by another controller must be seen to be reported.
                    let config = watcher::Config::default()
                        .labels(SERVICE_NAME_LABEL)
                        .timeout(WATCH_TIMEOUT_SECS);
                    tasks.spawn(watch::run(api, config, stream, slice_object, tx));
                }
            }
        }
    }
}

fn api<K>(client: &Client, stream: &StreamId) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &stream.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn service_object(svc: &Service) -> Option<Object> {
    mapping::service_view(svc).map(Object::Service)
}

fn slice_object(slice: &EndpointSlice) -> Option<Object> {
    mapping::slice_view(slice).map(Object::Slice)
}

/// Streams currently failing; contact is back when it is empty again.
#[derive(Debug, Default)]
struct Health {
    failing: std::collections::BTreeSet<StreamId>,
}

impl Health {
    /// Handles one signal: inputs go to the store, the rest to metrics and logs.
    fn signal(&mut self, signal: Signal, store: &mut Store, publisher: &Publisher) {
        match signal {
            Signal::Input(stream, input) => {
                self.ok(&stream, publisher);
                store.apply(input);
            }
            Signal::Listed(stream) => {
                tracing::debug!(source = SOURCE, %stream, "listed");
                self.ok(&stream, publisher);
                if self.failing.is_empty() {
                    publisher.in_sync(SOURCE);
                }
            }
            Signal::Malformed(stream, error) => {
                publisher.error(
                    SOURCE,
                    &format_args!("{stream}: skipped an undecodable event: {error}"),
                );
            }
            Signal::Expired(stream) => {
                tracing::info!(source = SOURCE, %stream, "resourceVersion expired (410); relisting");
            }
            Signal::Failed {
                stream,
                error,
                retry_in,
            } => {
                tracing::debug!(source = SOURCE, %stream, retry_in_ms = retry_in.as_millis() as u64, "watch restarts with a fresh list");
                self.failing.insert(stream.clone());
                publisher.unreachable(SOURCE, &format_args!("{stream}: {error}"));
            }
        }
    }

    fn ok(&mut self, stream: &StreamId, publisher: &Publisher) {
        if self.failing.remove(stream) && self.failing.is_empty() {
            publisher.in_sync(SOURCE);
        }
    }
}

/// The start-up check that the cluster reports `serving`/`terminating` (draining needs them).
#[derive(Debug, Default)]
struct ConditionsCheck {
    warned: bool,
}

impl ConditionsCheck {
    fn check(&mut self, store: &Store, publisher: &Publisher) {
        let seen = store.conditions();
        let missing = seen.endpoints && !seen.serving_terminating;
        publisher.conditions_missing(missing);
        if missing && !self.warned {
            self.warned = true;
            tracing::warn!(
                source = SOURCE,
                "EndpointSlices carry no serving/terminating conditions (Kubernetes < 1.22 without the EndpointSliceTerminatingCondition gate): terminating pods are treated as unhealthy, not draining"
            );
        }
    }
}

/// Carries a flush out on the table.
fn publish(flush: Flush, store: &Store, publisher: &Publisher) {
    for error in &flush.errors {
        publisher.error(SOURCE, error);
    }
    for r in &flush.rejections {
        publisher.rejected(SOURCE, r.reason.as_str(), &r.object, &r.detail);
    }
    if flush.initial {
        publisher.publish_all(SOURCE, store.published().values().cloned().collect());
        publisher.in_sync(SOURCE);
        return;
    }
    for change in flush.changes {
        match change {
            Change::Publish(spec) => {
                publisher.publish_deployment(SOURCE, spec);
            }
            Change::Remove(instance) => {
                publisher.remove_deployment(SOURCE, &instance);
                tracing::info!(source = SOURCE, instance, "deployment removed");
            }
        }
    }
}

#[async_trait::async_trait]
impl DiscoverySource for KubernetesSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    async fn run(&self, publisher: Publisher, mut shutdown: signal::Receiver<bool>) {
        publisher.set_stale_after(self.stale_after);
        publisher.register(SOURCE, &Rejection::ALL.map(Rejection::as_str));
        let client = loop {
            match self.client().await {
                Ok(c) => break c,
                Err(e) => publisher.unreachable(SOURCE, &e),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(CLIENT_RETRY) => {}
            }
        };
        let (tx, mut rx) = mpsc::channel(MAX_BATCH);
        let mut tasks = JoinSet::new();
        self.spawn_watches(&client, &mut tasks, &tx);
        drop(tx);
        if let Some(certs) = self.certificates.clone() {
            tasks.spawn(certs.run(client.clone(), publisher.clone()));
        }
        tracing::info!(source = SOURCE, namespaces = ?self.namespaces, "watching services and endpointslices");

        let mut store = Store::new(self.streams(), self.max_connections, self.policy.clone());
        let mut health = Health::default();
        let mut tick = tokio::time::interval(IN_SYNC_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conditions = ConditionsCheck::default();
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    if publisher.loaded() && health.failing.is_empty() {
                        publisher.in_sync(SOURCE);
                    }
                    continue;
                }
                s = rx.recv() => s,
            };
            let Some(first) = first else { break };
            health.signal(first, &mut store, &publisher);
            // Coalesce: fold in whatever else is already queued, then publish once.
            for _ in 1..MAX_BATCH {
                match rx.try_recv() {
                    Ok(s) => health.signal(s, &mut store, &publisher),
                    Err(_) => break,
                }
            }
            publish(store.flush(), &store, &publisher);
            conditions.check(&store, &publisher);
        }
        tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests;
