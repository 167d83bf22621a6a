//! HTTP/1.x request heads: parsed with `httparse` straight from the read buffer and rewritten
//! for the node in one pass (responses: `response`). Sans-io: bytes in, facts and bytes out.
//!
//! Parsing refuses what another parser could read differently (RFC 9112 §2.2, §6.3, the
//! request-smuggling families): a bare LF or bare CR, control bytes, obs-fold, a second
//! `Host`, `Content-Length` with `Transfer-Encoding`, `Transfer-Encoding` on HTTP/1.0, a
//! `Connection` header naming a framing header, targets in no known form.
//!
//! The rewrite is what a reverse proxy owes each hop (RFC 9110 §7.6.1): hop-by-hop headers
//! (`Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade` unless it is a
//! WebSocket, and every header `Connection` names) stay on their hop, a client's
//! `X-Forwarded-*`, `Forwarded` and `X-Real-IP` are dropped (ours replace `X-Forwarded-For`
//! and `-Proto`), an absolute-form target's authority replaces `Host`, and `Expect:
//! 100-continue` is answered by the proxy itself so the request body is not held up waiting
//! for a node.

use std::net::IpAddr;

use crate::policy;

pub use super::response::{parse_response, write_client_response, BadResponse, ResponseHead};

/// Most header lines parsed in one head.
pub const MAX_HEADERS: usize = 100;
/// Most header lines accepted from a client (more is answered 431): the proxy adds up to three
/// of its own (`host`, `x-forwarded-for`, `x-forwarded-proto`), and what it forwards must stay
/// within what it would itself accept.
pub const MAX_REQUEST_HEADERS: usize = MAX_HEADERS - 3;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, forwarded with its framing.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Malformed: answered 400.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// Over the size or header-count limit: answered 431.
    #[error("request head too large")]
    TooLarge,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head in the read buffer (the body, if any, follows).
    pub len: usize,
    /// Bytes of the request line's target plus every header line (what `max_header_bytes`
    /// limits).
    pub header_bytes: usize,
    /// `HEAD` (its response has no body whatever its headers say).
    pub is_head: bool,
    /// `HTTP/1.0` rather than `HTTP/1.1`.
    pub http10: bool,
    /// The host it names (`Host`, or an absolute-form target), port stripped; an offset range
    /// into the read buffer.
    pub host: Option<std::ops::Range<usize>>,
    /// Body framing.
    pub body: Framing,
    /// An HTTP/1.1 WebSocket upgrade.
    pub websocket: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Whether the client wants the connection kept after this exchange.
    pub keep_alive: bool,
    /// The target is in absolute form (`http://host/path`): its authority, not `Host`, names
    /// the host, and is what the node gets as `Host`.
    pub absolute_form: bool,
}

/// Parses the request head at the start of `buf`. `Ok(None)`: incomplete (read more, unless
/// `buf` already holds `max_header_bytes`, which is answered 431).
pub fn parse_request(
    buf: &[u8],
    max_header_bytes: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_header_bytes => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1.x request head")),
    };
    if req.headers.len() > MAX_REQUEST_HEADERS {
        return Err(HeadError::TooLarge);
    }
    check_line_ends(&buf[..len]).map_err(HeadError::Malformed)?;
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);
    let header_bytes = target.len()
        + req
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 4)
            .sum::<usize>();
    if header_bytes > max_header_bytes {
        return Err(HeadError::TooLarge);
    }
    if method == "CONNECT" {
        return Err(HeadError::Malformed("CONNECT is not proxied"));
    }
    let absolute = match target_form(target) {
        Target::Origin => None,
        Target::Asterisk if method == "OPTIONS" => None,
        Target::Absolute(host) => Some(host),
        Target::Asterisk | Target::Other => {
            return Err(HeadError::Malformed("request target in no known form"))
        }
    };
    let mut host = absolute.map(|h| range_of(buf, h));
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut length_text: &[u8] = b"";
    let mut chunked = false;
    let (mut upgrade_ws, mut conn_upgrade, mut conn_close, mut conn_keep) =
        (false, false, false, false);
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            // Two `Host` lines may name two deployments, and a node may read either one.
            hosts += 1;
            if hosts > 1 {
                return Err(HeadError::Malformed("more than one Host"));
            }
            if absolute.is_none() {
                // Trimmed of SP and HTAB only (RFC 9110 §5.5): `str::trim` would also take a
                // trailing U+00A0 or U+0085 off, routing a name the node reads (and refuses)
                // with those bytes on.
                let value = std::str::from_utf8(h.value.trim_ascii())
                    .map_err(|_| HeadError::Malformed("Host is not text"))?;
                host = Some(range_of(buf, strip_port(value)));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value)?;
            // Go's node takes repeated lengths as one only if their text is the same
            // (`05` and `5` are refused there): the node must read the framing the edge did.
            if length.is_some() && length_text != h.value.trim_ascii() {
                return Err(HeadError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
            length_text = h.value.trim_ascii();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only plain `chunked` is forwarded; anything else would have to be decoded here.
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(HeadError::Malformed("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                conn_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep |= token.eq_ignore_ascii_case(b"keep-alive");
                // Headers named here are dropped on the way to the node: never one that
                // frames or routes the message.
                if [&b"host"[..], b"content-length", b"transfer-encoding"]
                    .iter()
                    .any(|n| token.eq_ignore_ascii_case(n))
                {
                    return Err(HeadError::Malformed("Connection names a framing header"));
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ws = h.value.trim_ascii().eq_ignore_ascii_case(b"websocket");
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    // A message with both is a request-smuggling vector (RFC 9112 §6.3): refuse it.
    if chunked && length.is_some() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    // HTTP/1.0 has no chunked coding: a 1.0 hop would frame the body by length or close
    // (RFC 9112 §6.1).
    if chunked && http10 {
        return Err(HeadError::Malformed("Transfer-Encoding on HTTP/1.0"));
    }
    if !http10 && host.is_none() {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    let websocket = !http10 && upgrade_ws && conn_upgrade;
    // An upgrade has no body (RFC 6455 §4.1): bytes after its head are the tunnel's, so one
    // that declares a body could hide a request from the edge.
    if websocket && (chunked || length.is_some_and(|n| n > 0)) {
        return Err(HeadError::Malformed("WebSocket upgrade with a body"));
    }
    let body = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some(RequestHead {
        len,
        header_bytes,
        is_head: method == "HEAD",
        http10,
        host,
        body,
        websocket,
        expect_continue,
        keep_alive: if http10 {
            conn_keep && !conn_close
        } else {
            !conn_close
        },
        absolute_form: absolute.is_some(),
    }))
}

/// Refuses a head whose lines another parser could split differently: every LF must end a
/// CR LF pair and every CR start one (Go's `net/http`, among others, ends a line at a bare
/// LF), no line may start with whitespace (obs-fold, RFC 9112 §5.2), and no control byte
/// other than HTAB may appear (a NUL ends a C string early). One pass over the head.
pub(crate) fn check_line_ends(head: &[u8]) -> Result<(), &'static str> {
    let mut prev = 0u8;
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\n' if prev != b'\r' => return Err("bare LF"),
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err("bare CR"),
            // A line starting with whitespace continues the previous field (or, right after
            // the start line, hides a field from some parsers).
            b' ' | b'\t' if prev == b'\n' => {
                return Err("obs-fold or a line starting with whitespace")
            }
            b'\t' | b'\r' | b'\n' => {}
            0..=0x1f | 0x7f => return Err("control byte"),
            _ => {}
        }
        prev = b;
    }
    Ok(())
}

/// Writes the head sent to the node for the request parsed from `buf` into `out`.
///
/// HTTP/1.1 requests go as HTTP/1.1 on a kept-alive connection; HTTP/1.0 requests go as
/// HTTP/1.0 (the node then answers in a form a 1.0 client reads, and closes).
pub fn write_upstream_request(
    buf: &[u8],
    head: &RequestHead,
    client: Option<IpAddr>,
    out: &mut Vec<u8>,
) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // Parsed once already: this cannot fail differently, but never panic on the hot path.
    if !matches!(
        req.parse(&buf[..head.len]),
        Ok(httparse::Status::Complete(_))
    ) {
        return;
    }
    let (slash, target) = origin_form(req.path.unwrap_or("/"));
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(slash.as_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if head.http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut wrote_host = false;
    let connection = || {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .map(|h| h.value)
    };
    for h in req.headers.iter() {
        let is_host = h.name.eq_ignore_ascii_case("host");
        if !policy::forwardable(h.name, h.value, connection(), head.websocket)
            || h.name.eq_ignore_ascii_case("expect")
            // An absolute-form target's authority replaces `Host` (RFC 9112 §3.2.2).
            || (is_host && head.absolute_form)
        {
            continue;
        }
        wrote_host |= is_host;
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_host {
        if let Some(host) = &head.host {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(&buf[host.clone()]);
            out.extend_from_slice(b"\r\n");
        }
    }
    if head.websocket {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    for (name, value) in policy::edge_forwarded(client) {
        use std::io::Write;
        let _infallible = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

pub(crate) use crate::policy::is_hop_by_hop;

/// A `Content-Length` value: decimal digits, at most 2^63-1. RFC 9110 §8.6: a length the
/// recipient cannot represent is an error, and a Go node (`ParseUint(cl, 10, 63)`) cannot
/// represent more, so a longer one would frame a body the node refuses or reads differently.
pub(crate) fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("bad Content-Length"));
    }
    v.iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or(HeadError::Malformed("bad Content-Length"))
}

/// The forms of a request target (RFC 9112 §3.2) the proxy takes.
enum Target<'a> {
    /// `/path?query`
    Origin,
    /// `http://host:port/path`, with the authority's host (port stripped).
    Absolute(&'a str),
    /// `*` (OPTIONS only).
    Asterisk,
    /// Anything else (authority-form is CONNECT's, which is not proxied).
    Other,
}

fn target_form(target: &str) -> Target<'_> {
    if target.starts_with('/') {
        return Target::Origin;
    }
    if target == "*" {
        return Target::Asterisk;
    }
    match after_scheme(target) {
        Some(rest) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
            Target::Absolute(strip_port(authority))
        }
        None => Target::Other,
    }
}

/// What follows `http://` or `https://` (schemes are case-insensitive, RFC 3986 §3.1: a node
/// reads `HTTP://other/` as absolute-form, so the proxy must too).
fn after_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    })
}

/// The path and query of a target, as a `/` to put first (or nothing) and the rest of it:
/// absolute-form becomes origin-form, and an empty path becomes `/` (RFC 9112 §3.2.1), so
/// `http://host?q=1` is `/?q=1`, not `/`.
fn origin_form(target: &str) -> (&'static str, &str) {
    let Some(rest) = after_scheme(target) else {
        return ("", target);
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => ("", &rest[i..]),
        Some(i) => ("/", &rest[i..]),
        None => ("/", ""),
    }
}

/// `host:port` → `host` (IPv6 literals are left whole: they never name a deployment). Also
/// used for h2's `:authority`/`Host` in `app`.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Where `part` (a sub-slice of `buf`) lies in `buf`.
fn range_of(buf: &[u8], part: &str) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    let start = start.min(buf.len());
    start..(start + part.len()).min(buf.len())
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
