//! How a lenient node reads a request head: a reference reader with the rules of Go's
//! `net/http` server (the game nodes are Go programs), learnt from `net/http`'s
//! `readRequest`, `transfer.go` and `net/textproto`'s `ReadMIMEHeader`, and the safety
//! property held against it ([`check`]). Test-only: shared by `head_differential_tests.rs`
//! and the `head_differential` fuzz target (one copy), so it names kanmon's parser only
//! through `super::head` and `super::body`, which each includer provides.
//!
//! What Go accepts that kanmon refuses is the point: a line ends at a bare LF (a CR before it
//! is dropped, a bare CR stays in the line); a line starting with whitespace continues the
//! previous field (obs-fold, joined with one space); leading empty lines are skipped only
//! after a POST (4 bytes at most); `Transfer-Encoding` on HTTP/1.0 is ignored, with
//! `Content-Length` it wins; duplicate `Content-Length`s are one if their text is the same.
//! What it refuses: a field name that is not a token (a space before the colon included), a
//! control byte in a value, a first field line starting with whitespace, a second `Host`, a
//! `Host` of bytes no host can hold, a `Transfer-Encoding` other than one `chunked`, a
//! `Content-Length` that is not digits or above 2^63-1, a target `ParseRequestURI` refuses.

use super::{
    body::Body,
    head::{parse_request, write_upstream_request, Framing, HeadError, MAX_REQUEST_HEADERS},
};

/// A request head as a Go server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoRequest {
    /// Bytes of the head (request line to the empty line, both included).
    pub(crate) len: usize,
    /// The method.
    pub(crate) method: Vec<u8>,
    /// The request target as sent (`RequestURI`).
    pub(crate) target: Vec<u8>,
    /// The target in origin form as the node's handler sees it: the path (`/` if empty) and
    /// `?` and the query if there was a `?`.
    pub(crate) origin: Vec<u8>,
    /// `HTTP/1.x`'s x.
    pub(crate) minor: u8,
    /// `req.Host`: an absolute-form target's authority, else the `Host` field.
    pub(crate) host: Option<Vec<u8>>,
    /// Every field, name lower-cased, value trimmed, folded lines joined (`Host` included).
    pub(crate) fields: Vec<(String, Vec<u8>)>,
    /// How the body is delimited (a request without a length has none).
    pub(crate) body: Framing,
    /// Whether the server closes after this exchange.
    pub(crate) close: bool,
}

/// Why Go would not serve the head (answered 400, or 505 for a version, and closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoRefusal {
    /// More bytes are needed.
    Incomplete,
    /// Refused, with the reason.
    Refused(&'static str),
}

use GoRefusal::Refused;

/// Reads one request head from the start of `bytes`; `after_post`: the previous request on
/// the connection was a POST (Go then skips up to 4 leading CR or LF bytes).
pub(crate) fn read_request(bytes: &[u8], after_post: bool) -> Result<GoRequest, GoRefusal> {
    let mut pos = 0;
    if after_post {
        pos = bytes
            .iter()
            .take(4)
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
    }
    let (line, next) = read_line(bytes, pos)?;
    pos = next;
    let (method, rest) = cut(line, b' ').ok_or(Refused("malformed HTTP request"))?;
    let (target, proto) = cut(rest, b' ').ok_or(Refused("malformed HTTP request"))?;
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
        return Err(Refused("invalid method"));
    }
    let (major, minor) = version(proto).ok_or(Refused("malformed HTTP version"))?;
    let connect_authority = method == b"CONNECT" && !target.starts_with(b"/");
    let url = if connect_authority {
        let mut with_scheme = b"http://".to_vec();
        with_scheme.extend_from_slice(target);
        request_uri(&with_scheme)?
    } else {
        request_uri(target)?
    };
    let (fields, len) = read_fields(bytes, pos)?;
    let hosts: Vec<&[u8]> = values(&fields, "host").collect();
    if hosts.len() > 1 {
        return Err(Refused("too many Host headers"));
    }
    let host = match (&url.host, hosts.first()) {
        (Some(h), _) if !h.is_empty() => Some(h.clone()),
        (_, Some(h)) => Some(h.to_vec()),
        _ => None,
    };
    let close = {
        let has = |token: &[u8]| {
            values(&fields, "connection").any(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
            })
        };
        has(b"close") || (minor == 0 && !has(b"keep-alive"))
    };
    // transfer.go: `parseTransferEncoding`, then `fixLength`.
    let te: Vec<&[u8]> = values(&fields, "transfer-encoding").collect();
    let chunked = match te.as_slice() {
        _ if minor == 0 => false,
        [] => false,
        [one] if one.eq_ignore_ascii_case(b"chunked") => true,
        [_] => return Err(Refused("unsupported transfer encoding")),
        _ => return Err(Refused("too many transfer encodings")),
    };
    let lengths: Vec<&[u8]> = values(&fields, "content-length").map(trim_space).collect();
    if lengths.iter().any(|l| *l != lengths[0]) {
        return Err(Refused("multiple Content-Length headers"));
    }
    let body = match (chunked, lengths.first()) {
        (true, _) => Framing::Chunked,
        (false, None) => Framing::Empty,
        (false, Some(text)) => match content_length(text)? {
            0 => Framing::Empty,
            n => Framing::Length(n),
        },
    };
    // server.go: the checks after `readRequest`.
    if major != 1 {
        return Err(Refused("unsupported protocol version"));
    }
    if minor >= 1 && hosts.is_empty() && method != b"CONNECT" {
        return Err(Refused("missing required Host header"));
    }
    if hosts
        .first()
        .is_some_and(|h| !h.iter().all(|&b| is_host_byte(b)))
    {
        return Err(Refused("malformed Host header"));
    }
    if fields.iter().any(|(n, _)| n.bytes().any(|b| !is_token(b))) {
        return Err(Refused("invalid header name"));
    }
    let mut origin = if url.path.is_empty() {
        b"/".to_vec()
    } else {
        url.path.clone()
    };
    if let Some(q) = &url.query {
        origin.push(b'?');
        origin.extend_from_slice(q);
    }
    Ok(GoRequest {
        len,
        method: method.to_vec(),
        target: target.to_vec(),
        origin,
        minor,
        host,
        fields,
        body,
        close,
    })
}

/// Fields as read: lower-cased names and trimmed values, in order.
type Fields = Vec<(String, Vec<u8>)>;

/// The values of every field named `name` (lower-case), in order.
fn values<'a>(fields: &'a [(String, Vec<u8>)], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    fields
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// `bufio.Reader.ReadLine`: up to LF, without it and one CR before it.
fn read_line(bytes: &[u8], pos: usize) -> Result<(&[u8], usize), GoRefusal> {
    let rest = bytes.get(pos..).ok_or(GoRefusal::Incomplete)?;
    let n = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(GoRefusal::Incomplete)?;
    let line = &rest[..n];
    Ok((line.strip_suffix(b"\r").unwrap_or(line), pos + n + 1))
}

/// `textproto.Reader.ReadMIMEHeader` from `pos`: the fields and where the head ends.
fn read_fields(bytes: &[u8], mut pos: usize) -> Result<(Fields, usize), GoRefusal> {
    if matches!(bytes.get(pos), Some(b' ' | b'\t')) {
        return Err(Refused("malformed MIME header initial line"));
    }
    let mut fields = Vec::new();
    loop {
        let (line, next) = read_line(bytes, pos)?;
        pos = next;
        if line.is_empty() {
            return Ok((fields, pos));
        }
        if !line.contains(&b':') {
            return Err(Refused("malformed MIME header: missing colon"));
        }
        let mut kv = trim(line).to_vec();
        // Continuation lines: leading whitespace skipped, joined with one space.
        while matches!(bytes.get(pos), Some(b' ' | b'\t')) {
            while matches!(bytes.get(pos), Some(b' ' | b'\t')) {
                pos += 1;
            }
            let (more, next) = read_line(bytes, pos)?;
            pos = next;
            kv.push(b' ');
            kv.extend_from_slice(trim(more));
        }
        let (name, value) = cut(&kv, b':').ok_or(Refused("malformed MIME header line"))?;
        // Tokens, or a space (accepted here, refused by the server's name check).
        if name.is_empty() || !name.iter().all(|&b| is_token(b) || b == b' ') {
            return Err(Refused("malformed MIME header line"));
        }
        if !value.iter().all(|&b| is_value_byte(b)) {
            return Err(Refused("malformed MIME header line"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        fields.push((name, trim(value).to_vec()));
    }
}

/// What `url.ParseRequestURI` keeps of a target.
struct Url {
    host: Option<Vec<u8>>,
    path: Vec<u8>,
    query: Option<Vec<u8>>,
}

/// `url.ParseRequestURI`, as far as a node's reading of a target goes.
fn request_uri(raw: &[u8]) -> Result<Url, GoRefusal> {
    let bad = Err(Refused("invalid request URI"));
    if raw.is_empty() || raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return bad;
    }
    if raw == b"*" {
        return Ok(Url {
            host: None,
            path: b"*".to_vec(),
            query: None,
        });
    }
    // A scheme: a letter, then letters, digits, `+`, `-`, `.`, up to `:`.
    let mut scheme = None;
    for (i, &b) in raw.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return bad,
            b':' => {
                scheme = Some(i);
                break;
            }
            _ => break,
        }
    }
    let mut rest = scheme.map_or(raw, |i| &raw[i + 1..]);
    let query = match rest.iter().position(|&b| b == b'?') {
        Some(i) => {
            let q = rest[i + 1..].to_vec();
            rest = &rest[..i];
            Some(q)
        }
        None => None,
    };
    if !rest.starts_with(b"/") {
        return if scheme.is_some() {
            // Opaque (`mailto:x`): no host, no path.
            Ok(Url {
                host: None,
                path: Vec::new(),
                query,
            })
        } else {
            bad
        };
    }
    let mut host = None;
    if scheme.is_some() && rest.starts_with(b"//") {
        let after = &rest[2..];
        let end = after.iter().position(|&b| b == b'/').unwrap_or(after.len());
        let authority = &after[..end];
        rest = &after[end..];
        let hostport = match authority.iter().rposition(|&b| b == b'@') {
            Some(i) => {
                let user = &authority[..i];
                if !user
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b))
                {
                    return Err(Refused("invalid userinfo"));
                }
                unescape(user, false)?;
                &authority[i + 1..]
            }
            None => authority,
        };
        host = Some(parse_host(hostport)?);
    }
    unescape(rest, false)?;
    Ok(Url {
        host,
        path: rest.to_vec(),
        query,
    })
}

/// `url.parseHost`: an optional `:port` of digits after the host (or after `[...]`), and no
/// byte a host cannot hold.
fn parse_host(host: &[u8]) -> Result<Vec<u8>, GoRefusal> {
    let port = if host.starts_with(b"[") {
        let close = host
            .iter()
            .rposition(|&b| b == b']')
            .ok_or(Refused("missing ']' in host"))?;
        &host[close + 1..]
    } else {
        host.iter()
            .rposition(|&b| b == b':')
            .map_or(&b""[..], |i| &host[i..])
    };
    if !port.is_empty() && (port[0] != b':' || !port[1..].iter().all(u8::is_ascii_digit)) {
        return Err(Refused("invalid port after host"));
    }
    unescape(host, true)
}

/// `url.unescape`: every `%` starts two hex digits; in a host, only `%25` and escapes of
/// bytes from 0x80 up, and no ASCII byte that a host would escape.
fn unescape(s: &[u8], in_host: bool) -> Result<Vec<u8>, GoRefusal> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .ok_or(Refused("invalid URL escape"))?;
                let byte = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
                    .map_err(|_| Refused("invalid URL escape"))?;
                if in_host && byte < 0x80 && byte != b'%' {
                    return Err(Refused("invalid URL escape in host"));
                }
                out.push(byte);
                i += 3;
            }
            b if in_host && b < 0x80 && !is_host_url_byte(b) => {
                return Err(Refused("invalid character in host name"))
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `ParseHTTPVersion`: `HTTP/` and one digit, a dot, one digit.
fn version(proto: &[u8]) -> Option<(u8, u8)> {
    match proto {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Some((major - b'0', minor - b'0'))
        }
        _ => None,
    }
}

/// `parseContentLength`: `strconv.ParseUint(cl, 10, 63)`, and an empty value refused.
fn content_length(text: &[u8]) -> Result<u64, GoRefusal> {
    let bad = Refused("bad Content-Length");
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    text.iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or(bad)
}

fn cut(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `textproto`'s `trim`: spaces and tabs at both ends.
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `textproto.TrimString`: ASCII spaces (SP, HTAB, CR, LF) at both ends.
fn trim_space(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

/// `httpguts.ValidHostHeader`'s table.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=[]_~".contains(&b)
}

/// The ASCII bytes `url.shouldEscape` leaves alone in a host.
fn is_host_url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&b)
}

/// The host part of a `Host` value or authority (`host:port` → `host`; bracketed IPv6 whole).
fn without_port(host: &[u8]) -> &[u8] {
    if host.starts_with(b"[") {
        return host;
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    }
}

/// Most header bytes the property gives kanmon's parser (`limits.max_header_bytes`).
pub(crate) const LIMIT: usize = 16 * 1024;

/// Fields the edge adds, replaces or drops on the way to a node (`policy`).
const EDGE_FIELDS: [&str; 3] = ["host", "x-forwarded-for", "x-forwarded-proto"];

/// The safety property for one client byte stream `input` (a head, maybe body bytes and
/// more): whatever kanmon makes of it, a Go node reading what kanmon forwards sees the same
/// request (method, target, host, the fields it forwards) with the same body framing, ending
/// where kanmon ended it, and the next request kanmon sends on that connection right after
/// it. Where both kanmon and Go accept the client's own bytes, they agree on the method,
/// target, host and framing. Refusals are 400, or 431 only for heads over a limit.
pub(crate) fn check(input: &[u8]) -> Result<(), String> {
    let head = match parse_request(input, LIMIT) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(()),
        Err(HeadError::Malformed(_)) => return Ok(()),
        Err(HeadError::TooLarge) => {
            let lines = input.iter().filter(|&&b| b == b'\n').count();
            return if lines > MAX_REQUEST_HEADERS || input.len() + lines >= LIMIT {
                Ok(())
            } else {
                Err(format!(
                    "431 for a head of {lines} lines, {} bytes",
                    input.len()
                ))
            };
        }
    };
    let host = head.host.clone().map(|r| &input[r]);
    // Only a host naming the connection's deployment is routed; any other is answered 421 by
    // the edge itself (`routing`), so names that cannot be a deployment's end here.
    let routable = |h: &[u8]| {
        !h.is_empty()
            && h.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if host.is_some_and(|h| !routable(h)) {
        return Ok(());
    }
    let mut forwarded = Vec::new();
    write_upstream_request(input, &head, Some([192, 0, 2, 7].into()), &mut forwarded);
    let head_len = forwarded.len();
    let mut body = Body::new(head.body, LIMIT);
    let Ok(used) = body.take(&input[head.len..]) else {
        return Ok(()); // 400 before anything reaches the node
    };
    forwarded.extend_from_slice(&input[head.len..head.len + used]);
    let complete = body.is_done();
    let next = sentinel();
    if complete {
        forwarded.extend_from_slice(&next);
    }
    // A target the node cannot decode (`/%zz`) is its own 400 and close: the edge passes
    // targets on as they are, and no framing depends on them.
    if read_request(&forwarded, false) == Err(Refused("invalid URL escape")) {
        return Ok(());
    }
    let go = read_request(&forwarded, false).map_err(|e| {
        format!(
            "Go refuses the forwarded head {:?}: {e:?}",
            lossy(&forwarded[..head_len])
        )
    })?;
    let kanmon_method = request_line(input)
        .split(|&b| b == b' ')
        .next()
        .unwrap_or(b"");
    let same = |what: &str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{what} differs: kanmon read {:?} and forwarded {:?}; Go read {go:?}",
                lossy(input),
                lossy(&forwarded)
            ))
        }
    };
    same("head length", go.len == head_len)?;
    same("method", go.method == kanmon_method)?;
    same("framing", go.body == head.body)?;
    same("host", go.host.as_deref().map(without_port) == host)?;
    same(
        "target form",
        go.target.starts_with(b"/") || go.target == b"*",
    )?;
    // HTTP/1.1 goes as HTTP/1.1 on a connection the node keeps; HTTP/1.0 as HTTP/1.0.
    same("version", go.minor == u8::from(!head.http10))?;
    same("keep-alive", head.http10 || head.websocket || !go.close)?;
    if complete && !head.http10 && !head.websocket {
        // The body ends where kanmon ended it: the next bytes are kanmon's next request.
        let end = match go.body {
            Framing::Empty => Some(head_len),
            Framing::Length(n) => usize::try_from(n).ok().map(|n| head_len + n),
            Framing::Chunked => lenient_end(&forwarded[head_len..]).map(|n| head_len + n),
            Framing::UntilClose => None,
        };
        same("body end", end == Some(forwarded.len() - next.len()))?;
        let after = read_request(
            &forwarded[forwarded.len() - next.len()..],
            go.method == b"POST",
        );
        same(
            "next request",
            after.is_ok_and(|n| n.len == next.len() && n.target == b"/__next"),
        )?;
    }
    // Kanmon and Go on the client's own bytes.
    let Ok(original) = read_request(input, false) else {
        return Ok(());
    };
    same("method (client bytes)", original.method == kanmon_method)?;
    same("framing (client bytes)", original.body == head.body)?;
    same(
        "host (client bytes)",
        original.host.as_deref().map(without_port) == host,
    )?;
    same("target (client bytes)", original.origin == go.target)?;
    // Every field the node gets is one the client sent, in order, unless the edge adds it.
    let mut sent = original.fields.iter();
    for field in go
        .fields
        .iter()
        .filter(|(n, _)| !EDGE_FIELDS.contains(&n.as_str()))
    {
        let upgrade = head.websocket && field == &("connection".to_string(), b"upgrade".to_vec());
        same("forwarded fields", upgrade || sent.any(|f| f == field))?;
    }
    for framing in ["content-length", "transfer-encoding"] {
        let count =
            |fields: &[(String, Vec<u8>)]| fields.iter().filter(|(n, _)| n == framing).count();
        same(framing, count(&go.fields) == count(&original.fields))?;
    }
    Ok(())
}

/// The request line of a head, after the empty lines a parser may skip.
fn request_line(input: &[u8]) -> &[u8] {
    let start = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(input.len());
    let rest = &input[start..];
    let end = rest
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The next request kanmon sends on the same node connection, as kanmon writes it.
fn sentinel() -> Vec<u8> {
    let raw = b"GET /__next HTTP/1.1\r\nHost: next.z.kanmon.test\r\n\r\n";
    let mut out = Vec::new();
    if let Ok(Some(head)) = parse_request(raw, LIMIT) {
        write_upstream_request(raw, &head, None, &mut out);
    }
    out
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// The same file as `chunked_tests`' copy (one reference parser, two test modules).
#[allow(dead_code, unreachable_pub, clippy::duplicate_mod)]
#[path = "../../../fuzz/fuzz_targets/lenient_chunked.rs"]
mod lenient_chunked;
use lenient_chunked::lenient_end;
