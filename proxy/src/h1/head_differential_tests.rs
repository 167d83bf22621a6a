//! The differential property (`head_differential::check`) over request heads built from a
//! grammar of the shapes request smuggling and parser confusion are made of: line ends, empty
//! lines, folding, field names, framing fields, hosts, targets, versions, bodies with a
//! request behind them, and heads over the line limit.

use proptest::prelude::*;

use super::{
    head::MAX_REQUEST_HEADERS,
    head_differential::{check, read_request, GoRefusal},
};

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "GET", "POST", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "CONNECT", "get", "G T",
        "G\x01T", "PRI",
    ])
}

fn target() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/",
        "/v2/rpc?token=x",
        "/p?",
        "/a#b",
        "//a.z.kanmon.test/p",
        "/%zz",
        "/\u{e9}",
        "*",
        "http://a.z.kanmon.test/p?q=1",
        "http://a.z.kanmon.test?q=1",
        "http://a.z.kanmon.test:8443?q=1&r=/x",
        "http://a.z.kanmon.test?",
        "http://a.z.kanmon.test",
        "HTTP://A.z.kanmon.test:8443/p",
        "https://user@a.z.kanmon.test/x",
        "http://u@b.z.kanmon.test@a.z.kanmon.test/",
        "http://a.z.kanmon.test#f",
        "http://a.z.kanmon.test#f/p",
        "http://a.z.kanmon.test:x/",
        "http://[::1]:80/",
        "http:/a",
        "a.z.kanmon.test:443",
        "ftp://a.z.kanmon.test/",
        "/p q",
    ])
}

fn version() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "HTTP/1.1",
        "HTTP/1.1",
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/1.2",
        "HTTP/2.0",
        "http/1.1",
        "HTTP/1.10",
    ])
}

/// Field lines: ordinary, framing (with their near misses), routing, and malformed ones.
fn field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "Host: a.z.kanmon.test",
        "Host: a.z.kanmon.test",
        "host: a.z.kanmon.test:8443",
        "Host: b.z.kanmon.test",
        "Host:",
        "Host: a.z.kanmon.test\u{a0}",
        "Host: a.z.kanmon.test\u{85}",
        "Host: a.z kanmon.test",
        "Content-Length: 5",
        "Content-Length: 5",
        "content-length: 05",
        "Content-Length:  5 ",
        "Content-Length: 0",
        "Content-Length: 9223372036854775807",
        "Content-Length: 9223372036854775808",
        "Content-Length: 18446744073709551615",
        "Content-Length: +5",
        "Content-Length: 5, 5",
        "Content-Length:",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: chunked",
        "transfer-encoding: Chunked ",
        "Transfer-Encoding:\tchunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding: \u{17f}hunked",
        "Connection: close",
        "Connection: keep-alive",
        "Connection: Upgrade",
        "Connection: x-a",
        "Connection: content-length",
        "Upgrade: websocket",
        "Expect: 100-continue",
        "X-Forwarded-For: 6.6.6.6",
        "X-A: 1",
        "x-a: two  words ",
        "X-B: \u{e9}t\u{e9}",
        "X-C: a\x01b",
        "X-D: a\x7f",
        "Bad Name: 1",
        "X-E : 1",
        ": empty name",
        "no colon",
        " folded continuation",
        "\tTransfer-Encoding: chunked",
        "X-F:\ttab",
    ])
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![12 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r"), 1 => Just("\r\r\n")]
}

/// What follows a head: nothing, body bytes of several framings, and requests hidden behind
/// or inside them.
fn after() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "",
        "hello",
        "hello",
        "5\r\nhello\r\n0\r\n\r\n",
        "0\r\n\r\n",
        "5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
        "5\nhello\n0\n\n",
        "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.z.kanmon.test\r\n\r\n",
        "GET /smuggled HTTP/1.1\r\nHost: a.z.kanmon.test\r\n\r\n",
        "hello\r\nGET /smuggled HTTP/1.1\r\nHost: a.z.kanmon.test\r\n\r\n",
        "\r\nGET /smuggled HTTP/1.1\r\nHost: a.z.kanmon.test\r\n\r\n",
    ])
}

/// A request head from the grammar, with the bytes after it.
fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["", "", "", "\r\n", "\n", "\r\n\r\n"]),
        (method(), target(), version(), line_end()),
        proptest::collection::vec((field(), line_end()), 0..8),
        prop_oneof![6 => Just(0usize), 1 => 90usize..102],
        (line_end(), after()),
    )
        .prop_map(|(lead, (m, t, v, end), fields, filler, (last, rest))| {
            let mut raw = format!("{lead}{m} {t} {v}{end}");
            for (f, end) in fields {
                raw.push_str(f);
                raw.push_str(end);
            }
            for i in 0..filler {
                raw.push_str(&format!("x-fill-{i}: v\r\n"));
            }
            raw.push_str(last);
            raw.push_str(rest);
            raw.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// No request kanmon accepts is read differently by a Go node: the smuggling property.
    #[test]
    fn a_go_node_reads_what_kanmon_forwards_as_kanmon_read_it(raw in request()) {
        if let Err(finding) = check(&raw) {
            prop_assert!(false, "{}", finding);
        }
    }

    /// Any bytes at all: the property holds (or kanmon refuses), never a panic.
    #[test]
    fn arbitrary_bytes_hold_the_property(
        raw in proptest::collection::vec(any::<u8>(), 0..300),
        prefix in prop::sample::select(vec!["", "GET / HTTP/1.1\r\nHost: a\r\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"]),
    ) {
        let mut bytes = prefix.as_bytes().to_vec();
        bytes.extend_from_slice(&raw);
        if let Err(finding) = check(&bytes) {
            prop_assert!(false, "{}", finding);
        }
    }
}

/// The reference reader itself reads what Go reads (each row checked against Go's rules).
#[test]
fn the_reference_reader_follows_go() {
    let ok = |raw: &str| read_request(raw.as_bytes(), false).unwrap();
    let refused = |raw: &str| {
        assert!(
            matches!(
                read_request(raw.as_bytes(), false),
                Err(GoRefusal::Refused(_))
            ),
            "{raw:?}: {:?}",
            read_request(raw.as_bytes(), false)
        )
    };
    // Bare LF ends a line; obs-fold joins with one space; TE on HTTP/1.0 is ignored.
    let bare = ok("POST /p HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello");
    assert_eq!(bare.body, super::head::Framing::Length(5));
    assert_eq!(
        bare.len,
        "POST /p HTTP/1.1\nHost: a\nContent-Length: 5\n\n".len()
    );
    let folded = ok("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  2\r\n\r\n");
    assert!(folded.fields.contains(&("x".into(), b"1 2".to_vec())));
    let ten = ok("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(ten.body, super::head::Framing::Length(2));
    assert!(ten.close);
    // TE wins over CL on 1.1; equal duplicate CLs are one, different texts are refused.
    let both =
        ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(both.body, super::head::Framing::Chunked);
    ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length:  3\r\n\r\n");
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 03\r\n\r\n");
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n");
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n");
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
    // Names are tokens; a first field line may not start with whitespace; one Host, valid.
    refused("GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n");
    refused("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n");
    refused("GET / HTTP/1.1\r\n Host: a\r\n\r\n");
    refused("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
    refused("GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    refused("GET / HTTP/1.1\r\n\r\n");
    refused("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n");
    // Leading empty lines only after a POST; an absolute-form target's authority is the host.
    refused("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(read_request(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", true).is_ok());
    let absolute = ok("GET http://b:80?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(absolute.host.as_deref(), Some(&b"b:80"[..]));
    assert_eq!(absolute.origin, b"/?q=1");
    refused("GET http://b#f HTTP/1.1\r\nHost: a\r\n\r\n");
    refused("GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        read_request(b"GET / HTTP/1.1\r\nHost: a\r\n", false),
        Err(GoRefusal::Incomplete)
    );
}

/// Heads over the line limit are 431 and the property's own count agrees.
#[test]
fn a_head_over_the_line_limit_is_431_for_the_property_too() {
    let lines: String = (0..MAX_REQUEST_HEADERS)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{lines}\r\n");
    assert_eq!(check(raw.as_bytes()), Ok(()));
}
