//! Picking a node for a new connection: power-of-two-choices on active connections among
//! `ready` nodes, never a draining or unhealthy one (DESIGN.md, "Node states and routing rules").
//!
//! A pick allocates nothing: it loads the snapshot, draws two candidates from the
//! precomputed ready list, and returns a guard holding one `Arc`.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
};

use crate::table::{Deployment, HealthTable, Node, NodeState};

/// Why no node was picked. The proxy turns these into status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No such deployment (404).
    #[error("unknown deployment")]
    UnknownDeployment,
    /// The deployment exists but has no node that takes new connections (503 + Retry-After).
    #[error("no ready node")]
    NoReadyNode,
    /// The deployment is at its connection limit (503 + Retry-After).
    #[error("deployment at its connection limit")]
    AtCapacity,
}

/// Holds one connection (or request) against a node. Counts it on the node and its deployment
/// while alive; dropping it releases both. Keeps the snapshot's deployment alive, so the node's
/// address stays readable even after the table moved on.
#[derive(Debug)]
pub struct ConnectionGuard {
    deployment: Arc<Deployment>,
    index: u32,
    console: bool,
}

impl ConnectionGuard {
    /// The node this connection was given to.
    pub fn node(&self) -> &Node {
        &self.deployment.nodes()[self.index as usize]
    }
    /// The deployment the node belongs to (as of the pick).
    pub fn deployment(&self) -> &Arc<Deployment> {
        &self.deployment
    }
    /// Where this connection goes: the node's console address for a console connection
    /// (picked only among nodes that have one), else its HTTP/WebSocket address.
    pub fn addr(&self) -> SocketAddr {
        let node = self.node();
        match (self.console, node.console()) {
            (true, Some(console)) => console,
            _ => node.addr(),
        }
    }
    /// Whether this is a connection to the deployment's console.
    pub fn is_console(&self) -> bool {
        self.console
    }
    /// Records an upstream connect failure against the node (passive ejection).
    pub fn eject(&self, now_ms: u64, period_ms: u64) {
        self.node().stats().eject(now_ms, period_ms);
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.node().stats().active.fetch_sub(1, Ordering::Relaxed);
        self.deployment
            .stats()
            .active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// splitmix64: a stateless mix of a counter, so picks need no RNG and stay reproducible.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl HealthTable {
    /// Picks a node of `instance`.`zone` for a new connection at `now_ms` (the caller's
    /// monotonic clock, used only for passive ejection).
    pub fn pick(
        &self,
        instance: &str,
        zone: &str,
        now_ms: u64,
    ) -> Result<ConnectionGuard, PickError> {
        self.pick_excluding(instance, zone, now_ms, None)
    }

    /// Like [`pick`](Self::pick), but avoids the node `exclude` when another candidate
    /// exists: the retry after a connect failure goes to another node.
    pub fn pick_excluding(
        &self,
        instance: &str,
        zone: &str,
        now_ms: u64,
        exclude: Option<&str>,
    ) -> Result<ConnectionGuard, PickError> {
        let snapshot = self.load();
        let dep = snapshot
            .find(instance, zone)
            .ok_or(PickError::UnknownDeployment)?;
        let rand = mix(self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed));
        pick_in(dep, rand, now_ms, exclude)
    }
}

/// Picks within one deployment with the random word `rand`.
pub fn pick_in(
    dep: &Arc<Deployment>,
    rand: u64,
    now_ms: u64,
    exclude: Option<&str>,
) -> Result<ConnectionGuard, PickError> {
    let pool: &[u32] = if !dep.ready.is_empty() {
        &dep.ready
    } else if dep.fallback_to_draining && !dep.draining.is_empty() {
        &dep.draining
    } else {
        return Err(PickError::NoReadyNode);
    };
    let index = choose(dep, pool, rand, now_ms, exclude);
    admit(dep, index, false)
}

/// Picks the console node of `dep`: the first ready node with a console (in the writer's
/// order) that is neither passively ejected nor `exclude`, else the first ready one with a
/// console. Never a draining node, whatever `fallback_to_draining` says: the console is an
/// operator's tool, not traffic to keep up during a reboot. One node rather than a balance:
/// consecutive page loads of the console see the same node, and its traffic is small.
/// The caller checks the allow-list first ([`crate::console::admits`]).
pub fn pick_console_in(
    dep: &Arc<Deployment>,
    now_ms: u64,
    exclude: Option<&str>,
) -> Result<ConnectionGuard, PickError> {
    let nodes = dep.nodes();
    let usable = |i: &&u32| {
        let n = &nodes[**i as usize];
        !n.stats.is_ejected(now_ms) && exclude != Some(n.id())
    };
    let index = dep
        .console_ready
        .iter()
        .find(usable)
        .or_else(|| dep.console_ready.first())
        .copied()
        .ok_or(PickError::NoReadyNode)?;
    admit(dep, index, true)
}

/// Counts a new connection on `dep` and its node `index`, within the deployment's limit.
fn admit(dep: &Arc<Deployment>, index: u32, console: bool) -> Result<ConnectionGuard, PickError> {
    let stats = dep.stats();
    let prev = stats.active.fetch_add(1, Ordering::Relaxed);
    if dep.max_connections.is_some_and(|max| prev >= max) {
        stats.active.fetch_sub(1, Ordering::Relaxed);
        return Err(PickError::AtCapacity);
    }
    let node = &dep.nodes()[index as usize];
    debug_assert!(node.state() == NodeState::Ready || (dep.fallback_to_draining && !console));
    node.stats.active.fetch_add(1, Ordering::Relaxed);
    Ok(ConnectionGuard {
        deployment: Arc::clone(dep),
        index,
        console,
    })
}

/// Power of two choices among the usable members of `pool`. A member is usable when it is not
/// passively ejected and not `exclude`; if no member is usable, every member is (we never go
/// below one node because of ejection).
fn choose(dep: &Deployment, pool: &[u32], rand: u64, now_ms: u64, exclude: Option<&str>) -> u32 {
    let nodes = dep.nodes();
    let usable = |i: u32| {
        let n = &nodes[i as usize];
        !n.stats.is_ejected(now_ms) && exclude != Some(n.id())
    };
    let n = pool.len();
    if n == 1 {
        return pool[0];
    }
    // Draw two distinct positions; retry a few draws before scanning, so the common case
    // stays O(1) even in a large deployment with some ejected nodes.
    let mut r = rand;
    let mut best: Option<u32> = None;
    let mut seen = 0;
    for _ in 0..4 {
        let a = pool[(r as u32 as usize) % n];
        let b_pos = ((r >> 32) as usize) % (n - 1);
        let a_pos = (r as u32 as usize) % n;
        let b = pool[if b_pos >= a_pos { b_pos + 1 } else { b_pos }];
        for c in [a, b] {
            if usable(c) {
                best = Some(lighter(nodes, best, c));
                seen += 1;
            }
        }
        if seen >= 2 {
            break;
        }
        r = mix(r);
    }
    if let Some(b) = best {
        return b;
    }
    pool.iter()
        .copied()
        .filter(|&i| usable(i))
        .fold(None, |best, c| Some(lighter(nodes, best, c)))
        .unwrap_or_else(|| {
            pool.iter()
                .copied()
                .fold(pool[0], |best, c| lighter(nodes, Some(best), c))
        })
}

fn lighter(nodes: &[Node], best: Option<u32>, c: u32) -> u32 {
    match best {
        Some(b) if nodes[b as usize].stats.active() <= nodes[c as usize].stats.active() => b,
        _ => c,
    }
}

impl HealthTable {
    /// Picks the console node of `instance`.`zone` for a new connection from `client` at
    /// `now_ms`: the deployment's allow-list first, then [`pick_console_in`].
    pub fn pick_console(
        &self,
        instance: &str,
        zone: &str,
        client: Option<std::net::IpAddr>,
        now_ms: u64,
        exclude: Option<&str>,
    ) -> Result<ConnectionGuard, ConsolePickError> {
        let snapshot = self.load();
        let dep = snapshot
            .find(instance, zone)
            .ok_or(ConsolePickError::Pick(PickError::UnknownDeployment))?;
        crate::console::admits(dep.console_allow(), client).map_err(ConsolePickError::Refused)?;
        pick_console_in(dep, now_ms, exclude).map_err(ConsolePickError::Pick)
    }
}

/// Why no console node was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsolePickError {
    /// The client may not reach this console (403).
    #[error("{0}")]
    Refused(crate::console::ConsoleRefusal),
    /// No node (404, 503).
    #[error("{0}")]
    Pick(PickError),
}
