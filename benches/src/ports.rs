//! Free loopback ports for processes that bind by number (a proxy started from a config file).
//!
//! "Bind port 0, read the port, release it" races with everything else on the machine that
//! binds port 0 or connects out: the kernel hands those ports from its ephemeral range, so a
//! demo node started by a parallel test can take the port before the proxy binds it (seen in
//! CI: the client then spoke TLS to a node). Ports below the ephemeral range are never handed
//! out that way, so choosing there leaves only explicit binds to collide with, and the check
//! bind below turns those away.

use std::net::{SocketAddr, TcpListener};

/// The lowest port considered.
const FLOOR: u16 = 10_000;

/// A loopback address whose port is free now and outside the kernel's ephemeral range (when
/// the range leaves room below it; otherwise any free port).
pub fn free_loopback_port() -> SocketAddr {
    let (ephemeral_low, _) = ephemeral_range();
    if ephemeral_low > FLOOR + 1_000 {
        let span = u32::from(ephemeral_low - FLOOR);
        let start = random_u32() % span;
        // Bounded: at most one try per candidate port.
        for i in 0..span {
            let port = FLOOR + ((start + i) % span) as u16;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                if let Ok(addr) = l.local_addr() {
                    return addr;
                }
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address of a bound socket")
}

/// `/proc/sys/net/ipv4/ip_local_port_range`, or Linux's default when unreadable.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999))
}

/// A random start, so parallel test processes do not walk the same ports in the same order.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_loopback_and_below_the_ephemeral_range() {
        let (low, _) = ephemeral_range();
        for _ in 0..20 {
            let addr = free_loopback_port();
            assert!(addr.ip().is_loopback());
            if low > FLOOR + 1_000 {
                assert!((FLOOR..low).contains(&addr.port()), "{addr}");
            }
            // Free: binding it works.
            TcpListener::bind(addr).unwrap();
        }
    }
}
