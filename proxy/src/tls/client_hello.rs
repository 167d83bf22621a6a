//! A look at a connection's ClientHello before its handshake is admitted: does it offer to
//! resume a session? Resumed handshakes cost a fraction of a full one, so the admission queue
//! can let them go first (`handshake_queue`).
//!
//! Only the first TLS record is read, within a small bound and timeout, and all of it is put
//! back (the acceptor must still see every byte), the way `proxy_protocol::accept` reads a
//! header. Just enough is parsed to find a `pre_shared_key` extension (TLS 1.3) or a non-empty
//! `session_ticket` (TLS 1.2). Anything hostile, partial or odd is a full handshake: claiming
//! resumption only moves a client ahead of full handshakes, never past the limit on handshakes
//! in progress. A connection that does not start like TLS at all is left to the acceptor,
//! which refuses it without any crypto, as it always has.

use std::time::Duration;

use pingora::protocols::l4::stream::Stream as L4Stream;
use tokio::io::AsyncReadExt;

/// What the first bytes say about a connection's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello (or something we cannot tell from one) that needs a full handshake.
    Full,
    /// A ClientHello that offers session resumption.
    Resumption,
    /// Not a TLS handshake record (or the peer closed first): the acceptor refuses it.
    NotTls,
}

/// Where a parse of the bytes so far stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The first record is not complete yet.
    NeedMore,
    /// Decided.
    Done(Hello),
}

/// A TLS record's header: type, version, length.
const RECORD_HEADER: usize = 5;
/// The largest record payload a peer may send (RFC 8446, 5.1).
pub const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SESSION_TICKET: u16 = 35;
const EXT_PRE_SHARED_KEY: u16 = 41;

/// Classifies the first bytes of a connection (`buf` holds what has arrived so far).
pub fn classify(buf: &[u8]) -> Parsed {
    let Some(&content_type) = buf.first() else {
        return Parsed::NeedMore;
    };
    if content_type != CONTENT_HANDSHAKE {
        return Parsed::Done(Hello::NotTls);
    }
    let Some(header) = buf.get(..RECORD_HEADER) else {
        return Parsed::NeedMore;
    };
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len == 0 || len > MAX_RECORD_PAYLOAD {
        return Parsed::Done(Hello::Full);
    }
    match buf.get(RECORD_HEADER..RECORD_HEADER + len) {
        Some(record) => Parsed::Done(if offers_resumption(record) {
            Hello::Resumption
        } else {
            Hello::Full
        }),
        None => Parsed::NeedMore,
    }
}

/// Reads `n` bytes off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vec(&mut self, two_byte_length: bool) -> Option<&'a [u8]> {
        let n = if two_byte_length {
            usize::from(self.u16()?)
        } else {
            self.u8()?
        };
        self.take(n)
    }
}

/// Whether the handshake bytes of the first record hold a ClientHello offering resumption.
/// A ClientHello split over records is judged by the part in the first: the pre-shared key
/// comes last, so a split one is most likely taken as full.
fn offers_resumption(record: &[u8]) -> bool {
    scan_hello(Reader(record)).unwrap_or(false)
}

fn scan_hello(mut r: Reader<'_>) -> Option<bool> {
    if r.u8()? != usize::from(CLIENT_HELLO) {
        return Some(false);
    }
    r.take(3)?; // handshake length: the record bounds what is looked at
    r.take(2 + 32)?; // legacy version, random
    r.vec(false)?; // legacy session id
    r.vec(true)?; // cipher suites
    r.vec(false)?; // compression methods
    let len = usize::from(r.u16()?);
    // Extensions cut off by the end of the record are scanned as far as they go.
    let mut exts = Reader(r.0.get(..len).unwrap_or(r.0));
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec(true)?;
        match kind {
            EXT_PRE_SHARED_KEY => return Some(true),
            EXT_SESSION_TICKET if !data.is_empty() => return Some(true),
            _ => {}
        }
    }
    Some(false)
}

/// Reads the first record of `stream` and puts every byte back. The wait for the first byte
/// is the caller's to bound (the handshake timeout); once bytes have come, the rest of the
/// record must follow within `rest_within`, else the hello counts as [`Hello::Full`] (partial
/// hellos are left to the handshake and its timeout).
pub async fn peek(stream: &mut L4Stream, rest_within: Duration) -> Hello {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let mut deadline = None;
    // Bounded: each round adds at least a byte, and a record is at most
    // RECORD_HEADER + MAX_RECORD_PAYLOAD bytes.
    let hello = loop {
        if let Parsed::Done(hello) = classify(&buf) {
            break hello;
        }
        let want = needed(&buf).saturating_sub(buf.len()).clamp(1, chunk.len());
        let read = stream.read(&mut chunk[..want]);
        let n = match deadline {
            None => read.await,
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(n) => n,
                Err(_) => break Hello::Full,
            },
        };
        match n {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            // Closed or broken before a whole record: the acceptor sees the same and fails.
            _ => break Hello::NotTls,
        }
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + rest_within);
    };
    stream.rewind(&buf);
    hello
}

/// Bytes the first record needs in all, as far as `buf` tells.
fn needed(buf: &[u8]) -> usize {
    match buf.get(3..RECORD_HEADER) {
        Some(len) => RECORD_HEADER + usize::from(u16::from_be_bytes([len[0], len[1]])),
        None => RECORD_HEADER,
    }
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
mod tests;
