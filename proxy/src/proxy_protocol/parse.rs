//! The PROXY protocol header parser (HAProxy's spec, versions 1 and 2), sans-io: a pure
//! function of the bytes received so far. The caller reads, appends and calls again while
//! the answer is [`Parsed::NeedMore`]; every decision depends only on bytes already seen, so
//! however the input is split across reads the outcome is the same.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Addresses, Header, Version, Versions};

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What every version 1 header starts with.
pub const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The longest version 1 line the spec allows, `\r\n` included.
pub const V1_MAX_LEN: usize = 107;
/// The most address and TLV bytes accepted after a version 2 header's fixed 16 bytes. The
/// spec allows 65535; cloud load balancers send tens of bytes of TLVs (AWS: the VPC endpoint
/// id, GCP: the PSC connection id, Azure: the link id), so a longer header is refused rather
/// than buffered.
pub const V2_MAX_PAYLOAD: usize = 2048;

const V2_FIXED: usize = 16;
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

/// What the bytes so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A header may still come: read more and call again.
    NeedMore,
    /// A complete header, `consumed` bytes long; what follows belongs to the client's stream.
    Done {
        /// The header.
        header: Header,
        /// Its length in bytes.
        consumed: usize,
    },
}

/// Why the bytes are not an acceptable header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes start like neither signature: most likely a TLS ClientHello sent without a
    /// header.
    #[error("no PROXY protocol header")]
    Missing,
    /// The bytes start like a signature but are not one.
    #[error("bad PROXY protocol signature")]
    BadSignature,
    /// A version 1 header where only version 2 is accepted.
    #[error("PROXY protocol v1 header where only v2 is accepted")]
    V1Disabled,
    /// The header is longer than this parser accepts.
    #[error("PROXY protocol header too long")]
    Oversized,
    /// The header breaks the spec (the detail says where).
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Parses the start of `buf` as a PROXY protocol header of one of `versions`.
pub fn parse(buf: &[u8], versions: Versions) -> Result<Parsed, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::NeedMore);
    };
    if first == V2_SIGNATURE[0] {
        if !is_prefix(buf, &V2_SIGNATURE) {
            return Err(ParseError::BadSignature);
        }
        parse_v2(buf)
    } else if first == V1_SIGNATURE[0] {
        if !is_prefix(buf, V1_SIGNATURE) {
            return Err(ParseError::BadSignature);
        }
        if versions != Versions::V1AndV2 {
            return if buf.len() >= V1_SIGNATURE.len() {
                Err(ParseError::V1Disabled)
            } else {
                Ok(Parsed::NeedMore)
            };
        }
        parse_v1(buf)
    } else {
        Err(ParseError::Missing)
    }
}

/// Whether `buf` could be the start of a header of either version (it agrees with a
/// signature as far as it goes). Used on connections whose headers are not trusted, to count
/// a header sent from the wrong place instead of failing it as TLS.
pub fn looks_like_header(buf: &[u8]) -> bool {
    !buf.is_empty() && (is_prefix(buf, &V2_SIGNATURE) || is_prefix(buf, V1_SIGNATURE))
}

/// Whether `buf` and `signature` agree on their common length.
fn is_prefix(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ParseError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ParseError::Oversized)
        } else {
            Ok(Parsed::NeedMore)
        };
    };
    let raw = &buf[V1_SIGNATURE.len()..end];
    let consumed = end + 2;
    let done = |addresses| {
        Ok(Parsed::Done {
            header: Header {
                version: Version::V1,
                addresses,
            },
            consumed,
        })
    };
    // "UNKNOWN" may be followed by anything up to the CRLF, which the receiver ignores: so
    // it is looked for before the rest is asked to be text.
    if raw == b"UNKNOWN" || raw.starts_with(b"UNKNOWN ") {
        return done(None);
    }
    let line =
        std::str::from_utf8(raw).map_err(|_| ParseError::Malformed("v1 line is not text"))?;
    let mut fields = line.split(' ');
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ParseError::Malformed("v1 line needs five fields"));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            v1_ip::<Ipv4Addr>(src)?.into(),
            v1_ip::<Ipv4Addr>(dst)?.into(),
        ),
        "TCP6" => (
            v1_ip::<Ipv6Addr>(src)?.into(),
            v1_ip::<Ipv6Addr>(dst)?.into(),
        ),
        _ => {
            return Err(ParseError::Malformed(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    done(Some(Addresses {
        source: SocketAddr::new(src, v1_port(sport)?),
        destination: SocketAddr::new(dst, v1_port(dport)?),
    }))
}

fn v1_ip<T: std::str::FromStr>(text: &str) -> Result<T, ParseError> {
    text.parse()
        .map_err(|_| ParseError::Malformed("v1 address does not match its protocol"))
}

/// A port: 1 to 5 decimal digits (no sign, which `u16::from_str` would take), at most 65535,
/// and no leading zero (the spec, §2.1: "to avoid any possible confusion with octal").
fn v1_port(text: &str) -> Result<u16, ParseError> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Malformed("v1 port is not a number"));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(ParseError::Malformed("v1 port has a leading zero"));
    }
    text.parse()
        .map_err(|_| ParseError::Malformed("v1 port is out of range"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ParseError> {
    if buf.len() < V2_FIXED {
        return Ok(Parsed::NeedMore);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ParseError::Malformed("v2 version is not 2"));
    }
    let local = match command {
        0 => true,
        1 => false,
        _ => {
            return Err(ParseError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ))
        }
    };
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    if family > 3 || transport > 2 {
        return Err(ParseError::Malformed(
            "v2 address family or transport unknown",
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(ParseError::Oversized);
    }
    let consumed = V2_FIXED + len;
    if buf.len() < consumed {
        return Ok(Parsed::NeedMore);
    }
    let payload = &buf[V2_FIXED..consumed];
    let done = |addresses| {
        Ok(Parsed::Done {
            header: Header {
                version: Version::V2,
                addresses,
            },
            consumed,
        })
    };
    // LOCAL (the balancer's own health checks): the receiver uses the real connection
    // endpoints and ignores whatever address block and TLVs follow.
    if local {
        return done(None);
    }
    let (addresses, rest) = match family {
        // UNSPEC: no address carried (the spec's "unknown" protocol), TLVs may follow.
        0 => (None, payload),
        1 | 2 if transport != 1 => {
            return Err(ParseError::Malformed("v2 transport is not a stream"));
        }
        1 => {
            let (block, rest) = split(payload, V2_INET_LEN)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 4];
                octets.copy_from_slice(&block[at..at + 4]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            let source = SocketAddr::new(ip(0), port(8));
            let destination = SocketAddr::new(ip(4), port(10));
            (
                Some(Addresses {
                    source,
                    destination,
                }),
                rest,
            )
        }
        2 => {
            let (block, rest) = split(payload, V2_INET6_LEN)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            let source = SocketAddr::new(ip(0), port(32));
            let destination = SocketAddr::new(ip(16), port(34));
            (
                Some(Addresses {
                    source,
                    destination,
                }),
                rest,
            )
        }
        // AF_UNIX: socket paths carry no client address the edge could use; the connection
        // is taken as the balancer's own, as for UNSPEC.
        _ => (None, split(payload, V2_UNIX_LEN)?.1),
    };
    check_tlvs(rest)?;
    done(addresses)
}

fn split(payload: &[u8], at: usize) -> Result<(&[u8], &[u8]), ParseError> {
    if payload.len() < at {
        return Err(ParseError::Malformed(
            "v2 length is shorter than its addresses",
        ));
    }
    Ok(payload.split_at(at))
}

/// Walks the TLVs after the addresses: each must fit in the header. Their values (CRC32C,
/// ALPN, the cloud's endpoint ids) are not used by the edge and are skipped.
fn check_tlvs(mut rest: &[u8]) -> Result<(), ParseError> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(ParseError::Malformed("v2 TLV is truncated"));
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        rest = rest
            .get(3 + len..)
            .ok_or(ParseError::Malformed("v2 TLV is longer than the header"))?;
    }
    Ok(())
}
