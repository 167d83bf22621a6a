//! The request policy both HTTP stacks follow: kanmon's HTTP/1.1 lane (`h1`) and pingora's
//! HTTP/2 service (`app`, gRPC and RFC 8441 WebSockets among it). A rule that lives here
//! cannot drift between them.
//!
//! - Where a request goes: [`Routes::route`] (SNI against `Host`/`:authority` → 421, the
//!   deployment → 404, a ready node from the router → 503, never a draining one).
//! - What it is counted as: [`RequestAccount::record`].
//! - Which of the client's headers reach the node ([`forwardable`]): hop-by-hop headers
//!   (RFC 9110 §7.6.1: `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE` other than
//!   `trailers`, `Upgrade` unless it is a WebSocket's, and every header `Connection` names)
//!   stay on their hop; a client's `Forwarded`, `X-Real-IP` and `X-Forwarded-*` never reach
//!   the node as if the edge had set them.
//! - What the edge says about the client ([`edge_forwarded`]): `X-Forwarded-For` (the client
//!   address the caller passes in: the TCP peer, or what a PROXY-protocol header carried) and
//!   `X-Forwarded-Proto: https`, whatever protocol the client spoke.

use std::net::IpAddr;

pub use crate::{accounting::RequestAccount, routing::Routes};

/// The value of a forwarding header the edge sets (formatted where it is written: no
/// allocation per request on the HTTP/1.1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeValue {
    /// The client's address.
    Client(IpAddr),
    /// The protocol the client reached the edge with: always TLS.
    Https,
}

impl std::fmt::Display for EdgeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(ip) => ip.fmt(f),
            Self::Https => f.write_str("https"),
        }
    }
}

/// The forwarding headers the edge sets on every request to a node, in order.
pub fn edge_forwarded(client: Option<IpAddr>) -> impl Iterator<Item = (&'static str, EdgeValue)> {
    client
        .map(|ip| ("x-forwarded-for", EdgeValue::Client(ip)))
        .into_iter()
        .chain(std::iter::once(("x-forwarded-proto", EdgeValue::Https)))
}

/// Whether a client's header `name: value` goes on to the node. `connection` is every
/// `Connection` header value of the request; `websocket` keeps `Upgrade` for a WebSocket's
/// handshake (its `Connection: upgrade` is the edge's own).
pub fn forwardable<'a>(
    name: &str,
    value: &[u8],
    connection: impl IntoIterator<Item = &'a [u8]>,
    websocket: bool,
) -> bool {
    // `TE: trailers` says the client takes trailers (gRPC needs it); bodies pass through with
    // their framing, so the node may send them.
    let te_trailers =
        name.eq_ignore_ascii_case("te") && value.trim_ascii().eq_ignore_ascii_case(b"trailers");
    if is_client_forwarding(name) {
        return false;
    }
    if te_trailers {
        return true;
    }
    !(is_hop_by_hop(name, websocket) || named_in_connection(connection, name, websocket))
}

/// A client's own forwarding headers: dropped, the edge sets its own.
pub fn is_client_forwarding(name: &str) -> bool {
    name.eq_ignore_ascii_case("forwarded")
        || name.eq_ignore_ascii_case("x-real-ip")
        || name
            .as_bytes()
            .get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"x-forwarded-"))
}

/// Headers that belong to one hop only.
pub fn is_hop_by_hop(name: &str, websocket: bool) -> bool {
    name.eq_ignore_ascii_case("connection")
        || name.eq_ignore_ascii_case("keep-alive")
        || name.eq_ignore_ascii_case("proxy-connection")
        || name.eq_ignore_ascii_case("te")
        || (!websocket && name.eq_ignore_ascii_case("upgrade"))
}

/// Whether one of the `Connection` values names `name` (hop-by-hop by declaration). A
/// WebSocket's `Connection: upgrade` keeps its `Upgrade`.
fn named_in_connection<'a>(
    connection: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
    websocket: bool,
) -> bool {
    if websocket && name.eq_ignore_ascii_case("upgrade") {
        return false;
    }
    connection
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// The headers of a header map (the HTTP/2 stack's form of a request head) that
/// [`forwardable`] keeps from the node.
pub fn not_forwarded(headers: &http::HeaderMap, websocket: bool) -> Vec<http::HeaderName> {
    let connection = || {
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(http::HeaderValue::as_bytes)
    };
    let mut dropped: Vec<http::HeaderName> = headers
        .iter()
        .filter(|(name, value)| {
            !forwardable(name.as_str(), value.as_bytes(), connection(), websocket)
        })
        .map(|(name, _)| name.clone())
        .collect();
    dropped.dedup();
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_and_hop_by_hop_headers_stay_behind_te_trailers_goes_on() {
        let conn: [&[u8]; 1] = [b"keep-alive, x-secret"];
        for name in [
            "x-forwarded-for",
            "X-Forwarded-Host",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(!forwardable(name, b"1.2.3.4", conn, false), "{name}");
        }
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "x-secret",
        ] {
            assert!(!forwardable(name, b"x", conn, false), "{name}");
        }
        assert!(!forwardable("te", b"gzip", conn, false));
        assert!(forwardable("te", b" trailers ", conn, false));
        assert!(forwardable("upgrade", b"websocket", conn, true));
        assert!(forwardable("x-custom", b"1", conn, false));
    }

    #[test]
    fn a_header_map_gets_the_edge_forwarding_headers_only() {
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert("x-forwarded-proto", "http".parse().unwrap());
        h.insert("forwarded", "for=6.6.6.6".parse().unwrap());
        h.insert("connection", "x-drop".parse().unwrap());
        h.insert("x-drop", "1".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        for name in not_forwarded(&h, false) {
            h.remove(name);
        }
        for (name, value) in edge_forwarded(Some("127.0.0.1".parse().unwrap())) {
            h.insert(name, value.to_string().parse().unwrap());
        }
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["te", "x-forwarded-for", "x-forwarded-proto", "x-keep"]
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
