//! An RFC 8441 client: WebSockets as extended-CONNECT streams of one h2 connection, each
//! one a `WebSocketStream` like an HTTP/1.1 upgrade's (tests and the `--h2` loads use it).

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes};
use h2::{client::SendRequest, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::{
    tungstenite::protocol::{Role, WebSocketConfig},
    WebSocketStream,
};

/// A WebSocket over one h2 stream.
pub type H2Ws = WebSocketStream<H2Io>;

/// Why an extended CONNECT did not give a WebSocket.
#[derive(Debug, thiserror::Error)]
pub enum H2WsError {
    /// The h2 connection or stream failed.
    #[error("h2: {0}")]
    H2(#[from] h2::Error),
    /// The server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL.
    #[error("the server does not accept extended CONNECT")]
    NotEnabled,
    /// The server answered with this status instead of 200.
    #[error("answered {0}")]
    Status(u16),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

/// The h2 handshake over `io` (TLS with ALPN h2 already done); the connection runs as a task.
pub async fn connect<T>(io: T) -> Result<SendRequest<Bytes>, H2WsError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, mut conn) = h2::client::handshake(io).await?;
    let ping = conn.ping_pong();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "h2 connection ended");
        }
    });
    // The server's SETTINGS come before its answer to a PING: once the pong is back, whether
    // it enabled extended CONNECT is known.
    if let Some(mut ping) = ping {
        ping.ping(h2::Ping::opaque()).await?;
    }
    let client = client.ready().await?;
    Ok(client)
}

/// Opens a WebSocket to `https://{authority}{path}` on `client`'s connection.
pub async fn open(
    client: &SendRequest<Bytes>,
    authority: &str,
    path: &str,
) -> Result<H2Ws, H2WsError> {
    open_with_config(client, authority, path, None).await
}

/// [`open`] with the WebSocket configuration `config`.
pub async fn open_with_config(
    client: &SendRequest<Bytes>,
    authority: &str,
    path: &str,
    config: Option<WebSocketConfig>,
) -> Result<H2Ws, H2WsError> {
    let mut client = client.clone().ready().await?;
    if !client.is_extended_connect_protocol_enabled() {
        return Err(H2WsError::NotEnabled);
    }
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{authority}{path}"))
        .header("sec-websocket-version", "13")
        .body(())?;
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (resp, send) = client.send_request(req, false)?;
    let resp = resp.await?;
    if resp.status() != http::StatusCode::OK {
        return Err(H2WsError::Status(resp.status().as_u16()));
    }
    let io = H2Io {
        send,
        recv: resp.into_body(),
        pending: Bytes::new(),
        read_done: false,
    };
    Ok(WebSocketStream::from_raw_socket(io, Role::Client, config).await)
}

/// One extended-CONNECT stream as bytes: DATA in, DATA out, END_STREAM as EOF.
pub struct H2Io {
    send: SendStream<Bytes>,
    recv: RecvStream,
    pending: Bytes,
    read_done: bool,
}

fn to_io(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() && !this.read_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    this.recv
                        .flow_control()
                        .release_capacity(data.len())
                        .map_err(to_io)?;
                    this.pending = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                None => this.read_done = true,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len().min(16 * 1024));
        loop {
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    this.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(to_io)?;
                    return Poll::Ready(Ok(n));
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Already ended (or reset): nothing more to say.
        let _ended = this.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

/// A fixed number of shared h2 connections, each dialed on first use and again after it
/// broke; WebSockets are spread over them in turn (a browser keeps one per origin).
pub struct H2Pool {
    slots: Vec<tokio::sync::Mutex<Option<SendRequest<Bytes>>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl H2Pool {
    /// A pool of `connections` (at least one).
    pub fn new(connections: usize) -> Self {
        Self {
            slots: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The next connection's slot: `None` inside until someone dials it.
    pub fn slot(&self) -> &tokio::sync::Mutex<Option<SendRequest<Bytes>>> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.slots[i % self.slots.len()]
    }
}
