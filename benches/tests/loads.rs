//! Every load against an in-process TLS node on loopback, with small counts: the numbers are
//! not checked (no timing assertions), only that each load completes its count without errors.

use std::sync::Arc;
use std::time::Duration;

use kanmon_bench::loads::{connect, echo, http, idle, Limits};
use kanmon_bench::node::{start_node, NodeConfig, NodeHandle};
use kanmon_bench::target::Target;
use kanmon_bench::{certs, tls};

const LIMITS: Limits = Limits {
    timeout: Duration::from_secs(60),
    op_timeout: Duration::from_secs(10),
};

struct Fixture {
    node: NodeHandle,
    ca_path: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("leaving {}: {e}", self.0.display());
        }
    }
}

async fn tls_node(name: &str) -> anyhow::Result<Fixture> {
    let dir = std::env::temp_dir().join(format!("kanmon-bench-{name}-{}", std::process::id()));
    let (_ca, files) = certs::write_host_certs(&dir, &["*.us-east1.kanmon.test"])?;
    let mut cfg = NodeConfig::loopback(name);
    cfg.grpc_listen = None;
    cfg.log_connections = false;
    cfg.tls = Some(tls::server_config(&files[0].cert, &files[0].key)?);
    let node = start_node(cfg).await?;
    Ok(Fixture {
        node,
        ca_path: dir.join(certs::CA_CERT_FILE),
        _dir: TempDir(dir),
    })
}

async fn target(f: &Fixture, url: &str) -> anyhow::Result<Arc<Target>> {
    let connect = f.node.addr().to_string();
    Ok(Arc::new(
        Target::new(url, Some(&connect), Some(&f.ca_path)).await?,
    ))
}

const WS_URL: &str = "wss://alpha.us-east1.kanmon.test:8443/ws?token=t";

#[tokio::test]
async fn ws_connect_completes_its_count() -> anyhow::Result<()> {
    let f = tls_node("connect").await?;
    let t = target(&f, WS_URL).await?;
    let p = connect::ConnectParams {
        connections: 40,
        concurrency: 8,
        message_size: 16,
        resume: false,
        limits: LIMITS,
    };
    let r = connect::run(t.clone(), p).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.metric("connections_ok"), Some(40.0));
    assert!(r.metric("conn_per_s").is_some_and(|v| v > 0.0));
    assert_eq!(
        r.metric("resumed"),
        Some(0.0),
        "every connection a full handshake"
    );
    assert_eq!(f.node.stats().ws_connections(), 40);

    // Reconnecting clients: each worker's first connection is a full handshake, the rest
    // resume with the tickets the node sent (a worker that got no connection has no first).
    let r = connect::run(t, connect::ConnectParams { resume: true, ..p }).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    let resumed = r.metric("resumed").unwrap();
    assert!((32.0..40.0).contains(&resumed), "resumed {resumed} of 40");
    f.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn ws_echo_counts_every_round_trip() -> anyhow::Result<()> {
    let f = tls_node("echo").await?;
    let t = target(&f, WS_URL).await?;
    let p = echo::EchoParams {
        connections: 5,
        messages: 20,
        size: 64,
        connect_concurrency: 2,
        limits: LIMITS,
    };
    let r = echo::run(t, p).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.metric("messages_ok"), Some(100.0));
    assert!(r.metric("rtt_p999_ms").is_some());
    f.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn ws_idle_holds_and_measures_rss() -> anyhow::Result<()> {
    let f = tls_node("idle").await?;
    let t = target(&f, WS_URL).await?;
    let p = idle::IdleParams {
        connections: 20,
        concurrency: 8,
        hold: Duration::ZERO,
        // The node runs in this process, so our own RSS is the "proxy" RSS.
        pid: Some(std::process::id()),
        limits: LIMITS,
    };
    let r = idle::run(t, p).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.metric("connections_held"), Some(20.0));
    assert!(r.metric("kib_per_conn").is_some());
    f.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn http_stops_at_the_request_count() -> anyhow::Result<()> {
    let f = tls_node("http").await?;
    let t = target(&f, "https://alpha.us-east1.kanmon.test:8443/v2/healthcheck").await?;
    let p = http::HttpParams {
        connections: 4,
        duration: Duration::from_secs(60),
        requests: Some(200),
        limits: LIMITS,
    };
    let r = http::run(t, p).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.metric("requests_ok"), Some(200.0));
    assert_eq!(f.node.stats().http_requests(), 200);
    f.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn refuses_non_loopback_targets() {
    let err = Target::new("ws://a.b/ws", Some("192.0.2.1:80"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only loopback"), "{err}");
}
