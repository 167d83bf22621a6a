//! The demo node over real loopback sockets: HTTP routes, WebSocket echo, gRPC echo, TLS and
//! shutdown with 1001.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kanmon_bench::node::{spawn_node, start_node, NodeConfig};
use kanmon_bench::{certs, tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for any single step, so a broken node fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(10);

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step timed out")
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    bounded(s.read_to_string(&mut out)).await.unwrap();
    out
}

#[tokio::test]
async fn http_routes_name_the_node() -> anyhow::Result<()> {
    let node = spawn_node("alpha-0").await?;
    let health = get(node.addr(), "/healthcheck").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"node":"alpha-0"}"#), "{health}");
    let other = get(node.addr(), "/v2/account?x=1").await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    assert!(
        other.to_ascii_lowercase().contains("x-node-id: alpha-0"),
        "{other}"
    );
    assert!(other.ends_with("alpha-0"), "{other}");
    assert_eq!(node.stats().http_requests(), 2);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn websocket_echoes_and_answers_whoami() -> anyhow::Result<()> {
    let node = spawn_node("alpha-1").await?;
    let tcp = TcpStream::connect(node.addr()).await?;
    let url = format!("ws://{}/ws?token=secret", node.addr());
    let (mut ws, resp) = bounded(tokio_tungstenite::client_async(url, tcp)).await?;
    assert_eq!(resp.headers()["x-node-id"], "alpha-1");

    ws.send(Message::text("hello")).await?;
    assert_eq!(bounded(ws.next()).await.unwrap()?, Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await?;
    assert_eq!(
        bounded(ws.next()).await.unwrap()?,
        Message::binary(vec![1u8, 2, 3])
    );
    ws.send(Message::Ping(Bytes::from_static(b"p"))).await?;
    assert_eq!(
        bounded(ws.next()).await.unwrap()?,
        Message::Pong(Bytes::from_static(b"p"))
    );
    ws.send(Message::text("whoami")).await?;
    assert_eq!(bounded(ws.next()).await.unwrap()?, Message::text("alpha-1"));
    assert_eq!(node.stats().ws_connections(), 1);

    ws.close(None).await?;
    // The node answers the close; the stream then ends.
    while let Some(msg) = bounded(ws.next()).await {
        if msg.is_err() {
            break;
        }
    }
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_room_relays_each_message_to_every_member() -> anyhow::Result<()> {
    let node = spawn_node("alpha-3").await?;
    let join = |room: &'static str| {
        let addr = node.addr();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let url = format!("ws://{addr}/ws?token=t&room={room}");
            anyhow::Ok(bounded(tokio_tungstenite::client_async(url, tcp)).await?.0)
        }
    };
    let (mut a, mut b, mut other) = (join("m1").await?, join("m1").await?, join("m2").await?);
    a.send(Message::binary(vec![7u8; 4])).await?;
    // The sender hears its own message back, as the other member of its room does.
    assert_eq!(
        bounded(a.next()).await.unwrap()?,
        Message::binary(vec![7u8; 4])
    );
    assert_eq!(
        bounded(b.next()).await.unwrap()?,
        Message::binary(vec![7u8; 4])
    );
    // The member of another room hears only its own.
    other.send(Message::text("solo")).await?;
    assert_eq!(bounded(other.next()).await.unwrap()?, Message::text("solo"));

    // A name outside [A-Za-z0-9_-] is refused with 400 before the upgrade.
    let tcp = TcpStream::connect(node.addr()).await?;
    let url = format!("ws://{}/ws?room=no%20spaces", node.addr());
    match bounded(tokio_tungstenite::client_async(url, tcp)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
        }
        other => panic!("expected 400, got {other:?}"),
    }
    drop((a, b, other));
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() -> anyhow::Result<()> {
    let node = spawn_node("alpha-2").await?;
    let tcp = TcpStream::connect(node.addr()).await?;
    let (mut ws, _) = bounded(tokio_tungstenite::client_async(
        format!("ws://{}/ws", node.addr()),
        tcp,
    ))
    .await?;
    // One round trip proves the server side is running before we stop it.
    ws.send(Message::text("x")).await?;
    bounded(ws.next()).await.unwrap()?;
    let addr = node.addr();
    let stopping = tokio::spawn(node.shutdown());
    let frame = match bounded(ws.next()).await.unwrap()? {
        Message::Close(Some(f)) => f,
        other => panic!("expected a close frame, got {other:?}"),
    };
    assert_eq!(frame.code, CloseCode::Away);
    // Let tungstenite reply to the close so the node's drain completes promptly.
    while let Some(Ok(_)) = bounded(ws.next()).await {}
    bounded(stopping).await??;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
    Ok(())
}

#[tokio::test]
async fn grpc_echoes_body_with_status_trailer() -> anyhow::Result<()> {
    let node = spawn_node("alpha-3").await?;
    let tcp = TcpStream::connect(node.grpc_addr().unwrap()).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let body = Bytes::from_static(b"\0\0\0\0\x05hello");
    let req = http::Request::post("http://alpha/nakama.api.Nakama/Healthcheck")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body.clone()))?;
    let resp = bounded(send.send_request(req)).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-node-id"], "alpha-3");
    let collected = bounded(resp.into_body().collect()).await?;
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), body);
    assert_eq!(node.stats().grpc_requests(), 1);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn tls_node_with_test_ca_serves_websocket_by_sni() -> anyhow::Result<()> {
    let host = "alpha.us-east1.kanmon.test";
    let ca = certs::TestCa::generate()?;
    let leaf = ca.issue(&["*.us-east1.kanmon.test"])?;
    let mut cfg = NodeConfig::loopback("alpha-tls");
    cfg.tls = Some(tls::server_config_from_pem(&leaf.cert_pem, &leaf.key_pem)?);
    cfg.grpc_listen = None;
    let node = start_node(cfg).await?;

    let connector =
        tokio_rustls::TlsConnector::from(tls::client_config_from_pem(&ca.pem().cert_pem)?);
    let tcp = TcpStream::connect(node.addr()).await?;
    let name = rustls::pki_types::ServerName::try_from(host)?.to_owned();
    let stream = bounded(connector.connect(name, tcp)).await?;
    let url = format!("wss://{host}/ws");
    let (mut ws, _) = bounded(tokio_tungstenite::client_async(url, stream)).await?;
    ws.send(Message::text("whoami")).await?;
    assert_eq!(
        bounded(ws.next()).await.unwrap()?,
        Message::text("alpha-tls")
    );
    ws.close(None).await?;
    node.shutdown().await?;
    Ok(())
}

#[test]
fn certs_are_written_with_design_names() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kanmon-bench-certs-{}", std::process::id()));
    let hosts = ["alpha.us-east1.kanmon.test", "*.eu-west1.kanmon.test"];
    let (_ca, files) = certs::write_host_certs(&dir, &hosts)?;
    assert!(dir.join("ca.crt").exists() && dir.join("ca.key").exists());
    assert!(dir.join("alpha.us-east1.kanmon.test.crt").exists());
    assert!(dir.join("_.eu-west1.kanmon.test.key").exists());
    // A second run reuses the CA, so old clients keep trusting new leaves.
    let ca_before = std::fs::read_to_string(dir.join("ca.crt"))?;
    let (ca2, _) = certs::write_host_certs(&dir, &["beta.us-east1.kanmon.test"])?;
    assert_eq!(ca2.pem().cert_pem, ca_before);
    let leaf = std::fs::read_to_string(&files[0].cert)?;
    let key = std::fs::read_to_string(&files[0].key)?;
    let _server: Arc<rustls::ServerConfig> = tls::server_config_from_pem(&leaf, &key)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
