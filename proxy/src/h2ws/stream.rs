//! An RFC 8441 WebSocket stream as a byte stream, so the one tunnel (`tunnel::relay`) serves
//! it like an upgraded HTTP/1.1 connection.
//!
//! Flow control is what bounds memory: the client's DATA is taken from h2 (and its window
//! opened again) only when the tunnel asks for more, which it does after the previous bytes
//! went to the node, so a slow node holds at most one window per stream. Towards the client,
//! bytes are sent only as far as the peer granted window: a client that stops reading stops
//! the tunnel's writes (cut after `limits.write_timeout`), it never makes the edge queue data.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes};
use h2::SendStream;
use pingora::protocols::http::v2::server::HttpSession;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest chunk asked of the flow-control window at once (the default h2 frame size).
const MAX_CHUNK: usize = 16 * 1024;

/// The client side of one extended-CONNECT stream.
pub struct H2Stream<'a> {
    recv: &'a mut HttpSession,
    send: SendStream<Bytes>,
    /// Received DATA not yet read by the tunnel.
    pending: Bytes,
    read_done: bool,
    write_done: bool,
}

impl<'a> H2Stream<'a> {
    /// The stream whose request body `recv` reads and whose response body `send` writes
    /// (the response header is already sent).
    pub fn new(recv: &'a mut HttpSession, send: SendStream<Bytes>) -> Self {
        Self {
            recv,
            send,
            pending: Bytes::new(),
            read_done: false,
            write_done: false,
        }
    }
}

fn h2_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"))
    } else {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }
}

impl AsyncRead for H2Stream<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() && !this.read_done {
            match ready!(this.recv.poll_read_body_bytes(cx)) {
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => return Poll::Ready(Err(h2_error(e))),
                None => this.read_done = true,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.write_done {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.send.reserve_capacity(buf.len().min(MAX_CHUNK));
        loop {
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(granted)) => {
                    let n = granted.min(buf.len());
                    this.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(h2_error)?;
                    return Poll::Ready(Ok(n));
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_error(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sent data is the connection's to write: the h2 connection task flushes it.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_done {
            this.write_done = true;
            // END_STREAM is the stream's TCP FIN (RFC 8441 §4).
            this.send.send_data(Bytes::new(), true).map_err(h2_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
