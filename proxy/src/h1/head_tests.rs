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
    /// A bare LF, a bare CR or a control byte put anywhere into a well-formed head makes
    /// it a refused head, never one that parses.
    #[test]
    fn a_stray_line_end_or_control_byte_anywhere_is_refused(
        extra in proptest::collection::vec(("x-[a-z]{1,10}", "[ -~]{0,20}"), 0..4),
        at in any::<prop::sample::Index>(),
        stray in prop::sample::select(vec![b'\n', b'\r', 0u8, 1, 0x1b, 0x7f]),
    ) {
        let mut raw = "POST /p HTTP/1.1\r\nhost: a.z.kanmon.test\r\n".to_string();
        for (k, v) in &extra {
            raw.push_str(&format!("{k}: {}\r\n", v.trim()));
        }
        raw.push_str("content-length: 5\r\n\r\n");
        let mut bytes = raw.into_bytes();
        // Anywhere before the head's last byte: a LF put just before the final LF makes
        // `\r\n\r\n` + a first body byte, a well-formed head.
        let at = at.index(bytes.len() - 1);
        bytes.insert(at, stray);
        let parsed = parse_request(&bytes, 16 * 1024);
        prop_assert!(!matches!(parsed, Ok(Some(_))), "{:?} parsed: {:?}", String::from_utf8_lossy(&bytes), parsed);
    }
}

fn req(raw: &str) -> RequestHead {
    parse_request(raw.as_bytes(), 8192).unwrap().unwrap()
}

#[test]
fn a_plain_get_keeps_alive_and_names_its_host() {
    let raw = "GET /v2/healthcheck?x=1 HTTP/1.1\r\nHost: alpha.us-east1.kanmon.test:8443\r\n\r\n";
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
fn heads_another_parser_could_read_differently_are_400() {
    for raw in [
        // Bare LF / bare CR in the request line, a field line, the end of the head.
        "GET / HTTP/1.1\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: 1\rY: 2\r\n\r\n",
        "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        // NUL and control bytes in values.
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
        // obs-fold, and whitespace before the first field.
        "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\tTransfer-Encoding: chunked\r\n\r\n",
        // A second Host, TE on HTTP/1.0, Connection naming a framing header.
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close, Transfer-Encoding\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\n",
        // TE.TE obfuscations.
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        // Targets in no known form.
        "GET a.z.kanmon.test/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET ftp://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(
            matches!(
                parse_request(raw.as_bytes(), 8192),
                Err(HeadError::Malformed(_))
            ),
            "{raw:?}: {:?}",
            parse_request(raw.as_bytes(), 8192)
        );
    }
    // Still fine: tabs and obs-text inside values, `OPTIONS *`, TE in mixed case.
    req("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb é\r\n\r\n");
    req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n");
    assert_eq!(head.body, Framing::Chunked);
}

#[test]
fn absolute_form_names_the_host_in_any_case_and_replaces_host_for_the_node() {
    let raw = "GET HTTP://B.z.kanmon.test:8443/p?q HTTP/1.1\r\nHost: a.z.kanmon.test\r\n\r\n";
    let head = req(raw);
    assert!(head.absolute_form);
    assert_eq!(&raw[head.host.clone().unwrap()], "B.z.kanmon.test");
    let mut out = Vec::new();
    write_upstream_request(raw.as_bytes(), &head, None, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET /p?q HTTP/1.1\r\nhost: B.z.kanmon.test\r\nx-forwarded-proto: https\r\n\r\n"
    );
}

#[test]
fn headers_named_in_connection_and_client_forwarding_headers_stay_behind() {
    let raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret, Keep-Alive\r\nX-Secret: 1\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\nX-Kept: 2\r\n\r\n";
    let head = req(raw);
    let mut out = Vec::new();
    write_upstream_request(
        raw.as_bytes(),
        &head,
        Some("127.0.0.9".parse().unwrap()),
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET / HTTP/1.1\r\nHost: a\r\nX-Kept: 2\r\nx-forwarded-for: 127.0.0.9\r\nx-forwarded-proto: https\r\n\r\n"
    );
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
        "GET /p?q=1 HTTP/1.1\r\nAccept: */*\r\nhost: a.z.kanmon.test\r\nx-forwarded-for: 127.0.0.9\r\nx-forwarded-proto: https\r\n\r\n"
    );
    let raw = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
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
fn an_absolute_form_target_with_a_query_and_no_path_keeps_its_query() {
    // `http://host?q=1` is path "" and query "q=1" (RFC 3986 §3): its origin form is `/?q=1`
    // (RFC 9112 §3.2.1: an empty path is sent as `/`), which is what Go reads it as.
    for (target, origin) in [
        ("http://a.z.kanmon.test?q=1", "/?q=1"),
        ("http://a.z.kanmon.test:8443?q=1&r=/x", "/?q=1&r=/x"),
        ("http://a.z.kanmon.test?", "/?"),
        ("http://a.z.kanmon.test", "/"),
        ("http://a.z.kanmon.test/p?q=1", "/p?q=1"),
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: a.z.kanmon.test\r\n\r\n");
        let head = req(&raw);
        let mut out = Vec::new();
        write_upstream_request(raw.as_bytes(), &head, None, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with(&format!("GET {origin} HTTP/1.1\r\n")),
            "{target} became {out:?}"
        );
    }
}

#[test]
fn a_content_length_over_2_pow_63_minus_1_is_refused() {
    // RFC 9110 §8.6: a length that cannot be represented is an error (Go's limit is
    // 2^63-1; a u64 would hold 2^63..10^19-1 and frame a body Go refuses).
    let head = |cl: &str| {
        parse_request(
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n").as_bytes(),
            8192,
        )
    };
    assert_eq!(
        head("9223372036854775807").unwrap().unwrap().body,
        Framing::Length(i64::MAX as u64)
    );
    for cl in [
        "9223372036854775808",
        "9999999999999999999",
        "18446744073709551615",
    ] {
        assert_eq!(
            head(cl),
            Err(HeadError::Malformed("bad Content-Length")),
            "{cl}"
        );
    }
    let response = |cl: &str| {
        parse_response(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n").as_bytes(),
            false,
            8192,
        )
    };
    assert!(response("9223372036854775807").is_ok());
    assert!(response("9223372036854775808").is_err());
}
