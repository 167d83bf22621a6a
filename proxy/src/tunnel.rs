//! WebSocket (HTTP/1.1 upgrade) tunnels.
//!
//! pingora 0.9.1 can tear an upgraded connection down right after the `101` when the node
//! answers before pingora has consumed the upgrade request's empty body (upstream issue
//! #946: the client sees `101` then EOF). Game clients live on WebSockets, so kanmon proxies
//! upgrades itself (the HTTP/1.1 lane, `h1`, hands them here): connect to the picked node,
//! forward the request head, relay the node's response head, then copy bytes both ways with
//! small buffers until either side closes or the idle limit passes. This also keeps an idle
//! proxied WebSocket small (a 512-byte buffer, instead of pingora's two 64 KiB body buffers)
//! and puts the idle policy in our hands.

use std::{net::SocketAddr, time::Duration};

use std::future::Future;

use kanmon_router::ConnectionGuard;

use crate::{
    bufpool::Lent,
    h1::{
        head::{self, Framing},
        write::{write_within, WriteFail},
    },
    node_series,
    routing::Routes,
    wsframe::{FrameBoundary, CLOSE_GOING_AWAY},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::{sleep_until, timeout, Instant},
};

/// Client → node read buffer, kept for the tunnel's life (game input is small; 512 rather
/// than 1024 bytes brought an idle proxied WebSocket from 16.4 to 15.8 KiB).
const CLIENT_BUF: usize = 512;
/// Largest response head accepted from a node.
const MAX_HEAD: usize = 16 * 1024;
/// After one side closed, how long the other may still flush.
const LINGER: Duration = Duration::from_secs(5);

/// Why a tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Connecting to the node failed or timed out (before any byte was sent: retryable).
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The node address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The node broke the exchange of heads.
    #[error("node {addr}: {reason}")]
    Upstream {
        /// The node address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
}

/// Connects to a node within `limit`.
pub async fn connect(addr: SocketAddr, limit: Duration) -> Result<TcpStream, TunnelError> {
    let fail = |reason: String| TunnelError::Connect { addr, reason };
    let stream = timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| fail(format!("timed out after {limit:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    Ok(stream)
}

/// Connects to the node `guard` picked; when that fails, counts it, ejects the node and (once
/// per request, `retried`) moves `guard` to another ready node and tries that one (the
/// routing policy's rule, [`Routes::connect_failed`]). `None`: no node could be reached.
pub async fn connect_picked(
    routes: &Routes,
    guard: &mut Option<ConnectionGuard>,
    retried: &mut bool,
) -> Option<(TcpStream, SocketAddr)> {
    let limit = routes.settings().connect_timeout;
    loop {
        let addr = guard.as_ref().map(ConnectionGuard::addr)?;
        match connect(addr, limit).await {
            Ok(node) => return Some((node, addr)),
            Err(e) => {
                if !routes.connect_failed(guard, retried, &e) {
                    return None;
                }
            }
        }
    }
}

/// A node's response head: its status, and every byte read so far (head plus whatever
/// followed it, which belongs to the client too).
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Bytes of the head and anything read after it.
    pub bytes: Vec<u8>,
    /// Where the body (or tunnel data) starts in `bytes`.
    pub head_len: usize,
    /// How many body bytes follow the head, when its framing says (`None`: until the node
    /// closes).
    pub content_length: Option<usize>,
}

/// Sends an upgrade request to the node and reads its answer's head: the one exchange both
/// the HTTP/1.1 upgrade and the RFC 8441 path make, with the same write and response deadlines.
pub async fn upgrade_at_node(
    node: &mut TcpStream,
    addr: SocketAddr,
    request: &[u8],
    write_limit: Duration,
    response_limit: Duration,
) -> Result<ResponseHead, TunnelError> {
    write_within(node, request, write_limit)
        .await
        .map_err(|e| TunnelError::Upstream {
            addr,
            reason: e.to_string(),
        })?;
    read_response_head(node, addr, response_limit).await
}

/// Reads the node's response head.
pub async fn read_response_head(
    node: &mut TcpStream,
    addr: SocketAddr,
    limit: Duration,
) -> Result<ResponseHead, TunnelError> {
    let fail = |reason: String| TunnelError::Upstream { addr, reason };
    let mut bytes = Vec::with_capacity(1024);
    let read = async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = node
                .read(&mut chunk)
                .await
                .map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                return Err(fail("closed before a response".into()));
            }
            bytes.extend_from_slice(&chunk[..n]);
            // The same parser and framing rules as every other response (`h1::head`).
            match head::parse_response(&bytes, false, MAX_HEAD) {
                Ok(Some(h)) => {
                    let content_length = match h.body {
                        Framing::Empty => Some(0),
                        Framing::Length(n) => usize::try_from(n).ok(),
                        Framing::Chunked | Framing::UntilClose => None,
                    };
                    return Ok((h.status, h.len, content_length));
                }
                Ok(None) => continue,
                Err(e) => return Err(fail(e.to_string())),
            }
        }
    };
    let (status, head_len, content_length) = timeout(limit, read)
        .await
        .map_err(|_| fail(format!("no response head within {limit:?}")))??;
    Ok(ResponseHead {
        status,
        bytes,
        head_len,
        content_length,
    })
}

/// The time limits of a tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// No traffic either way for this long ends it.
    pub idle: Duration,
    /// One write to either side may take this long (`limits.write_timeout`): a side that
    /// stops reading cannot hold the other, the node connection and the slot forever.
    pub write: Duration,
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The proxy is shutting down: the client got a Close frame (1001) between two frames.
    GoingAway,
    /// One side closed and the other finished.
    Closed,
    /// No traffic either way for the idle limit.
    Idle,
    /// A read or write failed (a reset, usually the client going away).
    Error,
    /// The client read nothing of a write for the write limit.
    ClientStalled,
    /// The node read nothing of a write for the write limit.
    NodeStalled,
}

/// The end a failed write gives the tunnel.
fn write_end(fail: WriteFail, stalled: TunnelEnd) -> TunnelEnd {
    match fail {
        WriteFail::Closed(_) => TunnelEnd::Error,
        WriteFail::TimedOut => stalled,
    }
}

/// A WebSocket's life once both handshakes are done, the same for an HTTP/1.1 upgrade and an
/// RFC 8441 stream: counted in its node's WebSocket gauge while it lasts, relayed under the
/// idle and write limits and the shutdown rule ([`relay`]), its node's series removed when it
/// was the last one of a node that left, a side that stopped reading counted as cut.
pub async fn websocket<C>(
    routes: &Routes,
    guard: &ConnectionGuard,
    client: C,
    node: TcpStream,
    frames: FrameBoundary,
    going_away: watch::Receiver<bool>,
) -> TunnelEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = routes.metrics();
    let dep = guard.deployment();
    let gauge = metrics.websockets.with_label_values(&[
        dep.instance().as_str(),
        dep.zone().as_str(),
        guard.node().id(),
    ]);
    let settings = routes.settings();
    let limits = Limits {
        idle: settings.websocket_idle_timeout,
        write: settings.write_timeout,
    };
    gauge.inc();
    let end = relay(client, node, limits, frames, going_away).await;
    gauge.dec();
    node_series::websocket_closed(metrics, routes.table(), dep, guard.node().id(), &gauge);
    tracing::debug!(?end, node = guard.node().id(), "websocket ended");
    let stalled = match end {
        TunnelEnd::ClientStalled => Some("client_write_timeout"),
        TunnelEnd::NodeStalled => Some("node_write_timeout"),
        _ => None,
    };
    if let Some(reason) = stalled {
        metrics.cut_connections.with_label_values(&[reason]).inc();
    }
    end
}

/// Copies bytes both ways until both sides are done, an error, `limits.idle` without
/// traffic, or a write that takes longer than `limits.write`.
///
/// Memory per idle tunnel is what matters for thousands of idle game clients, so neither
/// direction keeps a large buffer: client → node reads into a small buffer inside the task
/// (game input is small; rustls has already decrypted whole records, so a small buffer costs
/// no extra syscalls), and node → client waits for readiness and only then borrows a
/// buffer for the read, released as soon as the bytes are written.
pub async fn relay<C>(
    client: C,
    node: TcpStream,
    limits: Limits,
    mut frames: FrameBoundary,
    mut going_away: watch::Receiver<bool>,
) -> TunnelEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut nr, mut nw) = node.into_split();
    let mut cbuf = [0u8; CLIENT_BUF];
    let (mut client_open, mut node_open) = (true, true);
    // Shutdown: `closing` once asked to go away, `close_sent` once the Close frame is out
    // (after which nothing more from the node may follow it).
    let (mut closing, mut close_sent) = (false, false);
    // One timer for the tunnel's life, re-armed only when it fires: arming a fresh timer
    // per message costs a timer-wheel insert and removal on every frame.
    let mut idle = IdleClock::new(limits.idle);
    let to_client = limits.write;
    let to_node = limits.write;
    let timer = sleep_until(idle.next_wake(Instant::now()));
    tokio::pin!(timer);
    // One registration with the shutdown signal for the tunnel's life, likewise.
    let asked_to_go = async {
        while going_away.changed().await.is_ok() {
            if *going_away.borrow() {
                return;
            }
        }
        // Nobody can ask any more.
        std::future::pending::<()>().await;
    };
    tokio::pin!(asked_to_go);
    while client_open || (node_open && !close_sent) {
        if closing && !close_sent && frames.at_boundary() {
            if let Err(e) = write_within(&mut cw, &CLOSE_GOING_AWAY, to_client).await {
                return write_end(e, TunnelEnd::ClientStalled);
            }
            close_sent = true;
            // The client answers with its own Close frame (forwarded) and hangs up.
            timer.as_mut().reset(idle.linger(Instant::now()));
            continue;
        }
        tokio::select! {
            r = cr.read(&mut cbuf), if client_open => match r {
                Ok(0) => {
                    client_open = false;
                    match timeout(to_node, nw.shutdown()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return TunnelEnd::Error,
                        Err(_) => return TunnelEnd::NodeStalled,
                    }
                    timer.as_mut().reset(idle.linger(Instant::now()));
                }
                Ok(n) => {
                    if let Err(e) = write_within(&mut nw, &cbuf[..n], to_node).await {
                        return write_end(e, TunnelEnd::NodeStalled);
                    }
                    idle.active();
                }
                Err(_) => return TunnelEnd::Error,
            },
            r = nr.readable(), if node_open && !close_sent => {
                if r.is_err() {
                    return TunnelEnd::Error;
                }
                let mut buf = Lent::take();
                match read_ready(&mut nr, &mut buf).await {
                    Ok(Some(0)) => {
                        node_open = false;
                        match timeout(to_client, cw.shutdown()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return TunnelEnd::Error,
                            Err(_) => return TunnelEnd::ClientStalled,
                        }
                        timer.as_mut().reset(idle.linger(Instant::now()));
                    }
                    Ok(Some(n)) => {
                        // The client stream is buffered (pingora's L4 writer, then TLS): flush
                        // every chunk, or small WebSocket frames would sit in the buffer.
                        let bytes = &buf[..n];
                        if let Err(e) = write_within(&mut cw, bytes, to_client).await {
                            return write_end(e, TunnelEnd::ClientStalled);
                        }
                        frames.feed(bytes);
                        idle.active();
                    }
                    // Readiness can be spurious.
                    Ok(None) => {}
                    Err(_) => return TunnelEnd::Error,
                }
            },
            () = &mut asked_to_go, if !closing => closing = true,
            () = &mut timer => {
                let now = Instant::now();
                if idle.expired(now) {
                    return if close_sent { TunnelEnd::GoingAway } else { TunnelEnd::Idle };
                }
                timer.as_mut().reset(idle.next_wake(now));
            }
        }
    }
    if close_sent {
        TunnelEnd::GoingAway
    } else {
        TunnelEnd::Closed
    }
}

/// Reads what a readable socket holds without waiting: `None` when the readiness was spurious.
/// A read through `AsyncRead` (unlike `try_read`) clears the readiness after a short read, so
/// the next wait costs no `recv` that can only answer EAGAIN — one syscall fewer per message.
async fn read_ready(
    node: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    std::future::poll_fn(|cx| {
        let read = node.read_buf(&mut *buf);
        tokio::pin!(read);
        match read.poll(cx) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(r.map(Some)),
            std::task::Poll::Pending => std::task::Poll::Ready(Ok(None)),
        }
    })
    .await
}

/// The tunnel's idle limit, kept with one coarse timer: the timer wakes every quarter of the
/// limit, traffic in between only sets a flag, and the tunnel is idle after four quiet
/// wake-ups in a row — so it ends between `limit` and 1.25 × `limit` after its last byte.
/// Once one side has closed (or the Close frame went out) a hard deadline `LINGER` away
/// applies as well.
#[derive(Debug)]
struct IdleClock {
    tick: Duration,
    quiet_ticks: u32,
    active: bool,
    hard_deadline: Option<Instant>,
}

/// Quiet wake-ups in a row that make a tunnel idle.
const QUIET_TICKS: u32 = 4;

impl IdleClock {
    fn new(limit: Duration) -> Self {
        Self {
            tick: (limit / QUIET_TICKS).max(Duration::from_millis(1)),
            quiet_ticks: 0,
            active: false,
            hard_deadline: None,
        }
    }

    /// Bytes moved: the tunnel is not idle.
    fn active(&mut self) {
        self.active = true;
    }

    /// When the timer should wake next.
    fn next_wake(&self, now: Instant) -> Instant {
        let tick = now + self.tick;
        self.hard_deadline.map_or(tick, |d| d.min(tick))
    }

    /// One side closed: the other has `LINGER` to finish. Returns the next wake-up.
    fn linger(&mut self, now: Instant) -> Instant {
        let d = now + LINGER;
        self.hard_deadline = Some(self.hard_deadline.map_or(d, |h| h.min(d)));
        self.next_wake(now)
    }

    /// The timer fired: whether the tunnel is over.
    fn expired(&mut self, now: Instant) -> bool {
        if self.hard_deadline.is_some_and(|d| now >= d) {
            return true;
        }
        if std::mem::take(&mut self.active) {
            self.quiet_ticks = 0;
        } else {
            self.quiet_ticks += 1;
        }
        self.quiet_ticks >= QUIET_TICKS
    }
}

/// Relays a non-101 answer to the client: the rest of a `Content-Length` body, or
/// everything until the node closes; the whole of it, writes to the client included, bounded
/// by `limit`.
pub async fn relay_refusal<C>(
    client: &mut C,
    node: &mut TcpStream,
    head: &ResponseHead,
    limit: Duration,
) -> std::io::Result<()>
where
    C: AsyncWrite + Unpin,
{
    let already = head.bytes.len() - head.head_len;
    let relay = async {
        client.write_all(&head.bytes).await?;
        client.flush().await?;
        match head.content_length {
            Some(len) if len <= already => {}
            Some(len) => {
                tokio::io::copy(&mut node.take((len - already) as u64), client).await?;
            }
            None => {
                tokio::io::copy(node, client).await?;
            }
        }
        client.flush().await?;
        client.shutdown().await
    };
    match timeout(limit, relay).await {
        Ok(r) => r,
        // Too slow on either side: the answer is cut where it stands.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
#[path = "tunnel_tests.rs"]
mod tests;
