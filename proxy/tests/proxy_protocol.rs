//! PROXY protocol over real sockets: v1 and v2 headers written before a rustls handshake
//! through the running edge. The trusted balancer is 127.0.0.2 (every 127/8 address is
//! loopback on Linux); clients on 127.0.0.1 are untrusted. The node sees the carried address
//! in `X-Forwarded-For` over HTTP/1.1 and h2, the per-client limit keys on it, and every bad,
//! missing, misplaced or late header closes the connection and is counted by reason.

mod common;

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kanmon_proxy::proxy_protocol::{encode, Addresses};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};
use tokio_rustls::{client::TlsStream, TlsConnector};

const BALANCER: &str = "127.0.0.2";
const UNTRUSTED: &str = "127.0.0.1";
const DEADLINE: &str = "2s";

/// A node answering every request with the `X-Forwarded-For` it got (or `-`).
async fn xff_node() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                    let xff = req
                        .headers()
                        .get_all("x-forwarded-for")
                        .iter()
                        .map(|v| v.to_str().unwrap_or("?").to_string())
                        .collect::<Vec<_>>()
                        .join("|");
                    let body = if xff.is_empty() { "-".into() } else { xff };
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ended = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn proxy(listen: &str, limits: &str) -> TestProxy {
    let node = xff_node().await;
    TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node, None, "ready")]),
        listen_extra: listen.into(),
        limits_extra: limits.into(),
        ..Opts::default()
    })
    .await
}

fn pp_listen(versions: &str) -> String {
    format!(
        "proxy_protocol = \"{versions}\"\ntrusted_proxies = [\"{BALANCER}/32\"]\nproxy_protocol_timeout = \"{DEADLINE}\"\n"
    )
}

/// A TCP connection to the proxy from `from` (a loopback address).
async fn connect_from(proxy: &TestProxy, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(proxy.tls_addr).await.unwrap()
}

/// A connection from `from` that writes `header` and then does a TLS handshake (ALPN `alpn`).
async fn tls_after(
    proxy: &TestProxy,
    from: &str,
    header: &[u8],
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut tcp = connect_from(proxy, from).await;
    tcp.write_all(header).await?;
    let name = ServerName::try_from(ALPHA.to_string()).unwrap();
    let connect = TlsConnector::from(proxy.client_config(&[alpn])).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(20), connect)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// One GET over `tls` (h2 when ALPN says so): the body, which the node sets to the
/// `X-Forwarded-For` it saw.
async fn forwarded_for(tls: TlsStream<TcpStream>) -> String {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://{ALPHA}/xff"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/xff")
            .header("host", ALPHA)
            .header("x-forwarded-for", "6.6.6.6")
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.unwrap()
    };
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn client(ip: &str, port: u16) -> Addresses {
    Addresses {
        source: SocketAddr::new(ip.parse().unwrap(), port),
        destination: SocketAddr::new(IpAddr::from([198, 51, 100, 1]), 443),
    }
}

/// Whether the proxy closes `stream` (EOF or reset) within a generous bound.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // Bytes from the proxy before the close (none are expected; keep reading).
            Ok(Ok(_)) => continue,
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn errors(reason: &str) -> String {
    format!(r#"kanmon_proxy_protocol_errors_total{{reason="{reason}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carried_address_reaches_the_node_over_http1_and_h2() {
    let proxy = proxy(&pp_listen("v1+v2"), "").await;
    let v4 = client("203.0.113.7", 50000);
    let v6 = client("2001:db8::7", 50001);
    let v1_text = b"PROXY TCP4 203.0.113.9 198.51.100.1 50002 443\r\n".to_vec();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "v2 IPv4",
            encode::v2(Some(v4), &[(0x04, b"noop")]),
            "203.0.113.7",
        ),
        ("v2 IPv6", encode::v2(Some(v6), &[]), "2001:db8::7"),
        ("v1 TCP4", v1_text, "203.0.113.9"),
        ("v1 TCP6", encode::v1(Some(v6)), "2001:db8::7"),
    ];
    for (name, header, want) in &cases {
        for alpn in [&b"http/1.1"[..], b"h2"] {
            let tls = tls_after(&proxy, BALANCER, header, alpn).await.unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
            assert_eq!(
                forwarded_for(tls).await,
                *want,
                "{name} over {}",
                String::from_utf8_lossy(alpn)
            );
        }
    }
    // LOCAL (the balancer's own health check): the connection is the balancer's.
    let tls = tls_after(&proxy, BALANCER, &encode::v2(None, &[]), b"http/1.1")
        .await
        .unwrap();
    assert_eq!(forwarded_for(tls).await, BALANCER);
    // An untrusted client without a header is served under its own address.
    let tls = tls_after(&proxy, UNTRUSTED, b"", b"h2").await.unwrap();
    assert_eq!(forwarded_for(tls).await, UNTRUSTED);
    for reason in ["missing", "untrusted", "malformed", "timeout"] {
        assert_eq!(proxy.metric(&errors(reason)).await, 0.0, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misplaced_and_missing_headers_are_refused_and_counted() {
    let proxy = proxy(&pp_listen("v1+v2"), "").await;
    // A client outside trusted_proxies cannot claim an address.
    let header = encode::v2(Some(client("203.0.113.7", 1)), &[]);
    assert!(tls_after(&proxy, UNTRUSTED, &header, b"http/1.1")
        .await
        .is_err());
    assert!(tls_after(&proxy, UNTRUSTED, b"PROXY UNKNOWN\r\n", b"h2")
        .await
        .is_err());
    assert_eq!(proxy.metric_reaches(&errors("untrusted"), 2.0).await, 2.0);
    // The trusted balancer must send one.
    assert!(tls_after(&proxy, BALANCER, b"", b"http/1.1").await.is_err());
    assert_eq!(proxy.metric_reaches(&errors("missing"), 1.0).await, 1.0);
    assert_eq!(
        proxy
            .metric(r#"kanmon_tls_handshake_failures_total{reason="protocol"}"#)
            .await,
        0.0,
        "refused before any TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_truncated_oversized_and_late_headers_close_the_connection() {
    let proxy = proxy(&pp_listen("v2"), "").await;
    let good = encode::v2(Some(client("203.0.113.7", 1)), &[]);
    let mut oversized = good[..16].to_vec();
    oversized[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let mut bad_signature = good.clone();
    bad_signature[11] = b'X';
    let mut malformed = good.clone();
    malformed[12] = 0x31; // version 3
    let cases: [(&str, &[u8]); 5] = [
        ("oversized", &oversized),
        ("bad_signature", &bad_signature),
        ("malformed", &malformed),
        (
            "v1_disabled",
            b"PROXY TCP4 203.0.113.7 198.51.100.1 1 443\r\n",
        ),
        ("missing", &[0x16, 0x03, 0x01, 0x00, 0x05]),
    ];
    for (reason, bytes) in cases {
        let mut tcp = connect_from(&proxy, BALANCER).await;
        tcp.write_all(bytes).await.unwrap();
        assert!(closed(&mut tcp).await, "{reason}: not closed");
        assert_eq!(
            proxy.metric_reaches(&errors(reason), 1.0).await,
            1.0,
            "{reason}"
        );
    }
    // Half a header, then the balancer's side closes.
    let mut tcp = connect_from(&proxy, BALANCER).await;
    tcp.write_all(&good[..20]).await.unwrap();
    tcp.shutdown().await.unwrap();
    assert!(closed(&mut tcp).await, "truncated: not closed");
    assert_eq!(proxy.metric_reaches(&errors("truncated"), 1.0).await, 1.0);
    // A silent trusted peer, and one that stops half-way, are cut at the deadline.
    let mut silent = connect_from(&proxy, BALANCER).await;
    let mut stalled = connect_from(&proxy, BALANCER).await;
    stalled.write_all(&good[..10]).await.unwrap();
    assert!(
        closed(&mut silent).await,
        "a silent peer holds its connection"
    );
    assert!(
        closed(&mut stalled).await,
        "a stalled peer holds its connection"
    );
    assert_eq!(proxy.metric_reaches(&errors("timeout"), 2.0).await, 2.0);
    // None of this stopped the listener.
    let tls = tls_after(&proxy, BALANCER, &good, b"http/1.1")
        .await
        .unwrap();
    assert_eq!(forwarded_for(tls).await, "203.0.113.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_limit_keys_on_the_carried_address() {
    let proxy = proxy(
        &pp_listen("v2"),
        "max_connections_per_client = 1\nmax_handshakes_per_client = 0\nexempt_loopback = false",
    )
    .await;
    let first = encode::v2(Some(client("203.0.113.20", 1)), &[]);
    let held = tls_after(&proxy, BALANCER, &first, b"http/1.1")
        .await
        .unwrap();
    // The same client again, through the same balancer: past its limit of one.
    assert!(tls_after(&proxy, BALANCER, &first, b"http/1.1")
        .await
        .is_err());
    let series = r#"kanmon_connections_refused_total{reason="client_connections"}"#;
    assert_eq!(proxy.metric_reaches(series, 1.0).await, 1.0);
    // The log names the client, not the balancer (the line follows the count at once).
    let mut logged = false;
    for _ in 0..100 {
        let log = without_colours(&proxy.log());
        if log.contains("connection refused before the TLS handshake") {
            assert!(!log.contains("client=127.0.0.2"), "{log}");
            logged = log.contains("client=203.0.113.20");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged, "the refusal is logged under the carried address");
    // Another client behind the same balancer has its own place.
    let other = encode::v2(Some(client("203.0.113.21", 2)), &[]);
    let tls = tls_after(&proxy, BALANCER, &other, b"h2").await.unwrap();
    assert_eq!(forwarded_for(tls).await, "203.0.113.21");
    assert_eq!(proxy.metric(series).await, 1.0);
    drop(held);
}

/// The console allow-list is checked against the address the PROXY protocol header carried,
/// not the balancer's: the balancer's own address (loopback) is outside the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_allow_list_sees_the_carried_client_address() {
    let node = kanmon_bench::node::spawn_node("alpha-0").await.unwrap();
    let nodes = format!(
        "[[deployment]]\ninstance = \"alpha\"\nzone = \"us-east1\"\nconsole_allow = [\"203.0.113.0/24\"]\nnodes = [\n  {{ id = \"alpha-0\", addr = \"{}\", console = \"{}\" }},\n]\n",
        node.addr(),
        node.console_addr().unwrap()
    );
    let proxy = TestProxy::start(Opts {
        nodes,
        listen_extra: pp_listen("v1+v2"),
        ..Opts::default()
    })
    .await;
    let console_get = |header: Vec<u8>| {
        let proxy = &proxy;
        async move {
            let mut tcp = connect_from(proxy, BALANCER).await;
            tcp.write_all(&header).await.unwrap();
            let name = ServerName::try_from(ALPHA_CONSOLE.to_string()).unwrap();
            let tls = TlsConnector::from(proxy.client_config(&[b"http/1.1"]))
                .connect(name, tcp)
                .await
                .unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("/")
                .header("host", ALPHA_CONSOLE)
                .body(Empty::<Bytes>::new())
                .unwrap();
            send.send_request(req).await.unwrap().status()
        }
    };
    let inside = console_get(encode::v1(Some(client("203.0.113.9", 4000)))).await;
    assert_eq!(inside, 200);
    let outside = console_get(encode::v2(Some(client("198.51.100.9", 4000)), &[])).await;
    assert_eq!(outside, 403);
    assert_eq!(node.stats().console_requests(), 1);
}
