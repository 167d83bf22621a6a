//! TLS session resumption at the edge: a reconnecting client resumes with the ticket the proxy
//! sent, a ticket from another proxy process is refused (full handshake, counted), and with
//! tickets turned off nothing is issued or resumed. Real rustls clients, real handshakes.

mod common;

use std::sync::Arc;

use common::*;
use kanmon_bench::node::spawn_node;
use rustls::{ClientConfig, HandshakeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TICKETS: &str = "kanmon_tls_session_tickets_total";

fn tickets(event: &str) -> String {
    format!(r#"{TICKETS}{{event="{event}"}}"#)
}

/// One HTTP/1.1 request on a fresh TLS connection made with `config` (whose session cache
/// carries over between calls): how the handshake went, and the response's status line. The
/// response is read to the end, so the session tickets sent after the handshake are taken in.
async fn request(proxy: &TestProxy, config: &Arc<ClientConfig>) -> (HandshakeKind, String) {
    let tcp = TcpStream::connect(proxy.tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(ALPHA.to_string()).unwrap();
    let mut tls = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    let head = format!("GET /healthcheck HTTP/1.1\r\nHost: {ALPHA}\r\nConnection: close\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    (kind, text.lines().next().unwrap_or_default().to_owned())
}

/// A client config (default session cache) trusting the test CAs of `proxies`.
fn client_trusting(proxies: &[&TestProxy]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for proxy in proxies {
        roots.roots.extend(proxy.roots().roots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn proxy_with(node: std::net::SocketAddr, tls_extra: &str) -> TestProxy {
    TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node, None, "ready")]),
        tls_extra: tls_extra.to_owned(),
        ..Opts::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_resumes_and_a_foreign_ticket_gets_a_full_handshake() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = proxy_with(n0.addr(), "").await;
    // A second proxy process (a restart, another replica) with its own test CA.
    let other = proxy_with(n0.addr(), "").await;
    // One client trusting both, with one session cache (rustls keeps tickets per server name).
    let client = client_trusting(&[&proxy, &other]);

    let (first, status) = request(&proxy, &client).await;
    assert_eq!(first, HandshakeKind::Full);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (second, status) = request(&proxy, &client).await;
    assert_eq!(second, HandshakeKind::Resumed, "the ticket was not used");
    assert_eq!(
        status, "HTTP/1.1 200 OK",
        "a resumed connection is routed the same"
    );
    let (third, _) = request(&proxy, &client).await;
    assert_eq!(
        third,
        HandshakeKind::Resumed,
        "a resumed handshake brings a new ticket"
    );
    assert_eq!(proxy.metric(&tickets("accepted")).await, 2.0);
    assert_eq!(
        proxy.metric(&tickets("issued")).await,
        3.0,
        "one per handshake"
    );
    assert_eq!(proxy.metric(&tickets("rejected")).await, 0.0);

    // The other process cannot open this one's tickets: the client's offer is refused and
    // the handshake is a full one, not a failure.
    let (kind, status) = request(&other, &client).await;
    assert_eq!(kind, HandshakeKind::Full);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(other.metric(&tickets("rejected")).await, 1.0);
    assert_eq!(other.metric(&tickets("accepted")).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tickets_off_every_handshake_is_full() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = proxy_with(n0.addr(), "session_tickets = 0").await;
    let client = proxy.client_config(&[b"http/1.1"]);
    for _ in 0..2 {
        let (kind, status) = request(&proxy, &client).await;
        assert_eq!(kind, HandshakeKind::Full);
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    assert_eq!(proxy.metric(&tickets("issued")).await, 0.0);
    assert_eq!(proxy.metric(&tickets("accepted")).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_key_file_resume_each_others_sessions() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("ticket.keys");
    std::fs::write(
        &file,
        format!("# shared by the replicas\n{}\n", "3c".repeat(32)),
    )
    .unwrap();
    let extra = format!("ticket_key_file = \"{}\"", file.display());
    let a = proxy_with(n0.addr(), &extra).await;
    let b = proxy_with(n0.addr(), &extra).await;
    let client = client_trusting(&[&a, &b]);

    assert_eq!(request(&a, &client).await.0, HandshakeKind::Full);
    // The ticket from replica a opens on replica b.
    let (kind, status) = request(&b, &client).await;
    assert_eq!(kind, HandshakeKind::Resumed);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(b.metric(&tickets("accepted")).await, 1.0);

    // A broken key file on replica b's next read: the keys in use stay, the error is counted.
    std::fs::write(&file, "not a key\n").unwrap();
    let errors = r#"kanmon_tls_ticket_key_errors_total"#;
    let mut counted = false;
    for _ in 0..200 {
        if b.metric(errors).await >= 1.0 && a.metric(errors).await >= 1.0 {
            counted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(counted, "broken key file not noticed; log:\n{}", b.log());
    assert_eq!(request(&a, &client).await.0, HandshakeKind::Resumed);
}
