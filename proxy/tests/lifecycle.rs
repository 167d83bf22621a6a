//! The proxy's life: certificate and nodes-file hot reload (bad files keep the last good
//! state), connect-failure retry, and graceful shutdown on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kanmon_bench::node::spawn_node;

/// The DER of the certificate the proxy serves for `sni`.
async fn served_cert(proxy: &TestProxy, sni: &str) -> Vec<u8> {
    let tls = proxy.tls(sni, &[b"http/1.1"]).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_and_a_broken_file_keeps_the_previous_one() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        ..Opts::default()
    })
    .await;
    let first = served_cert(&proxy, ALPHA).await;
    // Keep a live connection across the reload.
    let mut ws = proxy.ws(ALPHA).await.unwrap();

    let certs = proxy.path("certs");
    proxy.ca.issue(&certs, ALPHA).unwrap();
    let mut second = first.clone();
    for _ in 0..200 {
        second = served_cert(&proxy, ALPHA).await;
        if second != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(second, first, "the replaced certificate was never served");
    echo(&mut ws, "the live connection survived the reload").await;

    // A broken certificate file: the previous certificate stays, the error is counted.
    let errors = r#"kanmon_tls_certificate_errors_total"#;
    let before = proxy.metric(errors).await;
    std::fs::write(certs.join(format!("{ALPHA}.crt")), "not a certificate").unwrap();
    for _ in 0..200 {
        if proxy.metric(errors).await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        proxy.metric(errors).await > before,
        "the broken file was not reported"
    );
    assert_eq!(served_cert(&proxy, ALPHA).await, second);
    let (status, ..) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_nodes_file_keeps_the_last_good_table() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let n1 = spawn_node("alpha-1").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        ..Opts::default()
    })
    .await;
    proxy.write_nodes(
        "[[deployment]]\ninstance = \"alpha\"\nzone = \"us-east1\"\ncolour = \"blue\"\n",
    );
    for _ in 0..200 {
        if proxy
            .metric(r#"kanmon_discovery_errors_total{source="file"}"#)
            .await
            >= 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        proxy
            .metric(r#"kanmon_discovery_errors_total{source="file"}"#)
            .await,
        1.0
    );
    assert!(
        proxy.log().contains("colour"),
        "the error names the bad key"
    );
    let (status, headers, _) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(
        (status, headers["x-node-id"].to_str().unwrap()),
        (200, "alpha-0")
    );

    // A valid file again is published.
    proxy.write_nodes(&deployment(
        "alpha",
        &[("alpha-1", n1.addr(), None, "ready")],
    ));
    proxy.wait_generation(2).await;
    let (_, headers, _) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(headers["x-node-id"], "alpha-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_on_another_node_and_ejects_the_first() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let dead = free_port();
    let proxy = TestProxy::start(Opts {
        nodes: deployment(
            "alpha",
            &[
                ("alpha-dead", dead, None, "ready"),
                ("alpha-0", n0.addr(), None, "ready"),
            ],
        ),
        ..Opts::default()
    })
    .await;
    for _ in 0..20 {
        let (status, headers, _) = proxy.get(ALPHA, ALPHA, "/").await;
        assert_eq!(
            (status, headers["x-node-id"].to_str().unwrap()),
            (200, "alpha-0")
        );
        let mut ws = proxy.ws(ALPHA).await.unwrap();
        assert_eq!(whoami(&mut ws).await, "alpha-0");
    }
    // The dead node was tried at most a couple of times before ejection kept picks away.
    let failures = proxy
        .metric(r#"kanmon_upstream_connect_failures_total{deployment="alpha",node="alpha-dead",zone="us-east1"}"#)
        .await;
    assert!((1.0..=3.0).contains(&failures), "failures: {failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_keeps_live_websockets_and_exits_when_they_end() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let mut proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        grace: "60s",
        ..Opts::default()
    })
    .await;
    let mut ws = proxy.ws(ALPHA).await.unwrap();
    echo(&mut ws, "before").await;
    proxy.terminate();
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(proxy.tls_addr)
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener still accepts after SIGTERM");
    // The live WebSocket keeps working during the grace period.
    for i in 0..5 {
        echo(&mut ws, &format!("during shutdown {i}")).await;
    }
    assert!(
        !proxy.wait_exit(Duration::from_millis(300)).await,
        "exited while a WebSocket was live"
    );
    let closed_at = Instant::now();
    ws.close(None).await.unwrap();
    drop(ws);
    // Exits once the last connection is gone — long before the 60 s grace period.
    assert!(
        proxy.wait_exit(Duration::from_secs(20)).await,
        "did not exit after the last connection closed"
    );
    assert!(closed_at.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_binary_upgrade_hands_over_the_listener() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let mut old = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        ..Opts::default()
    })
    .await;
    let mut ws = old.ws(ALPHA).await.unwrap();
    echo(&mut ws, "on the old process").await;

    // The new binary starts first and waits for the sockets; SIGQUIT makes the old one send them.
    let mut new = KillOnDrop(old.spawn_upgrade());
    let sock = old.path("upgrade.sock");
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        sock.exists(),
        "the new process never opened the upgrade socket"
    );
    old.signal("QUIT");

    // New connections are served (by the new process) while the old one drains.
    for _ in 0..10 {
        let (status, ..) = old.get(ALPHA, ALPHA, "/").await;
        assert_eq!(status, 200);
    }
    // The live WebSocket on the old process still works, and the old process exits once it ends.
    echo(&mut ws, "still on the old process").await;
    ws.close(None).await.unwrap();
    drop(ws);
    assert!(
        old.wait_exit(Duration::from_secs(20)).await,
        "old process did not exit after draining"
    );
    let (status, ..) = old.get(ALPHA, ALPHA, "/").await;
    assert_eq!(
        status, 200,
        "the new process serves after the old one exited"
    );
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new process is still running"
    );
}

/// Kills a child process when dropped, so a failing test leaves nothing behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.kill().is_ok() {
            let _reaped = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_open_at_the_end_of_the_grace_period_get_a_1001_close() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};

    let n0 = spawn_node("alpha-0").await.unwrap();
    let mut proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        grace: "3s",
        ..Opts::default()
    })
    .await;
    let mut ws = proxy.ws(ALPHA).await.unwrap();
    echo(&mut ws, "before shutdown").await;
    proxy.terminate();
    // The client keeps its WebSocket open; near the deadline the proxy says goodbye properly.
    let close = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("no Close frame before the deadline");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    // tungstenite answers the close; the proxy then has nothing left and exits.
    while ws.next().await.is_some() {}
    assert!(
        proxy.wait_exit(Duration::from_secs(10)).await,
        "proxy did not exit after the close"
    );
}
