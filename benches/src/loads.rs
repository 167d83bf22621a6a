//! The load generators and what they share: opening a WebSocket through a [`Target`], one echo
//! round trip, a clean close, and the limits that bound every loop.

pub mod connect;
pub mod echo;
pub mod http;
pub mod idle;
pub mod rate;
pub mod storm;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::h2ws::{self, H2Io, H2WsError};
use crate::target::{DialError, Stream, Target};

/// A client WebSocket over a plain or TLS stream, or over an h2 stream (RFC 8441).
pub type WsClient = WebSocketStream<WsIo>;

/// What a client WebSocket runs over.
pub enum WsIo {
    /// Its own connection (HTTP/1.1 upgrade).
    Direct(Stream),
    /// A stream of a shared h2 connection (extended CONNECT).
    H2(H2Io),
}

impl WsIo {
    /// Whether its TLS session was resumed (a stream of a shared h2 connection: never, it
    /// made no handshake of its own).
    pub fn resumed(&self) -> bool {
        match self {
            WsIo::Direct(s) => s.resumed(),
            WsIo::H2(_) => false,
        }
    }
}

macro_rules! each_io {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            WsIo::Direct($s) => $e,
            WsIo::H2($s) => $e,
        }
    };
}

impl tokio::io::AsyncRead for WsIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        each_io!(self, s => std::pin::Pin::new(s).poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for WsIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        each_io!(self, s => std::pin::Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        each_io!(self, s => std::pin::Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        each_io!(self, s => std::pin::Pin::new(s).poll_shutdown(cx))
    }
}

/// Bounds every load obeys, so a run always ends by itself.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole run stops starting new work after this long.
    pub timeout: Duration,
    /// One operation (connect, echo, request, close) fails as `timeout` after this long.
    pub op_timeout: Duration,
}

impl Limits {
    /// The instant after which no new work starts.
    pub fn deadline(&self, start: Instant) -> Instant {
        start + self.timeout
    }
}

pub use crate::report::Failure;

/// Where in a connection's life a WebSocket error happened.
#[derive(Clone, Copy)]
enum Phase {
    Upgrade,
    Echo,
}

/// Classifies a tungstenite error: resets and EOFs apart from protocol errors, and upgrade
/// failures apart from failures of an established WebSocket.
fn ws_failure(phase: Phase, e: &WsError) -> Failure {
    use std::io::ErrorKind as Io;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    // (kind during the upgrade, kind on an established WebSocket)
    let (upgrading, established) = match e {
        WsError::Http(resp) => match resp.status().as_u16() {
            400..=499 => ("upgrade_4xx", "upgrade_4xx"),
            500..=599 => ("upgrade_5xx", "upgrade_5xx"),
            _ => ("upgrade_status", "upgrade_status"),
        },
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ("upgrade_reset", "reset")
        }
        WsError::Io(io) if io.kind() == Io::ConnectionReset => ("upgrade_reset", "reset"),
        WsError::Io(io) if io.kind() == Io::UnexpectedEof => ("upgrade_eof", "eof"),
        WsError::Io(_) => ("upgrade_io", "io"),
        WsError::ConnectionClosed | WsError::AlreadyClosed => ("closed", "closed"),
        WsError::Protocol(_) | WsError::HttpFormat(_) | WsError::Url(_) => {
            ("upgrade_protocol", "protocol")
        }
        _ => ("ws", "ws"),
    };
    let kind = match phase {
        Phase::Upgrade => upgrading,
        Phase::Echo => established,
    };
    Failure::new(kind, e)
}

/// The failure of a dial, by layer.
pub fn dial_failure(e: &DialError) -> Failure {
    match e {
        DialError::Connect(io) => Failure::new("connect", io),
        DialError::Tls(io) => Failure::new("tls", io),
    }
}

/// Small client buffers: thousands of idle clients share the machine with the proxy measured.
fn client_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Dials `target` (with `--spread`, as the next of its deployments) and performs the
/// WebSocket upgrade (or, with `--h2`, opens an extended CONNECT stream on one of the shared
/// h2 connections), within `op_timeout`.
pub async fn open_ws(target: &Target, op_timeout: Duration) -> Result<WsClient, Failure> {
    open_ws_with_query(target, None, op_timeout).await
}

/// [`open_ws`] with `query` (`room=r1`) added to the target's URL and path.
pub async fn open_ws_with_query(
    target: &Target,
    query: Option<&str>,
    op_timeout: Duration,
) -> Result<WsClient, Failure> {
    let with_query = |base: &str| match query {
        None => base.to_owned(),
        Some(q) if base.contains('?') => format!("{base}&{q}"),
        Some(q) => format!("{base}?{q}"),
    };
    let attempt = async {
        if let Some(pool) = target.h2() {
            return open_h2(target, pool, &with_query(&target.path_with_key())).await;
        }
        // With --spread, this connection's deployment: its hostname as SNI and in the URL.
        let host = target.next_host();
        let stream = target
            .dial_as(host.as_deref())
            .await
            .map_err(|e| dial_failure(&e))?;
        let url = match &host {
            None => with_query(&target.url),
            Some(h) => with_query(&target.url_for(h)),
        };
        let mut req = url
            .into_client_request()
            .map_err(|e| ws_failure(Phase::Upgrade, &e))?;
        if let Some(auth) = target.basic_auth() {
            let value = auth
                .parse()
                .map_err(|_| Failure::new("upgrade", "server key is not a header value"))?;
            req.headers_mut().insert("authorization", value);
        }
        let (ws, _resp) = tokio_tungstenite::client_async_with_config(
            req,
            WsIo::Direct(stream),
            Some(client_ws_config()),
        )
        .await
        .map_err(|e| ws_failure(Phase::Upgrade, &e))?;
        Ok(ws)
    };
    tokio::time::timeout(op_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// An RFC 8441 WebSocket on the next shared h2 connection (dialed first if it is not open).
async fn open_h2(target: &Target, pool: &h2ws::H2Pool, path: &str) -> Result<WsClient, Failure> {
    let slot = pool.slot();
    let client = {
        let mut open = slot.lock().await;
        match open.as_ref() {
            Some(c) => c.clone(),
            None => {
                let stream = target.dial().await.map_err(|e| dial_failure(&e))?;
                let c = h2ws::connect(stream)
                    .await
                    .map_err(|e| Failure::new("h2_connect", e))?;
                *open = Some(c.clone());
                c
            }
        }
    };
    match h2ws::open_with_config(&client, &target.host, path, Some(client_ws_config())).await {
        Ok(ws) => {
            let (io, role, config) = (ws.into_inner(), Role::Client, client_ws_config());
            Ok(WebSocketStream::from_raw_socket(WsIo::H2(io), role, Some(config)).await)
        }
        Err(H2WsError::Status(s)) if (400..500).contains(&s) => Err(Failure::new("upgrade_4xx", s)),
        Err(H2WsError::Status(s)) => Err(Failure::new("upgrade_5xx", s)),
        Err(e) => {
            // The shared connection broke: the next user dials a fresh one.
            *slot.lock().await = None;
            Err(Failure::new("h2", e))
        }
    }
}

/// Sends `msg` and waits for the same message back (pings and pongs skipped).
pub async fn echo_once(
    ws: &mut WsClient,
    msg: Message,
    op_timeout: Duration,
) -> Result<(), Failure> {
    let round_trip = async {
        ws.send(msg.clone())
            .await
            .map_err(|e| ws_failure(Phase::Echo, &e))?;
        loop {
            match ws.next().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    return if m == msg {
                        Ok(())
                    } else {
                        Err("echo_mismatch".into())
                    };
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Err("closed".into()),
                Some(Err(e)) => return Err(ws_failure(Phase::Echo, &e)),
            }
        }
    };
    tokio::time::timeout(op_timeout, round_trip)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// Sends a close frame and waits (bounded) for the peer's close. Only a peer that never
/// answers counts as a failure: once our close is out, a reset or an EOF without TLS
/// close_notify is an ordinary end.
pub async fn close_ws(mut ws: WsClient, op_timeout: Duration) -> Result<(), Failure> {
    let closing = async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    tokio::time::timeout(op_timeout, closing)
        .await
        .map_err(|_| "close_timeout".into())
}

/// A binary payload of `size` bytes with recognisable content.
pub fn payload(size: usize) -> Message {
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    Message::binary(data)
}

/// Messages/operations per second, 0 when no time passed.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}
