//! The I/O around the parser: reading a header off an accepted connection before its TLS
//! handshake, putting back what was read past it, and making the carried address the
//! connection's peer address.

use std::{net::IpAddr, os::fd::AsRawFd, time::Duration};

use pingora::protocols::{
    l4::{socket::SocketAddr, stream::Stream as L4Stream},
    GetSocketDigest, SocketDigest,
};
use tokio::io::AsyncReadExt;

use super::{
    parse::{self, looks_like_header, Parsed},
    Header, Refusal, Versions,
};

/// Bytes asked for per read: a cloud balancer's header fits in one; whatever follows it
/// (the ClientHello) is put back for the TLS handshake.
const READ_CHUNK: usize = 256;

/// Reads a header of `versions` from `stream`, all of it within `timeout` (one deadline for
/// the whole header, so a peer trickling bytes cannot stretch it). `Ok(None)`: the peer
/// closed without sending a byte, as a balancer's TCP health check does.
pub async fn read_header(
    stream: &mut L4Stream,
    versions: Versions,
    timeout: Duration,
) -> Result<Option<Header>, Refusal> {
    tokio::time::timeout(timeout, read(stream, versions))
        .await
        .map_err(|_| Refusal::Timeout)?
}

async fn read(stream: &mut L4Stream, versions: Versions) -> Result<Option<Header>, Refusal> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut chunk = [0u8; READ_CHUNK];
    // Bounded: each round adds at least a byte, and the parser decides by the longest header
    // it accepts.
    loop {
        if let Parsed::Done { header, consumed } = parse::parse(&buf, versions)? {
            stream.rewind(&buf[consumed..]);
            return Ok(Some(header));
        }
        let n = stream.read(&mut chunk).await.map_err(|_| Refusal::Io)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(Refusal::Truncated)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether a peer that is not trusted to send a header starts with one. Only the first read
/// is looked at, and put back: a TLS record never starts like a signature, so one byte tells.
pub async fn sends_header(stream: &mut L4Stream) -> std::io::Result<bool> {
    let mut first = [0u8; 16];
    let n = stream.read(&mut first).await?;
    stream.rewind(&first[..n]);
    Ok(looks_like_header(&first[..n]))
}

/// Makes `header`'s source the peer address of `stream` (its socket digest, which the TLS
/// stream, both HTTP stacks and the logs read) and returns the client address: the carried
/// source, or the TCP peer's when the header carries none.
pub fn carry_client_address(
    stream: &mut L4Stream,
    header: &Header,
    peer: Option<IpAddr>,
) -> Option<IpAddr> {
    let Some(addresses) = header.addresses else {
        return peer;
    };
    // A balancer on IPv6 may carry an IPv4 client as ::ffff:a.b.c.d.
    let source = std::net::SocketAddr::new(
        addresses.source.ip().to_canonical(),
        addresses.source.port(),
    );
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let fresh = digest.peer_addr.set(Some(SocketAddr::Inet(source))).is_ok();
    debug_assert!(fresh, "a new digest's peer address is unset");
    stream.set_socket_digest(digest);
    Some(source.ip())
}
