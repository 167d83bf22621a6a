//! The node health table: deployments → nodes, published as immutable snapshots.
//!
//! Readers (every new connection) load the current snapshot through `arc-swap` without a lock.
//! Writers (discovery, the control plane) build a new snapshot and swap it in whole. To keep a
//! per-deployment update cheap in a table of 10,000 deployments, the snapshot is split into
//! fixed shards and an update copies only the shard that holds the deployment.
//!
//! Per-node and per-deployment counters live outside the snapshots (in [`NodeStats`] and
//! [`DeploymentStats`]), shared by every snapshot that holds that node, so connection counts
//! survive swaps and even a node's removal while its connections are still open.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
};

use arc_swap::{ArcSwap, Guard};

use crate::names::{InstanceName, Zone};

/// Number of shards the snapshot is split into (a power of two).
const SHARDS: usize = 64;

/// The state of a node as far as routing is concerned (see DESIGN.md, "Node states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Takes new connections.
    Ready,
    /// Being rebooted, updated or removed: no new connections, existing ones kept.
    Draining,
    /// Failing checks: no new connections.
    Unhealthy,
}

impl NodeState {
    /// The lower-case name used in config files and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// All states, for exporting a gauge per state.
    pub const ALL: [NodeState; 3] = [Self::Ready, Self::Draining, Self::Unhealthy];
}

/// One node as a writer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Unique within its deployment; the key that connection counters are kept under.
    pub id: String,
    /// HTTP API and WebSocket address.
    pub addr: SocketAddr,
    /// gRPC address, when the node serves gRPC.
    pub grpc: Option<SocketAddr>,
    /// Console address (Nakama's 7351), when the node serves its console.
    pub console: Option<SocketAddr>,
    /// Routing state.
    pub state: NodeState,
}

/// One deployment as a writer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSpec {
    /// Instance name (unique on the platform: the table's key).
    pub instance: InstanceName,
    /// Zone.
    pub zone: Zone,
    /// Its nodes.
    pub nodes: Vec<NodeSpec>,
    /// Opt-in: with no ready node, send new connections to a draining one rather than 503.
    pub fallback_to_draining: bool,
    /// Most concurrent connections (and in-flight requests) the deployment accepts.
    pub max_connections: Option<u64>,
    /// Client networks that may reach the deployment's console; empty: the console is closed.
    pub console_allow: Vec<ipnet::IpNet>,
}

/// Counters of one node, shared across snapshots.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub(crate) active: AtomicU64,
    pub(crate) ejected_until_ms: AtomicU64,
}

impl NodeStats {
    /// Connections and requests currently open on the node through this proxy.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether passive ejection still holds at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Records an upstream connect failure: the node is skipped by picks until
    /// `now_ms + period_ms` (unless it is the only ready node left).
    pub fn eject(&self, now_ms: u64, period_ms: u64) {
        self.ejected_until_ms
            .fetch_max(now_ms.saturating_add(period_ms), Ordering::Relaxed);
    }
}

/// Counters of one deployment, shared across snapshots.
#[derive(Debug, Default)]
pub struct DeploymentStats {
    pub(crate) active: AtomicU64,
}

impl DeploymentStats {
    /// Connections and requests currently open on the deployment.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// A node inside a snapshot.
#[derive(Debug)]
pub struct Node {
    id: Arc<str>,
    addr: SocketAddr,
    grpc: Option<SocketAddr>,
    console: Option<SocketAddr>,
    state: NodeState,
    pub(crate) stats: Arc<NodeStats>,
}

impl Node {
    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The node's id as a shared string (cheap to keep, e.g. as a metric label).
    pub fn id_arc(&self) -> &Arc<str> {
        &self.id
    }
    /// HTTP/WebSocket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// gRPC address, if any.
    pub fn grpc(&self) -> Option<SocketAddr> {
        self.grpc
    }
    /// Console address, if any.
    pub fn console(&self) -> Option<SocketAddr> {
        self.console
    }
    /// Routing state in this snapshot.
    pub fn state(&self) -> NodeState {
        self.state
    }
    /// The node's shared counters.
    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }
}

/// A deployment inside a snapshot.
#[derive(Debug)]
pub struct Deployment {
    instance: InstanceName,
    zone: Zone,
    nodes: Box<[Node]>,
    pub(crate) ready: Box<[u32]>,
    pub(crate) draining: Box<[u32]>,
    /// Ready nodes that serve a console, in the writer's order.
    pub(crate) console_ready: Box<[u32]>,
    pub(crate) console_allow: Box<[ipnet::IpNet]>,
    pub(crate) fallback_to_draining: bool,
    pub(crate) max_connections: Option<u64>,
    pub(crate) stats: Arc<DeploymentStats>,
}

impl Deployment {
    /// Instance name.
    pub fn instance(&self) -> &InstanceName {
        &self.instance
    }
    /// Zone.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }
    /// All nodes, in the order the writer gave them.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// The deployment's shared counters.
    pub fn stats(&self) -> &Arc<DeploymentStats> {
        &self.stats
    }
    /// Client networks that may reach the console (empty: closed).
    pub fn console_allow(&self) -> &[ipnet::IpNet] {
        &self.console_allow
    }
    /// How many nodes are in `state`.
    pub fn count(&self, state: NodeState) -> usize {
        self.nodes.iter().filter(|n| n.state == state).count()
    }
}

/// Keys are `Arc<str>` so copying a shard for an update clones pointers, not strings.
type Shard = HashMap<Arc<str>, Arc<Deployment>>;

/// One immutable version of the table.
#[derive(Debug)]
pub struct Snapshot {
    generation: u64,
    shards: Box<[Arc<Shard>]>,
}

impl Snapshot {
    fn empty() -> Self {
        Self {
            generation: 0,
            shards: (0..SHARDS).map(|_| Arc::new(Shard::new())).collect(),
        }
    }

    /// Increases by one with every publish; 0 is the empty table before any publish.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The deployment `instance` in `zone`, if it exists. Expects lower-case input (SNI is
    /// lower-cased by rustls); mixed-case input is folded on the stack, never allocating.
    pub fn find(&self, instance: &str, zone: &str) -> Option<&Arc<Deployment>> {
        let mut buf = [0u8; 63];
        let instance = if instance.bytes().any(|b| b.is_ascii_uppercase()) {
            let bytes = instance.as_bytes();
            let out = buf.get_mut(..bytes.len())?;
            out.copy_from_slice(bytes);
            out.make_ascii_lowercase();
            std::str::from_utf8(out).ok()?
        } else {
            instance
        };
        let dep = self.shards[shard_of(instance)].get(instance)?;
        dep.zone.as_str().eq_ignore_ascii_case(zone).then_some(dep)
    }

    /// The deployment `instance` (lower-case, the table's key) in whatever zone it is.
    pub fn by_instance(&self, instance: &str) -> Option<&Arc<Deployment>> {
        self.shards[shard_of(instance)].get(instance)
    }

    /// Every deployment, in no particular order.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// Number of deployments.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Whether the table holds no deployment.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// FNV-1a: cheap, stable, and only used to spread our own validated keys over shards.
fn shard_of(instance: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) & (SHARDS - 1)
}

/// Counter registry, on the writer side only: finds the live counters of a node or deployment
/// by key so that a new snapshot shares them with older ones still in use.
#[derive(Debug, Default)]
struct Registry {
    /// instance → node id → counters.
    nodes: HashMap<Box<str>, HashMap<Box<str>, Weak<NodeStats>>>,
    deployments: HashMap<Box<str>, Weak<DeploymentStats>>,
}

impl Registry {
    fn node(&mut self, instance: &str, id: &str) -> Arc<NodeStats> {
        let nodes = match self.nodes.get_mut(instance) {
            Some(n) => n,
            None => self.nodes.entry(Box::from(instance)).or_default(),
        };
        if let Some(stats) = nodes.get(id).and_then(Weak::upgrade) {
            return stats;
        }
        let stats = Arc::new(NodeStats::default());
        nodes.insert(Box::from(id), Arc::downgrade(&stats));
        stats
    }

    fn deployment(&mut self, instance: &str) -> Arc<DeploymentStats> {
        if let Some(stats) = self.deployments.get(instance).and_then(Weak::upgrade) {
            return stats;
        }
        let stats = Arc::new(DeploymentStats::default());
        self.deployments
            .insert(Box::from(instance), Arc::downgrade(&stats));
        stats
    }

    /// Drops entries whose counters nobody holds any more.
    fn prune(&mut self) {
        self.nodes.retain(|_, nodes| {
            nodes.retain(|_, w| w.strong_count() > 0);
            !nodes.is_empty()
        });
        self.deployments.retain(|_, w| w.strong_count() > 0);
    }

    /// Like [`prune`](Self::prune) for one deployment only, so a per-deployment update stays
    /// independent of the table's size.
    fn prune_one(&mut self, instance: &str) {
        if let Some(nodes) = self.nodes.get_mut(instance) {
            nodes.retain(|_, w| w.strong_count() > 0);
            if nodes.is_empty() {
                self.nodes.remove(instance);
            }
        }
        if self
            .deployments
            .get(instance)
            .is_some_and(|w| w.strong_count() == 0)
        {
            self.deployments.remove(instance);
        }
    }

    fn build(&mut self, spec: DeploymentSpec) -> Deployment {
        let instance = spec.instance.as_str();
        let nodes: Box<[Node]> = spec
            .nodes
            .into_iter()
            .map(|n| Node {
                stats: self.node(instance, &n.id),
                id: Arc::from(n.id),
                addr: n.addr,
                grpc: n.grpc,
                console: n.console,
                state: n.state,
            })
            .collect();
        let indices = |state| {
            nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.state == state)
                .map(|(i, _)| i as u32)
                .collect()
        };
        Deployment {
            ready: indices(NodeState::Ready),
            draining: indices(NodeState::Draining),
            console_ready: nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.state == NodeState::Ready && n.console.is_some())
                .map(|(i, _)| i as u32)
                .collect(),
            console_allow: spec.console_allow.into(),
            stats: self.deployment(instance),
            instance: spec.instance,
            zone: spec.zone,
            nodes,
            fallback_to_draining: spec.fallback_to_draining,
            max_connections: spec.max_connections,
        }
    }
}

/// The hot-swapped table. Cheap to share (`Arc<HealthTable>`); reads never lock.
#[derive(Debug)]
pub struct HealthTable {
    current: ArcSwap<Snapshot>,
    writer: Mutex<Registry>,
    pub(crate) seed: AtomicU64,
}

impl Default for HealthTable {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthTable {
    /// An empty table (generation 0).
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            writer: Mutex::new(Registry::default()),
            seed: AtomicU64::new(0x853c_49e6_748f_ea9b),
        }
    }

    /// The current snapshot, without locking.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while publishing cannot leave the registry inconsistent (it only caches
        // weak pointers), so a poisoned lock is safe to keep using.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the whole table with `specs`. Returns the new generation.
    pub fn publish_all(&self, specs: Vec<DeploymentSpec>) -> u64 {
        let mut reg = self.registry();
        let mut shards: Vec<Shard> = (0..SHARDS).map(|_| Shard::new()).collect();
        for spec in specs {
            let key: Arc<str> = Arc::from(spec.instance.as_str());
            let dep = Arc::new(reg.build(spec));
            shards[shard_of(&key)].insert(key, dep);
        }
        let generation = self.current.load().generation + 1;
        self.current.store(Arc::new(Snapshot {
            generation,
            shards: shards.into_iter().map(Arc::new).collect(),
        }));
        reg.prune();
        generation
    }

    /// Inserts or replaces one deployment, copying only its shard. Returns the new generation.
    pub fn publish_deployment(&self, spec: DeploymentSpec) -> u64 {
        let mut reg = self.registry();
        let key: Arc<str> = Arc::from(spec.instance.as_str());
        let dep = Arc::new(reg.build(spec));
        let generation = self.swap_shard(&key, |shard| {
            shard.insert(key.clone(), dep);
        });
        reg.prune_one(&key);
        generation
    }

    /// Removes one deployment. Returns the new generation (published even when the
    /// deployment was not there, so callers can wait on it uniformly).
    pub fn remove_deployment(&self, instance: &str) -> u64 {
        let mut reg = self.registry();
        let generation = self.swap_shard(instance, |shard| {
            shard.remove(instance);
        });
        reg.prune_one(instance);
        generation
    }

    /// Must be called with the writer lock held.
    fn swap_shard(&self, key: &str, edit: impl FnOnce(&mut Shard)) -> u64 {
        let old = self.current.load_full();
        let idx = shard_of(key);
        let mut shard = Shard::clone(&old.shards[idx]);
        edit(&mut shard);
        let mut shards = old.shards.clone();
        shards[idx] = Arc::new(shard);
        let generation = old.generation + 1;
        self.current
            .store(Arc::new(Snapshot { generation, shards }));
        generation
    }
}
