//! Per-client-address limits, applied when a connection is accepted, before any TLS work:
//! at most so many connections open at once and so many new ones (handshakes) per second from
//! one address, so one client can neither take a deployment's connection slots nor the
//! proxy's handshake CPU. IPv6 clients are grouped by /64 (one subscriber's prefix: a host
//! can pick any address in it).
//!
//! The rules (`ClientTable`) are sans-io: time comes in as milliseconds, so they are tested
//! on their own. `ClientLimits` shares them between the proxy's threads (sharded, one short
//! lock per accept and per close) and hands out [`ClientSlot`]s that give their place back
//! when dropped. The address is whatever the caller knows the client by: the TCP peer today,
//! the PROXY-protocol source behind a cloud load balancer. Loopback peers are exempt by
//! default: they are the host itself (a local load generator, health checks, or a local L4
//! balancer that does not pass client addresses on, behind which every client would share one
//! limit).

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// The unit a limit counts: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.into()),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The address has `max_connections_per_client` open already.
    #[error("too many connections from this client")]
    Connections,
    /// The address opened `max_handshakes_per_client` in the last second.
    #[error("too many new connections per second from this client")]
    Handshakes,
}

impl Refused {
    /// The `reason` label of `kanmon_connections_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Connections => "client_connections",
            Self::Handshakes => "client_handshakes",
        }
    }
}

/// One address's state: open connections and a token bucket of new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    open: u32,
    /// Tokens in thousandths (a token is one new connection).
    milli_tokens: u64,
    /// When the bucket was last topped up.
    at_ms: u64,
}

/// The limits over every address seen recently. Sans-io.
#[derive(Debug, Clone)]
pub struct ClientTable {
    max_open: u32,
    per_second: u32,
    entries: HashMap<ClientKey, Entry>,
    /// Admissions since the last sweep of idle entries.
    since_sweep: u32,
}

/// Admissions between two sweeps of entries that hold nothing any more.
const SWEEP_EVERY: u32 = 1024;

impl ClientTable {
    /// At most `max_open` connections at once and `per_second` new ones per second (with a
    /// burst of as many) per address; 0 turns a limit off.
    pub fn new(max_open: u32, per_second: u32) -> Self {
        Self {
            max_open,
            per_second,
            entries: HashMap::new(),
            since_sweep: 0,
        }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.per_second) * 1000
    }

    /// A new connection from `key` at `now_ms`: counted as open, or refused.
    pub fn admit(&mut self, key: ClientKey, now_ms: u64) -> Result<(), Refused> {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.sweep(now_ms);
        }
        let (capacity, per_second, max_open) = (self.capacity(), self.per_second, self.max_open);
        let entry = self.entries.entry(key).or_insert(Entry {
            open: 0,
            milli_tokens: capacity,
            at_ms: now_ms,
        });
        if max_open > 0 && entry.open >= max_open {
            return Err(Refused::Connections);
        }
        if per_second > 0 {
            // `per_second` tokens a second is `per_second` thousandths a millisecond.
            let elapsed = now_ms.saturating_sub(entry.at_ms);
            entry.milli_tokens = entry
                .milli_tokens
                .saturating_add(elapsed.saturating_mul(u64::from(per_second)))
                .min(capacity);
            entry.at_ms = entry.at_ms.max(now_ms);
            if entry.milli_tokens < 1000 {
                return Err(Refused::Handshakes);
            }
            entry.milli_tokens -= 1000;
        }
        entry.open += 1;
        Ok(())
    }

    /// A connection from `key` closed.
    pub fn release(&mut self, key: ClientKey) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && self.per_second == 0 {
                self.entries.remove(&key);
            }
        }
    }

    /// Forgets addresses with nothing open whose bucket has refilled: the table holds only
    /// what a limit still needs.
    fn sweep(&mut self, now_ms: u64) {
        self.since_sweep = 0;
        let (capacity, per_second) = (self.capacity(), u64::from(self.per_second));
        self.entries.retain(|_, e| {
            let refilled = e
                .milli_tokens
                .saturating_add(now_ms.saturating_sub(e.at_ms).saturating_mul(per_second))
                >= capacity;
            e.open > 0 || !refilled
        });
    }

    /// Addresses tracked (for tests).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Shards of the shared table: accepts on different threads rarely wait on each other.
const SHARDS: usize = 32;

/// The table shared by the proxy's threads.
#[derive(Debug)]
pub struct ClientLimits {
    shards: Box<[Mutex<ClientTable>]>,
    off: bool,
    exempt_loopback: bool,
}

impl ClientLimits {
    /// Limits of `max_open` connections and `per_second` new ones per address (0: none);
    /// loopback addresses count against nothing when `exempt_loopback`.
    pub fn new(max_open: u32, per_second: u32, exempt_loopback: bool) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(ClientTable::new(max_open, per_second)))
                .collect(),
            off: max_open == 0 && per_second == 0,
            exempt_loopback,
        })
    }

    fn shard(&self, key: ClientKey) -> &Mutex<ClientTable> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Admits a connection from `ip` at `now_ms`, or says why not. `None` for `ip`: the
    /// address is unknown (not a TCP peer), and nothing is counted.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>, now_ms: u64) -> Result<ClientSlot, Refused> {
        let exempt = |ip: &IpAddr| self.exempt_loopback && ip.to_canonical().is_loopback();
        let Some(ip) = ip.filter(|ip| !self.off && !exempt(ip)) else {
            return Ok(ClientSlot::free());
        };
        let key = ClientKey::from(ip);
        let mut table = match self.shard(key).lock() {
            Ok(table) => table,
            // A panic while holding the lock cannot leave the counts torn (each update is
            // one field write); keep serving.
            Err(poisoned) => poisoned.into_inner(),
        };
        table.admit(key, now_ms)?;
        Ok(ClientSlot {
            held: Some((Arc::clone(self), key)),
        })
    }

    fn release(&self, key: ClientKey) {
        let mut table = match self.shard(key).lock() {
            Ok(table) => table,
            Err(poisoned) => poisoned.into_inner(),
        };
        table.release(key);
    }
}

/// A connection's place under its address's limit, given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    held: Option<(Arc<ClientLimits>, ClientKey)>,
}

impl ClientSlot {
    /// A slot that counts against nothing (limits off, address unknown, tests).
    pub fn free() -> Self {
        Self { held: None }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((limits, key)) = self.held.take() {
            limits.release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> ClientKey {
        ClientKey::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn open_connections_are_capped_and_a_close_frees_a_place() {
        let mut t = ClientTable::new(2, 0);
        let a = key("192.0.2.1");
        assert_eq!(t.admit(a, 0), Ok(()));
        assert_eq!(t.admit(a, 0), Ok(()));
        assert_eq!(t.admit(a, 0), Err(Refused::Connections));
        assert_eq!(t.admit(key("192.0.2.2"), 0), Ok(()), "another client");
        t.release(a);
        assert_eq!(t.admit(a, 0), Ok(()));
    }

    #[test]
    fn new_connections_per_second_are_capped_with_a_burst() {
        let mut t = ClientTable::new(0, 3);
        let a = key("2001:db8::1");
        for _ in 0..3 {
            assert_eq!(t.admit(a, 1000), Ok(()));
        }
        assert_eq!(t.admit(a, 1000), Err(Refused::Handshakes));
        assert_eq!(
            t.admit(key("2001:db8::2"), 1000),
            Err(Refused::Handshakes),
            "same /64"
        );
        // A third of a second later one more is allowed, and then none.
        assert_eq!(t.admit(a, 1334), Ok(()));
        assert_eq!(t.admit(a, 1334), Err(Refused::Handshakes));
        // A refused attempt costs nothing: a second later the burst is back.
        assert_eq!(t.admit(a, 2334), Ok(()));
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let mut t = ClientTable::new(10, 10);
        for i in 0..SWEEP_EVERY {
            let ip = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            t.admit(ClientKey::from(ip), 0).unwrap();
            t.release(ClientKey::from(ip));
        }
        // Swept once their buckets have refilled (a second later).
        t.admit(key("192.0.2.1"), 5000).unwrap();
        for _ in 0..SWEEP_EVERY {
            t.admit(key("192.0.2.1"), 5000).ok();
        }
        assert!(t.len() <= 2, "{}", t.len());
    }

    #[test]
    fn slots_give_their_place_back_when_dropped() {
        let limits = ClientLimits::new(1, 0, false);
        let ip = Some("192.0.2.1".parse().unwrap());
        let slot = limits.admit(ip, 0).unwrap();
        assert_eq!(limits.admit(ip, 0).unwrap_err(), Refused::Connections);
        drop(slot);
        let _again = limits.admit(ip, 0).unwrap();
        // Unknown addresses and limits off count nothing.
        let _free = limits.admit(None, 0).unwrap();
        let off = ClientLimits::new(0, 0, false);
        let _a = off.admit(ip, 0).unwrap();
        let _b = off.admit(ip, 0).unwrap();
    }

    #[test]
    fn loopback_is_exempt_when_asked() {
        let limits = ClientLimits::new(1, 0, true);
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip = Some(ip.parse().unwrap());
            let _a = limits.admit(ip, 0).unwrap();
            let _b = limits.admit(ip, 0).unwrap();
        }
        let other = Some("192.0.2.1".parse().unwrap());
        let _c = limits.admit(other, 0).unwrap();
        assert!(limits.admit(other, 0).is_err());
        let strict = ClientLimits::new(1, 0, false);
        let _d = strict.admit(Some("127.0.0.1".parse().unwrap()), 0).unwrap();
        assert!(strict.admit(Some("127.0.0.1".parse().unwrap()), 0).is_err());
    }

    /// What happens to one address: connections opened and closed over time.
    #[derive(Debug, Clone)]
    enum Op {
        Open { after_ms: u64 },
        Close,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..400).prop_map(|after_ms| Op::Open { after_ms }),
            Just(Op::Close),
        ]
    }

    proptest! {
        /// For any sequence of opens and closes: never more than `max_open` open at once,
        /// never more admitted in any one-second window than the burst plus the refill of that
        /// second, and an address under both limits is always admitted.
        #[test]
        fn the_limits_hold_for_any_schedule(
            max_open in 1u32..8,
            per_second in 1u32..8,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut t = ClientTable::new(max_open, per_second);
            let a = key("198.51.100.1");
            let (mut now, mut open) = (0u64, 0u32);
            let mut admitted_at: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Open { after_ms } => {
                        now += after_ms;
                        let in_last_second = admitted_at.iter().filter(|&&t| now - t < 1000).count() as u32;
                        match t.admit(a, now) {
                            Ok(()) => {
                                open += 1;
                                admitted_at.push(now);
                                prop_assert!(open <= max_open);
                                // Burst plus a second's refill at most.
                                prop_assert!(in_last_second < 2 * per_second);
                            }
                            Err(Refused::Connections) => prop_assert_eq!(open, max_open),
                            Err(Refused::Handshakes) => {
                                // Only when the last second used up a whole bucket's worth.
                                prop_assert!(in_last_second >= 1, "refused with nothing recent");
                            }
                        }
                    }
                    Op::Close if open > 0 => {
                        open -= 1;
                        t.release(a);
                    }
                    Op::Close => {}
                }
            }
        }
    }
}
