//! Every load against an in-process TLS node on loopback, with small counts: the numbers are
//! not checked (no timing assertions), only that each load completes its count without errors.

use std::sync::Arc;
use std::time::Duration;

use kanmon_bench::loads::{connect, echo, http, idle, rate, storm, Limits};
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

fn rate_params(room_size: Option<usize>, steps: u32) -> rate::RateParams {
    rate::RateParams {
        connections: 8,
        per_conn_rate: 20.0,
        size: 64,
        duration: Duration::from_millis(500),
        room_size,
        steps,
        // Generous: the test checks counting and the search, not this machine's latency.
        slo_p99: Duration::from_secs(5),
        connect_concurrency: 4,
        limits: LIMITS,
    }
}

#[tokio::test]
async fn ws_rate_sends_on_schedule_and_searches_upwards() -> anyhow::Result<()> {
    let f = tls_node("rate").await?;
    let t = target(&f, WS_URL).await?;
    let r = rate::run(t, rate_params(None, 2)).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    // 8 connections × 20/s × 0.5 s, every reply back.
    assert_eq!(r.metric("offered_msgs_per_s"), Some(160.0));
    assert_eq!(r.metric("messages_ok"), Some(80.0));
    assert_eq!(r.metric("lost"), Some(0.0));
    // Both steps sustained under a 5 s objective: the second offered twice the first.
    assert_eq!(r.metric("max_sustained_msgs_per_s"), Some(320.0));
    assert!(r.metric("rtt_p999_ms").is_some_and(|v| v > 0.0));
    f.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn ws_rate_in_rooms_hears_the_other_members() -> anyhow::Result<()> {
    let f = tls_node("room").await?;
    let t = target(&f, WS_URL).await?;
    let r = rate::run(t, rate_params(Some(4), 1)).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.metric("messages_ok"), Some(80.0));
    // Each message reaches the 3 other members of its room of 4: at most 240 in 0.5 s
    // (the last few may land after their receiver finished), and far more than none.
    let fanout = r.metric("fanout_per_s").unwrap() * 0.5;
    assert!((120.0..=240.0).contains(&fanout), "fan-out {fanout}");
    f.node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn ws_storm_brings_every_client_back() -> anyhow::Result<()> {
    let f = tls_node("storm").await?;
    let t = target(&f, WS_URL).await?;
    let p = storm::StormParams {
        clients: 20,
        connect_concurrency: 8,
        resume: false,
        limits: LIMITS,
        retries: 0,
        retry_backoff: Duration::from_millis(10),
    };
    let r = storm::run(t.clone(), p).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.metric("back"), Some(20.0));
    assert_eq!(r.metric("resumed"), Some(0.0));
    // 20 before the storm and 20 after it.
    assert_eq!(f.node.stats().ws_connections(), 40);
    let r = storm::run(t, storm::StormParams { resume: true, ..p }).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.metric("back"), Some(20.0));
    assert_eq!(
        r.metric("resumed"),
        Some(20.0),
        "each client resumed its session"
    );
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

#[tokio::test]
async fn ws_idle_spreads_its_connections_over_deployments() -> anyhow::Result<()> {
    // The node's wildcard certificate covers every `alpha-K.us-east1.kanmon.test`: a
    // connection whose SNI were not a name under it would fail its handshake.
    let f = tls_node("idle-spread").await?;
    let connect = f.node.addr().to_string();
    let t = Target::new(WS_URL, Some(&connect), Some(&f.ca_path))
        .await?
        .with_spread(4)?;
    let t = Arc::new(t);
    let p = idle::IdleParams {
        connections: 12,
        concurrency: 4,
        hold: Duration::ZERO,
        pid: Some(std::process::id()),
        limits: LIMITS,
    };
    let r = idle::run(t.clone(), p).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.metric("connections_held"), Some(12.0));
    assert_eq!(r.metric("deployments"), Some(4.0));
    assert_eq!(f.node.stats().ws_connections(), 12);
    // 12 connections took 3 turns over the 4 deployments: the next one starts again at 0.
    assert_eq!(
        t.next_host().as_deref(),
        Some("alpha-0.us-east1.kanmon.test")
    );
    f.node.shutdown().await?;
    Ok(())
}
