//! Per-client-address limits over real sockets: connections past `max_connections_per_client`
//! and past `max_handshakes_per_client` per second are refused before the TLS handshake and
//! counted; a closed connection or a second's wait lets the client in again. (The tests'
//! clients are on loopback, which is exempt by default: `exempt_loopback = false`.)

mod common;

use std::time::Duration;

use common::*;
use kanmon_bench::node::spawn_node;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_client_limit_are_refused_before_the_handshake() {
    let (proxy, _node) = proxy_with(
        "max_connections_per_client = 2\nmax_handshakes_per_client = 0\nexempt_loopback = false",
    )
    .await;
    let first = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let _second = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    assert!(
        proxy.tls(ALPHA, &[b"http/1.1"]).await.is_err(),
        "a third connection from 127.0.0.1 is refused"
    );
    let series = r#"kanmon_connections_refused_total{reason="client_connections"}"#;
    assert_eq!(proxy.metric_reaches(series, 1.0).await, 1.0);
    assert_eq!(
        proxy
            .metric(r#"kanmon_tls_handshake_failures_total{reason="protocol"}"#)
            .await,
        0.0,
        "refused before any TLS"
    );
    // Closing one lets the next one in (once the proxy has seen the close).
    drop(first);
    let mut admitted = false;
    for _ in 0..100 {
        if proxy.tls(ALPHA, &[b"http/1.1"]).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a closed connection freed its place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_past_the_per_second_limit_are_refused() {
    let (proxy, _node) = proxy_with(
        "max_connections_per_client = 0\nmax_handshakes_per_client = 1\nexempt_loopback = false",
    )
    .await;
    // One handshake a second (a burst of one): of ten attempts in a row, however slow this
    // machine, some are refused.
    let mut refused = 0;
    for _ in 0..10 {
        if proxy.tls(ALPHA, &[b"http/1.1"]).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused >= 1, "none of ten refused");
    let series = r#"kanmon_connections_refused_total{reason="client_handshakes"}"#;
    assert_eq!(
        proxy.metric_reaches(series, refused as f64).await,
        refused as f64
    );
    // A second later there is a handshake to spend again.
    let mut admitted = false;
    for _ in 0..60 {
        if let Ok(tls) = proxy.tls(ALPHA, &[b"http/1.1"]).await {
            drop(tls);
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "the bucket refilled");
}
