//! Request smuggling through the real TLS edge against a node that parses like Go's
//! `net/http` (`common::lenient_node`): for each classic family the client sends raw bytes
//! that hide a second request (`/smuggled`) from a strict parser; the edge must refuse or
//! normalise them so the node never parses a request the client did not send as one. Each
//! case also checks the client's answer and that the edge serves the next connection.

mod common;

use std::time::Duration;

use common::{lenient_node::LenientNode, *};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request the smuggled one hides behind: `POST /legit-{n}` to alpha, `{headers}` then
/// `{rest}` (the body and whatever is meant to follow it).
fn legit(n: usize, headers: &str, rest: &str) -> Vec<u8> {
    format!("POST /legit-{n} HTTP/1.1\r\nHost: {ALPHA}\r\n{headers}\r\n{rest}").into_bytes()
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: alpha.us-east1.kanmon.test\r\n\r\n";

/// Every case: a name, the raw bytes, the status the client must get.
fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let s = SMUGGLED;
    let chunked = "Transfer-Encoding: chunked\r\n";
    let mut v: Vec<(&'static str, Vec<u8>, u16)> = Vec::new();
    let mut add = |name, bytes: Vec<u8>, status| v.push((name, bytes, status));
    // CL.TE and TE.CL.
    add(
        "CL.TE",
        legit(
            0,
            &format!("Content-Length: 5\r\n{chunked}"),
            &format!("0\r\n\r\n{s}"),
        ),
        400,
    );
    add(
        "TE.CL",
        legit(
            1,
            &format!("{chunked}Content-Length: 4\r\n"),
            &format!("5c\r\n{s}\r\n0\r\n\r\n"),
        ),
        400,
    );
    // TE.TE obfuscation (with a Content-Length the node would fall back to).
    for (name, te) in [
        ("TE xchunked", "Transfer-Encoding: xchunked\r\n"),
        (
            "TE chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        (
            "TE identity, chunked",
            "Transfer-Encoding: identity, chunked\r\n",
        ),
        (
            "TE with a leading space line",
            " Transfer-Encoding: chunked\r\n",
        ),
        ("TE space before colon", "Transfer-Encoding : chunked\r\n"),
        ("TE tab before colon", "Transfer-Encoding\t: chunked\r\n"),
        (
            "TE twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
        ),
        ("TE upper case", "TRANSFER-ENCODING: CHUNKED\r\n"),
        ("TE after a tab", "Transfer-Encoding:\tchunked\r\n"),
        (
            "TE hidden by a bare LF",
            "X: y\nTransfer-Encoding: chunked\r\n",
        ),
        ("TE obs-folded", "X: y\r\n Transfer-Encoding: chunked\r\n"),
    ] {
        add(
            name,
            legit(
                2,
                &format!("Content-Length: 5\r\n{te}"),
                &format!("0\r\n\r\n{s}"),
            ),
            400,
        );
    }
    // Duplicate and conflicting lengths.
    add(
        "CL twice, conflicting",
        legit(
            3,
            "Content-Length: 5\r\nContent-Length: 66\r\n",
            &format!("hello{s}"),
        ),
        400,
    );
    add(
        "CL list",
        legit(3, "Content-Length: 5, 66\r\n", &format!("hello{s}")),
        400,
    );
    add(
        "CL with a sign",
        legit(3, "Content-Length: +5\r\n", &format!("hello{s}")),
        400,
    );
    add(
        "CL twice, equal",
        legit(4, "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        200,
    );
    add(
        "Connection names Content-Length",
        legit(3, "Content-Length: 61\r\nConnection: content-length\r\n", s),
        400,
    );
    add("TE on HTTP/1.0", format!("POST /legit-5 HTTP/1.0\r\nHost: {ALPHA}\r\n{chunked}Content-Length: 5\r\n\r\n0\r\n\r\n{s}").into_bytes(), 400);
    // Bare LF and bare CR in every position.
    add(
        "bare LF ending the request line",
        format!("POST /legit-6 HTTP/1.1\nHost: {ALPHA}\r\nContent-Length: 5\r\n\r\nhello")
            .into_bytes(),
        400,
    );
    add("bare LF ending a field line", legit(6, "X: y\n", ""), 400);
    add(
        "bare LF ending the head",
        format!("POST /legit-6 HTTP/1.1\r\nHost: {ALPHA}\r\n\n{s}").into_bytes(),
        400,
    );
    add(
        "bare CR in the request line",
        format!("POST /legit-6 HTTP/1.1\rHost: {ALPHA}\r\n\r\n").into_bytes(),
        400,
    );
    add(
        "bare CR in a field",
        legit(6, "X: y\rTransfer-Encoding: chunked\r\n", ""),
        400,
    );
    add(
        "bare LF in a chunk size line",
        legit(7, chunked, &format!("5\nhello\r\n0\r\n\r\n{s}")),
        400,
    );
    add(
        "bare LF in a chunk extension",
        legit(7, chunked, &format!("5;a=b\nhello\r\n0\r\n\r\n{s}")),
        400,
    );
    add(
        "bare LF after chunk data",
        legit(7, chunked, &format!("5\r\nhello\n0\r\n\r\n{s}")),
        400,
    );
    add(
        "bare LF in a trailer (the reported case)",
        legit(7, chunked, &format!("0\r\nX: y\n\r\n{s}")),
        400,
    );
    add(
        "bare LF ending the trailers",
        legit(7, chunked, &format!("0\r\nX: y\r\n\n{s}")),
        400,
    );
    add(
        "bare LF as the last line",
        legit(7, chunked, &format!("0\r\n\n{s}")),
        400,
    );
    add(
        "bare CR in a chunk size line",
        legit(7, chunked, &format!("5\rhello\r\n0\r\n\r\n{s}")),
        400,
    );
    add(
        "bare CR in a trailer",
        legit(7, chunked, &format!("0\r\nX: y\r\r\n\r\n{s}")),
        400,
    );
    // Oversized and overflowing chunk sizes.
    add(
        "chunk size of 17 digits",
        legit(
            8,
            chunked,
            &format!("10000000000000005\r\nhello\r\n0\r\n\r\n{s}"),
        ),
        400,
    );
    add(
        "chunk size with leading zeros",
        legit(
            8,
            chunked,
            &format!("00000000000000000005\r\nhello\r\n0\r\n\r\n{s}"),
        ),
        400,
    );
    add(
        "chunk size 2^64 + 5",
        legit(
            8,
            chunked,
            &format!("fffffffffffffffff\r\nhello\r\n0\r\n\r\n{s}"),
        ),
        400,
    );
    add(
        "chunk data longer than its size",
        legit(8, chunked, &format!("1\r\nhello\r\n0\r\n\r\n{s}")),
        400,
    );
    // NUL and control bytes.
    add("NUL in a field value", legit(9, "X: a\0b\r\n", ""), 400);
    add("VT in a field value", legit(9, "X: a\x0bb\r\n", ""), 400);
    add(
        "NUL in a chunk extension",
        legit(9, chunked, &format!("5;a\0\r\nhello\r\n0\r\n\r\n{s}")),
        400,
    );
    add(
        "NUL in a trailer",
        legit(9, chunked, &format!("0\r\nX: \0\r\n\r\n{s}")),
        400,
    );
    add(
        "a request line as a trailer",
        legit(9, chunked, &format!("0\r\n{s}")),
        400,
    );
    add(
        "obs-fold in a trailer",
        legit(9, chunked, &format!("0\r\nX: y\r\n z\r\n\r\n{s}")),
        400,
    );
    // Targets and hosts naming another deployment.
    add(
        "absolute form naming beta",
        format!("GET https://{BETA}/smuggled HTTP/1.1\r\nHost: {ALPHA}\r\n\r\n").into_bytes(),
        421,
    );
    add(
        "absolute form, scheme in capitals",
        format!("GET HTTPS://{BETA}/smuggled HTTP/1.1\r\nHost: {ALPHA}\r\n\r\n").into_bytes(),
        421,
    );
    add(
        "absolute form with userinfo",
        format!("GET http://{ALPHA}@{BETA}/smuggled HTTP/1.1\r\nHost: {ALPHA}\r\n\r\n")
            .into_bytes(),
        421,
    );
    add(
        "a second Host",
        format!("GET /smuggled HTTP/1.1\r\nHost: {ALPHA}\r\nHost: {BETA}\r\n\r\n").into_bytes(),
        400,
    );
    add(
        "a target in no known form",
        format!("GET {BETA}/smuggled HTTP/1.1\r\nHost: {ALPHA}\r\n\r\n").into_bytes(),
        400,
    );
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // The node (which does not upgrade) answers the upgrade itself; the bytes after it were
    // meant for a tunnel that never opened.
    add(
        "early bytes after a refused upgrade",
        format!("GET /legit-ws HTTP/1.1\r\nHost: {ALPHA}\r\n{ws}\r\n{s}").into_bytes(),
        200,
    );
    add(
        "an upgrade with a body",
        format!("GET /legit-ws HTTP/1.1\r\nHost: {ALPHA}\r\n{ws}Content-Length: 61\r\n\r\n{s}")
            .into_bytes(),
        400,
    );
    v
}

/// Sends `bytes` on a fresh TLS connection and returns what came back before the edge closed
/// (bounded by 10 s; a kept-alive answer is taken once its `ok` body is in).
async fn exchange(proxy: &TestProxy, bytes: &[u8]) -> Vec<u8> {
    let mut tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    tls.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if out.starts_with(b"HTTP/1.1 200") && out.ends_with(b"ok") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_never_parses_a_request_the_client_did_not_send() {
    let node = LenientNode::start().await;
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node.addr, None, "ready")]),
        ..Opts::default()
    })
    .await;
    for (i, (name, bytes, status)) in cases().into_iter().enumerate() {
        let answer = exchange(&proxy, &bytes).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: expected {status}, got {text:?}"
        );
        let smuggled: Vec<_> = node
            .seen()
            .into_iter()
            .filter(|r| !r.target.starts_with("/legit-") && !r.target.starts_with("/after-"))
            .collect();
        assert!(smuggled.is_empty(), "{name}: the node parsed {smuggled:?}");
        assert!(
            node.seen().iter().all(|r| r.host.as_deref() == Some(ALPHA)),
            "{name}: the node saw another host: {:?}",
            node.seen()
        );
        // The edge still serves the next connection.
        let (after, _, body) = proxy.get(ALPHA, ALPHA, &format!("/after-{i}")).await;
        assert_eq!((after, body.as_str()), (200, "ok"), "after {name}");
    }
    let refused = cases().iter().filter(|(_, _, s)| *s == 400).count() as f64;
    assert_eq!(
        proxy
            .metric_reaches(
                r#"kanmon_rejected_requests_total{reason="bad_request"}"#,
                refused
            )
            .await,
        refused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_gives_the_node_its_own_host() {
    let node = LenientNode::start().await;
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node.addr, None, "ready")]),
        ..Opts::default()
    })
    .await;
    // Routed by the target's authority (alpha, the connection's deployment); the node must
    // not get the client's other `Host` as if the edge had let it through.
    let raw =
        format!("GET HTTP://{ALPHA}/p HTTP/1.1\r\nHost: {BETA}\r\nForwarded: for=6.6.6.6\r\n\r\n");
    let answer = exchange(&proxy, raw.as_bytes()).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let seen = node.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/p");
    assert_eq!(seen[0].host.as_deref(), Some(ALPHA));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_forwarding_headers_never_reach_the_node_over_either_http_version() {
    let node = LenientNode::start().await;
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node.addr, None, "ready")]),
        ..Opts::default()
    })
    .await;
    let forged = [
        ("forwarded", "for=6.6.6.6;proto=http"),
        ("x-real-ip", "6.6.6.6"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "beta.us-east1.kanmon.test"),
        ("x-forwarded-proto", "http"),
        ("x-secret", "hop"),
    ];
    // HTTP/1.1, with `x-secret` named in `Connection` (hop-by-hop by declaration).
    let mut raw = format!("GET /legit-h1 HTTP/1.1\r\nHost: {ALPHA}\r\nConnection: x-secret\r\n");
    for (k, v) in forged {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let answer = exchange(&proxy, raw.as_bytes()).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // h2 (pingora's path).
    let tls = proxy.tls(ALPHA, &[b"h2"]).await.unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut req = http::Request::get(format!("https://{ALPHA}/legit-h2"));
    for (k, v) in &forged[..5] {
        req = req.header(*k, *v);
    }
    let (resp, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);

    let seen = node.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        let got = |name: &str| -> Vec<&str> {
            request
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        for name in ["forwarded", "x-real-ip", "x-forwarded-host", "x-secret"] {
            assert!(
                got(name).is_empty(),
                "{}: {name} reached the node",
                request.target
            );
        }
        assert_eq!(got("x-forwarded-for"), ["127.0.0.1"], "{}", request.target);
        assert_eq!(got("x-forwarded-proto"), ["https"], "{}", request.target);
    }
}
