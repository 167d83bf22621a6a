//! Kept-alive connections to nodes, per thread.
//!
//! pingora's pool spawns a task per returned connection to watch it while idle; for a
//! request that takes microseconds that watch costs more than the request. Here an idle
//! connection just sits in a per-thread list (no lock, no task) and is checked when taken:
//! too old, or (after a second of idleness) readable — the node closed it or sent stray
//! bytes — and it is dropped. A
//! connection the node closed in between anyway fails before any response byte, and the
//! caller retries such a request once on a fresh connection.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

/// Connections idle for longer are probed (one `recv`) before use; fresher ones are trusted,
/// and the rare one that a node closed within this window costs a retry instead of a
/// syscall on every request.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// Idle connections kept per node and thread.
const PER_NODE: usize = 128;

/// Returns between two sweeps of a thread's pool.
const SWEEP_EVERY: u64 = 1024;

thread_local! {
    static PUTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static IDLE: RefCell<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>> =
        RefCell::new(HashMap::new());
}

/// Takes an idle connection to `addr` that is still usable, if this thread has one.
pub fn take(addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
    let now = Instant::now();
    IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        // Most recently used first: the one least likely to have been closed by the node.
        while let Some((stream, since)) = list.pop() {
            let age = now.duration_since(since);
            if age < max_idle && (age < PROBE_AFTER || quiet(&stream)) {
                return Some(stream);
            }
        }
        None
    })
    .ok()
    .flatten()
}

/// Returns a connection after a complete exchange (and now and then drops this thread's
/// connections idle past `max_idle`, so nodes that went away do not keep descriptors open).
pub fn put(addr: SocketAddr, stream: TcpStream, max_idle: Duration) {
    let now = Instant::now();
    let sweep_now = PUTS.try_with(|n| {
        let puts = n.get().wrapping_add(1);
        n.set(puts);
        puts % SWEEP_EVERY == 0
    });
    if sweep_now == Ok(true) {
        sweep(max_idle);
    }
    let _kept_or_dropped = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= PER_NODE {
            // Drop the oldest, keep the fresh one.
            list.remove(0);
        }
        list.push((stream, now));
    });
}

/// Drops this thread's connections idle for `max_idle` or longer.
fn sweep(max_idle: Duration) {
    let now = Instant::now();
    let _swept = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|(_, since)| now.duration_since(*since) < max_idle);
            !list.is_empty()
        });
    });
}

/// A pooled connection must have nothing to read: readable means closed by the node (EOF)
/// or out of step with it (bytes nobody asked for).
fn quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test(flavor = "current_thread")]
    async fn connections_closed_or_too_old_are_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let a = TcpStream::connect(addr).await.unwrap();
        let (mut a_peer, _) = listener.accept().await.unwrap();
        let b = TcpStream::connect(addr).await.unwrap();
        let (b_peer, _) = listener.accept().await.unwrap();
        put(addr, a, MINUTE);
        put(addr, b, MINUTE);
        // b (the most recent) was closed by its node; a got stray bytes: neither is usable.
        drop(b_peer);
        a_peer.write_all(b"x").await.unwrap();
        tokio::time::sleep(PROBE_AFTER + Duration::from_millis(50)).await;
        assert!(take(addr, Duration::from_secs(60)).is_none());

        let c = TcpStream::connect(addr).await.unwrap();
        let (_c_peer, _) = listener.accept().await.unwrap();
        put(addr, c, MINUTE);
        assert!(
            take(addr, Duration::ZERO).is_none(),
            "older than the idle limit"
        );
        let d = TcpStream::connect(addr).await.unwrap();
        let (_d_peer, _) = listener.accept().await.unwrap();
        put(addr, d, MINUTE);
        assert!(take(addr, Duration::from_secs(60)).is_some());
        assert!(take(addr, Duration::from_secs(60)).is_none(), "taken once");
    }
}
