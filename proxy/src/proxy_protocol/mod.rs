//! PROXY protocol (HAProxy's spec, v1 text and v2 binary) from the L4 load balancer in front
//! of the edge: without it every client would appear as the balancer's address, so
//! `X-Forwarded-For`, the per-client limits and the logs would all name the balancer.
//!
//! Only connections from `listen.trusted_proxies` carry a header, and from them it is
//! required, read before the TLS handshake under its own deadline. The carried source address
//! then replaces the TCP peer in the connection's socket digest (`accept`), the one place
//! both HTTP stacks, the per-client limits and the logs take the client address from.

pub mod accept;
pub mod encode;
pub mod parse;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod v1_differential_tests;

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use crate::config::{Listen, ProxyProtocolMode};

/// Which header versions are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Binary version 2 only.
    V2,
    /// Text version 1 or binary version 2.
    V1AndV2,
}

/// The version a header came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text.
    V1,
    /// Binary.
    V2,
}

/// The connection's endpoints as the balancer saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to (the balancer's).
    pub destination: SocketAddr,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its version.
    pub version: Version,
    /// The carried endpoints; `None` when the header carries none the edge can use (v2
    /// LOCAL, UNSPEC or AF_UNIX, v1 UNKNOWN): the connection is then the balancer's own (a
    /// health check) and keeps its TCP peer address.
    pub addresses: Option<Addresses>,
}

/// The listener's PROXY protocol policy, from `[listen]`.
#[derive(Debug, Clone)]
pub struct Policy {
    versions: Option<Versions>,
    trusted: Vec<ipnet::IpNet>,
    /// How long a trusted peer has to send its whole header.
    pub timeout: Duration,
}

impl Policy {
    /// The policy `listen` configures.
    pub fn new(listen: &Listen) -> Self {
        Self {
            versions: match listen.proxy_protocol {
                ProxyProtocolMode::Off => None,
                ProxyProtocolMode::V2 => Some(Versions::V2),
                ProxyProtocolMode::V1V2 => Some(Versions::V1AndV2),
            },
            trusted: listen.trusted_proxies.clone(),
            timeout: listen.proxy_protocol_timeout,
        }
    }

    /// Whether PROXY protocol is on at all.
    pub fn enabled(&self) -> bool {
        self.versions.is_some()
    }

    /// The versions a header from `peer` may come in, or `None` when `peer` sends no header
    /// (the protocol is off, or `peer` is not a trusted balancer).
    pub fn expects_header(&self, peer: Option<IpAddr>) -> Option<Versions> {
        let versions = self.versions?;
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let peer = peer?.to_canonical();
        self.trusted
            .iter()
            .any(|net| net.contains(&peer))
            .then_some(versions)
    }
}

/// Why a connection was closed by the PROXY protocol rules: the `reason` label of
/// `kanmon_proxy_protocol_errors_total` (a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A trusted peer sent no header (bytes that start like neither signature).
    #[error("no header from a trusted proxy")]
    Missing,
    /// A peer outside `trusted_proxies` sent a header.
    #[error("header from an untrusted source")]
    Untrusted,
    /// Something that started like a signature but was not one.
    #[error("bad signature")]
    BadSignature,
    /// A v1 header where only v2 is accepted.
    #[error("v1 header where only v2 is accepted")]
    V1Disabled,
    /// Longer than the parser accepts.
    #[error("header too long")]
    Oversized,
    /// Breaks the spec.
    #[error("malformed header")]
    Malformed,
    /// The peer closed before the header was complete.
    #[error("connection closed inside the header")]
    Truncated,
    /// The header did not arrive in time.
    #[error("header not received in time")]
    Timeout,
    /// Reading failed.
    #[error("read error")]
    Io,
}

impl Refusal {
    /// Every reason, for pre-creating the metric's series.
    pub const ALL: [Refusal; 9] = [
        Refusal::Missing,
        Refusal::Untrusted,
        Refusal::BadSignature,
        Refusal::V1Disabled,
        Refusal::Oversized,
        Refusal::Malformed,
        Refusal::Truncated,
        Refusal::Timeout,
        Refusal::Io,
    ];

    /// The metric label value.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Untrusted => "untrusted",
            Refusal::BadSignature => "bad_signature",
            Refusal::V1Disabled => "v1_disabled",
            Refusal::Oversized => "oversized",
            Refusal::Malformed => "malformed",
            Refusal::Truncated => "truncated",
            Refusal::Timeout => "timeout",
            Refusal::Io => "io",
        }
    }
}

impl From<parse::ParseError> for Refusal {
    fn from(e: parse::ParseError) -> Self {
        match e {
            parse::ParseError::Missing => Refusal::Missing,
            parse::ParseError::BadSignature => Refusal::BadSignature,
            parse::ParseError::V1Disabled => Refusal::V1Disabled,
            parse::ParseError::Oversized => Refusal::Oversized,
            parse::ParseError::Malformed(_) => Refusal::Malformed,
        }
    }
}
