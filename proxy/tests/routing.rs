//! Routing over real TLS: SNI certificates, 404/421/431/503, HTTP/1.1 and h2, per-status
//! metrics that match what was sent, bad bytes on the TLS port, and the console hostnames
//! (allow-list 403, ready nodes only, no cross-tenant route).

mod common;

use common::*;
use kanmon_bench::node::spawn_node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One GET over a fresh h2 connection (ALPN checked) to `host`.
async fn h2_get(proxy: &TestProxy, host: &str) -> http::Response<hyper::body::Incoming> {
    let tls = proxy.tls(host, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://{host}/h2"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    send.send_request(req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_sni_and_refuses_what_it_must() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let n1 = spawn_node("beta-0").await.unwrap();
    let nodes = deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")])
        + &deployment("beta", &[("beta-0", n1.addr(), None, "draining")]);
    let proxy = TestProxy::start(Opts {
        nodes,
        ..Opts::default()
    })
    .await;

    // SNI alpha → alpha's certificate (the client verifies the name) → alpha's node.
    let (status, headers, body) = proxy.get(ALPHA, ALPHA, "/hello?token=s3cret").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-node-id"], "alpha-0");
    assert_eq!(body, "alpha-0");
    // Host may carry a port and any case.
    let (status, ..) = proxy
        .get(ALPHA, "Alpha.US-East1.kanmon.test:8443", "/")
        .await;
    assert_eq!(status, 200);

    // Host naming another deployment on alpha's connection: 421.
    let (status, ..) = proxy.get(ALPHA, BETA, "/").await;
    assert_eq!(status, 421);

    // beta's only node is draining: 503 with Retry-After.
    let (status, headers, _) = proxy.get(BETA, BETA, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");

    // The zone wildcard covers any instance in eu-west1, but no such deployment exists: 404.
    let gamma = "gamma.eu-west1.kanmon.test";
    let (status, _, body) = proxy.get(gamma, gamma, "/").await;
    assert_eq!(status, 404);
    assert!(body.len() < 100);

    // Unknown SNI: the handshake is refused, never answered with another tenant's certificate.
    let err = proxy
        .tls("nobody.us-west9.kanmon.test", &[b"http/1.1"])
        .await;
    assert!(err.is_err(), "handshake with an unknown SNI succeeded");

    // Headers past the limit: 431.
    let tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", ALPHA)
        .header("x-big", "a".repeat(20_000))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status().as_u16(), 431);

    // HTTP/2 through ALPN.
    let resp = h2_get(&proxy, ALPHA).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    // The h2 path refuses beta (no ready node) and counts it under beta too: one
    // accounting for both HTTP paths.
    assert_eq!(h2_get(&proxy, BETA).await.status().as_u16(), 503);

    // Per-status counts equal what was sent; refusals of a deployment the SNI names (421,
    // 431, 503) count under it, only the name that is no deployment under "unknown".
    proxy
        .metric_reaches(
            r#"kanmon_http_requests_total{deployment="beta",status="503",zone="us-east1"}"#,
            2.0,
        )
        .await;
    let m = proxy.metrics().await;
    let unknown: Vec<&str> = m
        .lines()
        .filter(|l| {
            l.starts_with("kanmon_http_requests_total{") && l.contains(r#"deployment="unknown""#)
        })
        .collect();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(
        metric_value(
            &m,
            r#"kanmon_http_requests_total{deployment="alpha",status="200",zone="us-east1"}"#
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"kanmon_http_requests_total{deployment="alpha",status="421",zone="us-east1"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"kanmon_http_requests_total{deployment="beta",status="503",zone="us-east1"}"#
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"kanmon_http_requests_total{deployment="unknown",status="404",zone="unknown"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"kanmon_http_requests_total{deployment="alpha",status="431",zone="us-east1"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"kanmon_tls_handshake_failures_total{reason="unknown_sni"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"kanmon_nodes{deployment="beta",state="draining",zone="us-east1"}"#
        ),
        1.0,
        "{m}"
    );
    // The client-chosen hostnames never become label values.
    assert!(!m.contains("gamma") && !m.contains("nobody"), "{m}");

    // Nothing logs the query string (Nakama sends session tokens there).
    assert!(
        !proxy.log().contains("s3cret"),
        "query string leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_plain_http_on_the_tls_port_are_closed_cleanly() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        ..Opts::default()
    })
    .await;
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: alpha\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..],
        &[0u8; 2048][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(proxy.tls_addr)
            .await
            .unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = Vec::new();
        // The proxy closes the connection (possibly after a TLS alert); it never hangs.
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection left open after garbage");
    }
    // Still serving, and the failures were counted as protocol errors.
    let (status, ..) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(status, 200);
    assert!(
        proxy
            .metric(r#"kanmon_tls_handshake_failures_total{reason="protocol"}"#)
            .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_readyz_reports() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        ..Opts::default()
    })
    .await;
    let (status, ..) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(status, 200);
    assert_eq!(proxy.admin("/healthz").await.unwrap().0, 200);
    assert_eq!(proxy.admin("/readyz").await.unwrap().0, 200);
    let text = proxy.metrics().await;
    let path = proxy.path("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .expect("promtool is installed by scripts/setup.sh");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The shipped alerting rules use these metrics and must stay valid.
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/dashboards/alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool rules: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Each alert fires where it should and stays quiet beside it (alerts_test.yml).
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(rules.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_and_the_connection_limit_gives_503() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        read_timeout: "1s",
        max_connections: 2,
        ..Opts::default()
    })
    .await;

    // A client that never finishes its request header is disconnected after the read timeout.
    let mut tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {ALPHA}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tls.read_to_end(&mut buf),
    )
    .await;
    assert!(closed.is_ok(), "a stalled client kept its connection");

    // One that trickles a byte every 300 ms (each read well inside the limit) is cut too:
    // the limit holds for the whole head.
    let mut tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let started = std::time::Instant::now();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {ALPHA}\r\nX-Slow: {}",
        "a".repeat(100)
    );
    let mut cut = false;
    for byte in head.as_bytes() {
        if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if started.elapsed() > std::time::Duration::from_secs(10) {
            break;
        }
    }
    if !cut {
        // Writes into a closed TLS connection can still succeed locally: look for the close.
        let mut buf = [0u8; 64];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(1), tls.read(&mut buf)).await;
        cut = matches!(read, Ok(Ok(0) | Err(_)));
    }
    assert!(
        cut,
        "a trickling client kept its connection for {:?}",
        started.elapsed()
    );
    // Both cuts are counted.
    let series = r#"kanmon_connections_cut_total{reason="slow_head"}"#;
    assert_eq!(proxy.metric_reaches(series, 2.0).await, 2.0);

    // Two WebSockets fill the deployment; the third connection gets 503 + Retry-After.
    let _a = proxy.ws(ALPHA).await.unwrap();
    let _b = proxy.ws(ALPHA).await.unwrap();
    let (status, headers, _) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    drop(_a);
    // Once one closes there is room again (bounded wait for the tunnel to notice).
    let mut status = 0;
    for _ in 0..100 {
        status = proxy.get(ALPHA, ALPHA, "/").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_picks_aes128_even_when_the_client_prefers_aes256() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        ..Opts::default()
    })
    .await;
    // rustls clients (like OpenSSL's) list AES-256-GCM first.
    let tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    // A client that offers only AES-256 still gets it.
    let provider = rustls::crypto::ring::default_provider();
    let only_256 = rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384],
        ..provider
    };
    let roots = proxy.roots();
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(only_256))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(proxy.tls_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(ALPHA.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
}

/// A deployment with console addresses and an allow-list, as the nodes file writes it.
fn console_deployment(
    instance: &str,
    nodes: &[(&str, &kanmon_bench::node::NodeHandle, &str)],
    allow: &[&str],
) -> String {
    let mut s = format!(
        "[[deployment]]\ninstance = \"{instance}\"\nzone = \"us-east1\"\nconsole_allow = {allow:?}\nnodes = [\n"
    );
    for (id, node, state) in nodes {
        s.push_str(&format!(
            "  {{ id = \"{id}\", addr = \"{}\", console = \"{}\", state = \"{state}\" }},\n",
            node.addr(),
            node.console_addr().unwrap()
        ));
    }
    s.push_str("]\n");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reaches_one_ready_node_of_its_own_deployment_inside_its_allow_list() {
    let a0 = spawn_node("alpha-0").await.unwrap();
    let a1 = spawn_node("alpha-1").await.unwrap();
    let b0 = spawn_node("beta-0").await.unwrap();
    // alpha's console is open to loopback; beta's only to a network the test is not in.
    let nodes = console_deployment(
        "alpha",
        &[("alpha-0", &a0, "draining"), ("alpha-1", &a1, "ready")],
        &["127.0.0.0/8", "::1/128"],
    ) + &console_deployment("beta", &[("beta-0", &b0, "ready")], &["192.0.2.0/24"]);
    let proxy = TestProxy::start(Opts {
        nodes,
        ..Opts::default()
    })
    .await;

    // Inside the allow-list: the console of alpha's ready node, never the draining one's.
    for _ in 0..4 {
        let (status, headers, body) = proxy.get(ALPHA_CONSOLE, ALPHA_CONSOLE, "/#/status").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-console"], "1");
        assert_eq!(headers["x-node-id"], "alpha-1");
    }
    let resp = h2_get(&proxy, ALPHA_CONSOLE).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-console"], "1");
    assert_eq!(a1.stats().console_requests(), 5);
    assert_eq!(
        a0.stats().console_requests(),
        0,
        "a draining node's console got a request"
    );
    // The API name still goes to the API.
    let (status, headers, _) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(status, 200);
    assert!(headers.get("x-console").is_none());
    assert_eq!(a1.stats().console_requests(), 5);

    // Outside beta's allow-list: 403 with a body that says why, counted by reason; beta's
    // node sees nothing.
    let (status, _, body) = proxy.get(BETA_CONSOLE, BETA_CONSOLE, "/").await;
    assert_eq!(status, 403);
    assert!(body.contains("allow-list"), "{body}");
    let resp = h2_get(&proxy, BETA_CONSOLE).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(b0.stats().console_requests(), 0);
    let series =
        r#"kanmon_console_refused_total{deployment="beta",reason="not_allowed",zone="us-east1"}"#;
    assert_eq!(proxy.metric_reaches(series, 2.0).await, 2.0);

    // One connection, one target: another tenant's console, alpha's API or beta's API named
    // in Host on alpha's console connection is misdirected, never routed.
    for host in [BETA_CONSOLE, ALPHA, BETA] {
        let (status, ..) = proxy.get(ALPHA_CONSOLE, host, "/").await;
        assert_eq!(status, 421, "{host}");
    }
    let (status, ..) = proxy.get(BETA, BETA_CONSOLE, "/").await;
    assert_eq!(status, 421);
    assert_eq!(b0.stats().console_requests(), 0);

    // alpha-1 starts draining too: no node takes a new console connection.
    let nodes = console_deployment(
        "alpha",
        &[("alpha-0", &a0, "draining"), ("alpha-1", &a1, "draining")],
        &["127.0.0.0/8", "::1/128"],
    );
    let generation = proxy.metric("kanmon_table_generation").await as u64;
    proxy.write_nodes(&nodes);
    proxy.wait_generation(generation + 1).await;
    let (status, headers, _) = proxy.get(ALPHA_CONSOLE, ALPHA_CONSOLE, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        a0.stats().console_requests() + a1.stats().console_requests(),
        5
    );
}
