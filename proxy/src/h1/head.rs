//! HTTP/1.x request and response heads: parsed with `httparse` straight from the read buffer
//! and rewritten for the next hop in one pass. Sans-io: bytes in, facts and bytes out.
//!
//! The rewrite is what a reverse proxy owes each hop (RFC 9110 §7.6.1): hop-by-hop headers
//! (`Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade` unless it is a
//! WebSocket) stay on their hop, a client's `X-Forwarded-For`/`-Proto` is replaced by ours,
//! and `Expect: 100-continue` is answered by the proxy itself so the request body is not held
//! up waiting for a node.

use std::net::IpAddr;

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
    let mut host = absolute_form_host(target).map(|h| range_of(buf, h));
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let (mut upgrade_ws, mut conn_upgrade, mut conn_close, mut conn_keep) =
        (false, false, false, false);
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.is_none() {
                let value = std::str::from_utf8(h.value)
                    .map_err(|_| HeadError::Malformed("Host is not text"))?;
                host = Some(range_of(buf, strip_port(value.trim())));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
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
    if !http10 && host.is_none() {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
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
        websocket: !http10 && upgrade_ws && conn_upgrade,
        expect_continue,
        keep_alive: if http10 {
            conn_keep && !conn_close
        } else {
            !conn_close
        },
    }))
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
    let target = req.path.unwrap_or("/");
    let target = origin_form(target);
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if head.http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut wrote_host = false;
    for h in req.headers.iter() {
        // `TE: trailers` says the client takes trailers; chunked bodies pass through verbatim,
        // so the node may send them (hyper, for one, only does when asked).
        let te_trailers = h.name.eq_ignore_ascii_case("te")
            && h.value.trim_ascii().eq_ignore_ascii_case(b"trailers");
        if (is_hop_by_hop(h.name, head.websocket) && !te_trailers)
            || h.name.eq_ignore_ascii_case("x-forwarded-for")
            || h.name.eq_ignore_ascii_case("x-forwarded-proto")
            || h.name.eq_ignore_ascii_case("expect")
        {
            continue;
        }
        wrote_host |= h.name.eq_ignore_ascii_case("host");
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
    if let Some(ip) = client {
        use std::io::Write;
        let _infallible = write!(out, "x-forwarded-for: {ip}\r\n");
    }
    out.extend_from_slice(b"x-forwarded-proto: https\r\n\r\n");
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head in the read buffer.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// Body framing (given the request method).
    pub body: Framing,
    /// Whether the node keeps the connection for another request.
    pub keep_alive: bool,
}

/// Why a node's response head is unusable (answered 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad response head from the node: {0}")]
pub struct BadResponse(pub &'static str);

/// Parses a response head at the start of `buf`; `Ok(None)` when incomplete.
pub fn parse_response(
    buf: &[u8],
    request_is_head: bool,
    limit: usize,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limit => {
            return Err(BadResponse("head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse("not an HTTP/1.x response head")),
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut length = None;
    let mut chunked = false;
    let (mut close, mut keep) = (false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).map_err(|_| BadResponse("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse("conflicting Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                // Some other coding last: delimited by close (RFC 9112 §6.3).
                length = None;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                close |= token.trim_ascii().eq_ignore_ascii_case(b"close");
                keep |= token.trim_ascii().eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let has_te = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let body = if request_is_head || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if has_te {
        Framing::UntilClose
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = body != Framing::UntilClose && if http10 { keep && !close } else { !close };
    Ok(Some(ResponseHead {
        len,
        status,
        body,
        keep_alive,
    }))
}

/// Writes the response head parsed from `buf` for the client: the node's status line and
/// end-to-end headers, plus `connection: close` when this is the connection's last exchange.
pub fn write_client_response(buf: &[u8], head: &ResponseHead, close: bool, out: &mut Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    if !matches!(
        resp.parse(&buf[..head.len]),
        Ok(httparse::Status::Complete(_))
    ) {
        return;
    }
    // The status line as the node sent it (with its reason phrase), minus its line end and
    // any empty lines before it (which parsers tolerate, RFC 9112 §2.2).
    let head_bytes = &buf[..head.len];
    let start = head_bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let line_end = head_bytes[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(start, |i| start + i);
    let line = &head_bytes[start..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"HTTP/1.0") {
        // Speak HTTP/1.1 to the client whatever the node spoke.
        out.extend_from_slice(b"HTTP/1.1");
        out.extend_from_slice(&line[8..]);
    } else {
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        if is_hop_by_hop(h.name, false) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Headers that belong to one hop only.
fn is_hop_by_hop(name: &str, websocket: bool) -> bool {
    name.eq_ignore_ascii_case("connection")
        || name.eq_ignore_ascii_case("keep-alive")
        || name.eq_ignore_ascii_case("proxy-connection")
        || name.eq_ignore_ascii_case("te")
        || (!websocket && name.eq_ignore_ascii_case("upgrade"))
}

fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("bad Content-Length"));
    }
    v.iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(HeadError::Malformed("bad Content-Length"))
}

/// The authority's host of an absolute-form target (`http://host:port/path`).
fn absolute_form_host(target: &str) -> Option<&str> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    Some(strip_port(authority))
}

/// The path and query of a target (absolute-form becomes origin-form).
fn origin_form(target: &str) -> &str {
    let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    else {
        return target;
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        _ => "/",
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic either parser, and offsets stay inside the input.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some(head)) = parse_request(&bytes, 16 * 1024) {
                prop_assert!(head.len <= bytes.len());
                if let Some(h) = head.host {
                    prop_assert!(h.end <= bytes.len());
                }
            }
            let _ = parse_response(&bytes, false, 16 * 1024);
        }

        /// A well-formed request, rewritten for the node, parses again with the same framing
        /// and target, whatever its headers.
        #[test]
        fn rewritten_requests_keep_their_meaning(
            method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
            path in "/[a-z0-9/._-]{0,30}(\\?[a-z0-9=&]{0,20})?",
            extra in proptest::collection::vec(("x-[a-z]{1,10}", "[ -~]{0,20}"), 0..6),
            body in prop::sample::select(vec![None, Some("content-length: 5"), Some("transfer-encoding: chunked")]),
            close in any::<bool>(),
        ) {
            let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: a.z.kanmon.test\r\n");
            for (k, v) in &extra {
                raw.push_str(&format!("{k}: {}\r\n", v.trim()));
            }
            if let Some(b) = body {
                raw.push_str(b);
                raw.push_str("\r\n");
            }
            if close {
                raw.push_str("connection: close\r\n");
            }
            raw.push_str("\r\n");
            let head = parse_request(raw.as_bytes(), 16 * 1024).unwrap().unwrap();
            prop_assert_eq!(head.len, raw.len());
            prop_assert_eq!(head.keep_alive, !close);
            let mut out = Vec::new();
            write_upstream_request(raw.as_bytes(), &head, None, &mut out);
            let again = parse_request(&out, 16 * 1024).unwrap().unwrap();
            prop_assert_eq!(again.body, head.body);
            prop_assert!(again.keep_alive, "the node connection is always kept alive");
            let text = String::from_utf8(out).unwrap();
            let expected_start = format!("{method} {path} HTTP/1.1\r\n");
            prop_assert!(text.starts_with(&expected_start), "{}", text);
        }
    }

    fn req(raw: &str) -> RequestHead {
        parse_request(raw.as_bytes(), 8192).unwrap().unwrap()
    }

    #[test]
    fn a_plain_get_keeps_alive_and_names_its_host() {
        let raw =
            "GET /v2/healthcheck?x=1 HTTP/1.1\r\nHost: alpha.us-east1.kanmon.test:8443\r\n\r\n";
        let head = req(raw);
        assert_eq!(head.len, raw.len());
        assert_eq!(
            &raw[head.host.clone().unwrap()],
            "alpha.us-east1.kanmon.test"
        );
        assert_eq!(head.body, Framing::Empty);
        assert!(head.keep_alive && !head.websocket && !head.http10 && !head.is_head);
    }

    #[test]
    fn incomplete_heads_ask_for_more_until_the_limit() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: a", 8192), Ok(None));
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100));
        assert_eq!(parse_request(long.as_bytes(), 64), Err(HeadError::TooLarge));
    }

    #[test]
    fn too_many_or_too_large_headers_are_431() {
        let lines = |n: usize| -> String { (0..n).map(|i| format!("x-{i}: v\r\n")).collect() };
        // Host plus MAX_REQUEST_HEADERS - 1 more is the most accepted.
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            lines(MAX_REQUEST_HEADERS - 1)
        );
        assert!(parse_request(raw.as_bytes(), 1 << 20).is_ok());
        for n in [MAX_REQUEST_HEADERS, MAX_HEADERS + 1] {
            let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", lines(n));
            assert_eq!(
                parse_request(raw.as_bytes(), 1 << 20),
                Err(HeadError::TooLarge)
            );
        }
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(300)
        );
        assert_eq!(parse_request(raw.as_bytes(), 200), Err(HeadError::TooLarge));
    }

    #[test]
    fn smuggling_shapes_and_garbage_are_400() {
        for raw in [
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "\x16\x03\x01garbage\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_request(raw.as_bytes(), 8192),
                    Err(HeadError::Malformed(_))
                ),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn bodies_websockets_and_http10() {
        let head =
            req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(head.body, Framing::Length(12));
        assert!(head.expect_continue);
        let head = req(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(head.body, Framing::Chunked);
        assert!(!head.keep_alive);
        let head = req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(head.websocket);
        let head = req("GET / HTTP/1.0\r\n\r\n");
        assert!(head.http10 && !head.keep_alive && head.host.is_none());
        let head = req("GET http://b.z.kanmon.test:80/p HTTP/1.1\r\nHost: other\r\n\r\n");
        let raw = "GET http://b.z.kanmon.test:80/p HTTP/1.1\r\nHost: other\r\n\r\n";
        assert_eq!(
            &raw[head.host.unwrap()],
            "b.z.kanmon.test",
            "absolute form wins over Host"
        );
    }

    #[test]
    fn the_upstream_head_drops_hop_by_hop_and_forwarded_headers() {
        let raw = "GET http://a.z.kanmon.test/p?q=1 HTTP/1.1\r\nHost: a.z.kanmon.test\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nTE: gzip\r\nX-Forwarded-For: 6.6.6.6\r\nExpect: 100-continue\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n";
        let head = req(raw);
        let mut out = Vec::new();
        write_upstream_request(
            raw.as_bytes(),
            &head,
            Some("127.0.0.9".parse().unwrap()),
            &mut out,
        );
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "GET /p?q=1 HTTP/1.1\r\nHost: a.z.kanmon.test\r\nAccept: */*\r\nx-forwarded-for: 127.0.0.9\r\nx-forwarded-proto: https\r\n\r\n"
        );
        let raw =
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let head = req(raw);
        let mut out = Vec::new();
        write_upstream_request(raw.as_bytes(), &head, None, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("Upgrade: websocket\r\n") && out.contains("connection: upgrade\r\n"),
            "{out}"
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let p =
            |raw: &str, head: bool| parse_response(raw.as_bytes(), head, 8192).unwrap().unwrap();
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).body,
            Framing::Length(5)
        );
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).body,
            Framing::Empty
        );
        assert_eq!(
            p("HTTP/1.1 204 No Content\r\n\r\n", false).body,
            Framing::Empty
        );
        assert_eq!(
            p(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            )
            .body,
            Framing::Empty
        );
        assert_eq!(
            p("HTTP/1.1 100 Continue\r\n\r\n", false).body,
            Framing::Empty
        );
        let chunked = p(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(chunked.body, Framing::Chunked);
        assert!(chunked.keep_alive);
        let until_close = p("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(until_close.body, Framing::UntilClose);
        assert!(!until_close.keep_alive);
        assert!(
            !p(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .keep_alive
        );
        assert!(!p("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).keep_alive);
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, 8192).is_err()
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false, 8192).is_err());
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", false, 8192),
            Ok(None)
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nX: aaaa", false, 8).is_err());
    }

    #[test]
    fn empty_lines_before_a_status_line_are_not_passed_on() {
        let raw = "\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n";
        let head = parse_response(raw.as_bytes(), false, 8192)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_client_response(raw.as_bytes(), &head, false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"
        );
    }

    #[test]
    fn the_client_response_head_keeps_the_status_line_and_end_to_end_headers() {
        let raw = "HTTP/1.0 200 Fine\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Node-Id: a-0\r\n\r\nok";
        let head = parse_response(raw.as_bytes(), false, 8192)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_client_response(raw.as_bytes(), &head, true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nX-Node-Id: a-0\r\nconnection: close\r\n\r\n"
        );
    }
}
