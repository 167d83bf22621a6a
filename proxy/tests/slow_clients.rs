//! Slow peers through the real TLS edge: a client that never reads its response or its
//! WebSocket is cut at `limits.write_timeout` (freeing the node connection and the
//! deployment's slot), and a request body trickled below `limits.min_body_rate` is cut with
//! 408 however regularly its bytes come. Every cut is counted.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{lenient_node::LenientNode, *};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

/// Most bytes the flood node writes on one connection (far more than any socket buffers).
const FLOOD_LIMIT: u64 = 1 << 30;

/// A node that answers `GET /flood` with a 1 GiB body and `GET /ws` with a `101` followed
/// by WebSocket frames, both written as fast as they are taken until the connection breaks;
/// then it reports how many bytes it wrote. Anything else gets `ok`.
async fn flood_node() -> (SocketAddr, mpsc::UnboundedReceiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (answer, piece): (&[u8], Vec<u8>) = if head.starts_with(b"GET /flood ") {
                    (
                        b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n",
                        vec![7u8; 65536],
                    )
                } else if head.starts_with(b"GET /ws") {
                    let mut frame = vec![0x82, 126, 0x10, 0x00];
                    frame.extend_from_slice(&[9u8; 4096]);
                    (
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: x\r\n\r\n",
                        frame,
                    )
                } else {
                    let _answered = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    return;
                };
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                let mut written = 0u64;
                while written < FLOOD_LIMIT {
                    if stream.write_all(&piece).await.is_err() {
                        break;
                    }
                    written += piece.len() as u64;
                }
                let _reported = tx.send(written);
            });
        }
    });
    (addr, rx)
}

async fn proxy_with(node: SocketAddr, limits: &str) -> TestProxy {
    TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node, None, "ready")]),
        limits_extra: limits.into(),
        // One slot: a stuck exchange would hold the deployment's only one.
        max_connections: 1,
        ..Opts::default()
    })
    .await
}

/// Waits (bounded, 60 s) for the flood node to report a broken connection.
async fn flood_ended(rx: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the proxy never cut the client that stopped reading")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_response_is_cut_and_frees_the_node_and_the_slot() {
    let (node, mut ended) = flood_node().await;
    let proxy = proxy_with(node, "write_timeout = \"500ms\"").await;
    let mut client = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    client
        .write_all(format!("GET /flood HTTP/1.1\r\nHost: {ALPHA}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The client reads nothing from here on (and keeps its connection open).
    let written = flood_ended(&mut ended).await;
    assert!(written < FLOOD_LIMIT, "{written}");
    let series = r#"kanmon_connections_cut_total{reason="client_write_timeout"}"#;
    assert_eq!(proxy.metric_reaches(series, 1.0).await, 1.0);
    // The deployment's only slot is free again.
    let (status, _, body) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_never_reads_is_cut() {
    let (node, mut ended) = flood_node().await;
    let proxy = proxy_with(node, "write_timeout = \"500ms\"").await;
    let mut client = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {ALPHA}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    client.write_all(upgrade.as_bytes()).await.unwrap();
    // Reads the 101, then nothing more.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("a 101 within 10 s")
            .unwrap();
        assert!(n > 0, "closed before the 101");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let written = flood_ended(&mut ended).await;
    assert!(written < FLOOD_LIMIT, "{written}");
    let series = r#"kanmon_connections_cut_total{reason="client_write_timeout"}"#;
    assert_eq!(proxy.metric_reaches(series, 1.0).await, 1.0);
    let (status, ..) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(status, 200, "the tunnel's slot is free again");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_below_the_minimum_rate_is_cut_with_408() {
    let node = LenientNode::start().await;
    // A second of grace, then 100 bytes/s; the client sends 20 bytes/s, each byte well
    // within any per-read deadline of the grace's length.
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node.addr, None, "ready")]),
        read_timeout: "1s",
        limits_extra: "min_body_rate = 100".into(),
        ..Opts::default()
    })
    .await;
    let client = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let (mut rx, mut tx) = tokio::io::split(client);
    tx.write_all(
        format!("POST /legit-slow HTTP/1.1\r\nHost: {ALPHA}\r\nContent-Length: 10000\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if tx.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), rx.read_to_end(&mut answer)).await;
    trickle.abort();
    assert!(read.is_ok(), "not cut within 30 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    let series = r#"kanmon_connections_cut_total{reason="slow_body"}"#;
    assert_eq!(proxy.metric_reaches(series, 1.0).await, 1.0);
}
