//! HTTP/1.x response heads from nodes: parsed with `httparse` straight from the read buffer
//! and rewritten for the client in one pass. Sans-io: bytes in, facts and bytes out.

use super::head::{check_line_ends, is_hop_by_hop, parse_length, Framing, MAX_HEADERS};

/// Most header lines accepted from a node (more is answered 502): the edge may add one of its
/// own (`connection: close`), and what it sends a client must stay within what it would
/// itself read (the request side keeps the same rule, `MAX_REQUEST_HEADERS`).
pub const MAX_RESPONSE_HEADERS: usize = MAX_HEADERS - 1;

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
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse("too many header lines")),
        Err(_) => return Err(BadResponse("not an HTTP/1.x response head")),
    };
    if resp.headers.len() > MAX_RESPONSE_HEADERS {
        return Err(BadResponse("too many header lines"));
    }
    // The same line rules as requests: the client's parser must read the head (and so the
    // body's framing) the way the proxy did.
    check_line_ends(&buf[..len]).map_err(BadResponse)?;
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut length = None;
    let mut length_text: &[u8] = b"";
    let mut chunked = false;
    let (mut close, mut keep) = (false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).map_err(|_| BadResponse("bad Content-Length"))?;
            // The request side's rule (`parse_request`): repeated lengths must be one text.
            if length.is_some() && length_text != h.value.trim_ascii() {
                return Err(BadResponse("conflicting Content-Length"));
            }
            length = Some(n);
            length_text = h.value.trim_ascii();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
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
    // A client could frame such a response either way (RFC 9112 §6.3): never passed on.
    if has_te && length.is_some() {
        return Err(BadResponse("both Content-Length and Transfer-Encoding"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(chunked.body, Framing::Chunked);
        assert!(chunked.keep_alive);
        let gzip = p("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!(gzip.body, Framing::UntilClose);
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
    fn responses_a_client_could_frame_differently_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n folded\r\n\r\n",
        ] {
            assert!(
                parse_response(raw.as_bytes(), false, 8192).is_err(),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn what_the_edge_sends_a_client_is_within_what_it_reads_from_a_node() {
        // The edge adds `connection: close` to a connection's last response: a node's head
        // may have one line fewer than the edge's line capacity (`MAX_HEADERS`), so the head
        // the client gets stays within it, as a forwarded request head does.
        let head = |n: usize| -> String {
            let lines: String = (0..n).map(|i| format!("x-{i}: v\r\n")).collect();
            format!("HTTP/1.1 200 OK\r\n{lines}\r\n")
        };
        let most = head(MAX_RESPONSE_HEADERS);
        let parsed = parse_response(most.as_bytes(), false, 1 << 20)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_client_response(most.as_bytes(), &parsed, true, &mut out);
        assert!(out.ends_with(b"connection: close\r\n\r\n"));
        let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let again = httparse::Response::new(&mut lines).parse(&out);
        assert_eq!(again, Ok(httparse::Status::Complete(out.len())));
        for n in [MAX_RESPONSE_HEADERS + 1, MAX_HEADERS + 1] {
            assert_eq!(
                parse_response(head(n).as_bytes(), false, 1 << 20),
                Err(BadResponse("too many header lines")),
                "{n} lines"
            );
        }
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
