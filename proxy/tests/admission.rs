//! Handshake admission over real sockets: with one handshake slot, a client stalled half-way
//! through its ClientHello holds it; a second client's handshake waits and is refused at the
//! queue timeout before any TLS work (closed with no ServerHello, counted as
//! `reason="admission"`); once the first goes, a third gets through, and the gauges return to
//! zero. With admission off the stalled client holds nobody up.

mod common;

use std::time::Duration;

use common::*;
use kanmon_bench::node::spawn_node;
use rustls::{pki_types::ServerName, ClientConnection};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const IN_PROGRESS: &str = "kanmon_tls_handshakes_in_progress";
const QUEUED_FULL: &str = r#"kanmon_tls_handshakes_queued{kind="full"}"#;
const QUEUED_RESUMED: &str = r#"kanmon_tls_handshakes_queued{kind="resumed"}"#;
const REFUSED: &str = r#"kanmon_connections_refused_total{reason="admission"}"#;

async fn proxy_with(limits: &str) -> (TestProxy, kanmon_bench::node::NodeHandle) {
    let node = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node.addr(), None, "ready")]),
        limits_extra: limits.into(),
        ..Opts::default()
    })
    .await;
    (proxy, node)
}

/// A real ClientHello for `ALPHA`, as the first flight of a rustls client.
fn client_hello(proxy: &TestProxy) -> Vec<u8> {
    let name = ServerName::try_from(ALPHA.to_string()).unwrap();
    let mut conn = ClientConnection::new(proxy.client_config(&[b"http/1.1"]), name).unwrap();
    let mut wire = Vec::new();
    conn.write_tls(&mut wire).unwrap();
    wire
}

/// Waits (bounded, 10 s: the proxy peeks a partial hello for a second first) until `series`
/// reads `value`; returns what it last read.
async fn reaches(proxy: &TestProxy, series: &str, value: f64) -> f64 {
    let mut last = proxy.metric(series).await;
    for _ in 0..200 {
        if last == value {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = proxy.metric(series).await;
    }
    last
}

/// Sends `hello` on a fresh connection and returns every byte the proxy sends back before it
/// closes (bounded by `limit`).
async fn answer_to(proxy: &TestProxy, hello: &[u8], limit: Duration) -> Vec<u8> {
    let mut tcp = TcpStream::connect(proxy.tls_addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the proxy neither answered nor closed");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_handshake_is_refused_at_the_queue_timeout_without_tls_work() {
    let (proxy, _node) = proxy_with(
        "max_handshakes_in_progress = 1\nmax_queued_handshakes = 4\n\
         handshake_queue_timeout = \"1s\"\nhandshake_timeout = \"60s\"",
    )
    .await;
    let hello = client_hello(&proxy);
    // The first client stalls half-way through its hello: after the proxy's short wait for
    // the rest, its handshake takes the only slot and waits there.
    let mut stalled = TcpStream::connect(proxy.tls_addr).await.unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert_eq!(reaches(&proxy, IN_PROGRESS, 1.0).await, 1.0);

    // The second waits in the queue, then is closed with nothing sent: no ServerHello.
    let second = {
        let hello = hello.clone();
        let addr = proxy.tls_addr;
        tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&hello).await.unwrap();
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut got));
            (read.await.is_ok(), got)
        })
    };
    assert_eq!(reaches(&proxy, QUEUED_FULL, 1.0).await, 1.0, "it waits");
    let (closed, got) = second.await.unwrap();
    assert!(closed, "refused at the queue timeout, not left hanging");
    assert!(
        got.is_empty(),
        "no TLS bytes for a refused handshake: {got:?}"
    );
    assert_eq!(proxy.metric_reaches(REFUSED, 1.0).await, 1.0);
    assert_eq!(
        proxy
            .metric(r#"kanmon_tls_handshake_failures_total{reason="timeout"}"#)
            .await,
        0.0,
        "refused, not timed out"
    );
    assert_eq!(proxy.metric(QUEUED_FULL).await, 0.0);
    assert_eq!(
        proxy
            .metric("kanmon_tls_handshake_queue_seconds_count")
            .await,
        1.0
    );

    // The stalled client goes: its slot is free, and a third client's handshake succeeds.
    drop(stalled);
    assert_eq!(reaches(&proxy, IN_PROGRESS, 0.0).await, 0.0);
    let (status, _, _) = proxy.get(ALPHA, ALPHA, "/v2/healthcheck").await;
    assert_eq!(status, 200);
    // Its slot is given back as soon as its handshake is done, while it stays connected.
    let open = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    assert_eq!(reaches(&proxy, IN_PROGRESS, 0.0).await, 0.0);
    assert_eq!(proxy.metric(QUEUED_FULL).await, 0.0);
    assert_eq!(proxy.metric(QUEUED_RESUMED).await, 0.0);
    assert_eq!(proxy.metric(REFUSED).await, 1.0, "nobody else refused");
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_off_holds_nobody_up() {
    let (proxy, _node) = proxy_with(
        "max_handshakes_in_progress = 1\nmax_queued_handshakes = 0\nhandshake_timeout = \"60s\"",
    )
    .await;
    let hello = client_hello(&proxy);
    let mut stalled = TcpStream::connect(proxy.tls_addr).await.unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert_eq!(reaches(&proxy, IN_PROGRESS, 1.0).await, 1.0);
    // No room to wait: closed at once (well inside the 3 s default queue timeout).
    let got = answer_to(&proxy, &hello, Duration::from_secs(30)).await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(proxy.metric_reaches(REFUSED, 1.0).await, 1.0);
    assert_eq!(
        proxy
            .metric("kanmon_tls_handshake_queue_seconds_count")
            .await,
        0.0,
        "it never waited"
    );
    drop(stalled);

    // Admission off: the same stalled client, and a handshake goes through beside it.
    let (off, _node) =
        proxy_with("max_handshakes_in_progress = 0\nhandshake_timeout = \"60s\"").await;
    let hello = client_hello(&off);
    let mut stalled = TcpStream::connect(off.tls_addr).await.unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).await.unwrap();
    let tls = off.tls(ALPHA, &[b"http/1.1"]).await;
    assert!(tls.is_ok(), "{:?}", tls.err());
    assert_eq!(
        off.metric(IN_PROGRESS).await,
        0.0,
        "nothing counted when off"
    );
    assert_eq!(off.metric(REFUSED).await, 0.0);
    drop(stalled);
}

/// A reconnect storm through one handshake slot and no queue: refusals are the admission
/// policy's, each one a retry of the client that got it, and with retries every client is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_under_admission_is_all_back_with_retries() {
    use kanmon_bench::{
        loads::{storm, Limits},
        target::Target,
    };
    let (proxy, _node) =
        proxy_with("max_handshakes_in_progress = 1\nmax_queued_handshakes = 0").await;
    let url = format!("wss://{ALPHA}:{}/ws", proxy.tls_addr.port());
    let connect = proxy.tls_addr.to_string();
    let target = Target::new(&url, Some(&connect), Some(&proxy.ca.cert_path))
        .await
        .unwrap();
    let report = storm::run(
        std::sync::Arc::new(target),
        storm::StormParams {
            clients: 20,
            // One at a time before the storm: none of the set-up is refused.
            connect_concurrency: 1,
            resume: false,
            limits: Limits {
                timeout: Duration::from_secs(60),
                op_timeout: Duration::from_secs(10),
            },
            retries: 200,
            retry_backoff: Duration::from_millis(5),
        },
    )
    .await;
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(report.metric("back"), Some(20.0));
    assert_eq!(report.metric("not_ready"), Some(0.0));
    let retries = report.metric("retries").unwrap();
    assert_eq!(proxy.metric_reaches(REFUSED, retries).await, retries);
    assert_eq!(reaches(&proxy, IN_PROGRESS, 0.0).await, 0.0);
}
