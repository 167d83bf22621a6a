//! WebSockets over HTTP/2 (RFC 8441): a real h2 client opens extended CONNECT streams on one
//! connection; the edge routes them like HTTP/1.1 upgrades and opens HTTP/1.1 upgrades to
//! the node.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use kanmon_bench::{
    h2ws::{self, H2Ws, H2WsError},
    node::spawn_node,
};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};

async fn echo(ws: &mut H2Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no echo in time")
        .expect("stream ended")
        .expect("read failed");
    assert_eq!(got, Message::text(text));
}

async fn whoami(ws: &mut H2Ws) -> String {
    ws.send(Message::text("whoami")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no answer in time")
        .unwrap()
        .unwrap();
    got.into_text().unwrap().to_string()
}

async fn h2(proxy: &TestProxy) -> h2::client::SendRequest<bytes::Bytes> {
    let tls = proxy.tls(ALPHA, &[b"h2"]).await.unwrap();
    h2ws::connect(tls).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_connect_echoes_both_ways_and_is_counted_as_200() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), n0.grpc_addr(), "ready")]),
        read_timeout: "1s",
        ..Opts::default()
    })
    .await;
    let conn = h2(&proxy).await;
    // Two WebSockets on one h2 connection, each its own upgrade at the node.
    let mut a = h2ws::open(&conn, ALPHA, "/ws?token=secret-token")
        .await
        .unwrap();
    let mut b = h2ws::open(&conn, ALPHA, "/ws").await.unwrap();
    echo(&mut a, "hello over h2").await;
    echo(&mut b, "second stream").await;
    // Quiet for longer than `request_read_timeout`: a WebSocket's silence is no slow body.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let big = "x".repeat(200_000);
    echo(&mut a, &big).await;
    assert!(whoami(&mut b).await.contains("alpha-0"));
    assert_eq!(n0.stats().ws_active(), 2, "two upgrades at the node");
    let gauge =
        r#"kanmon_websocket_connections{deployment="alpha",node="alpha-0",zone="us-east1"}"#;
    assert_eq!(proxy.metric_reaches(gauge, 2.0).await, 2.0);
    let ok = r#"kanmon_http_requests_total{deployment="alpha",status="200",zone="us-east1"}"#;
    assert_eq!(proxy.metric_reaches(ok, 2.0).await, 2.0);
    // The client closes: the close handshake passes through both ways.
    a.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = a.next().await {
            if m.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the close was not answered");
    // The client lets its stream go (RST_STREAM), as a browser ends it after the close.
    drop(a);
    assert_eq!(proxy.metric_reaches(gauge, 1.0).await, 1.0);
    echo(&mut b, "b lives on").await;
    assert!(
        !proxy.log().contains("secret-token"),
        "query strings are never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_only_deployment_answers_503_and_plain_connect_405() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let n1 = spawn_node("alpha-1").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment(
            "alpha",
            &[
                ("alpha-0", n0.addr(), None, "ready"),
                ("alpha-1", n1.addr(), None, "draining"),
            ],
        ),
        ..Opts::default()
    })
    .await;
    let conn = h2(&proxy).await;
    // Every new WebSocket goes to the ready node, none to the draining one.
    let mut kept = Vec::new();
    for _ in 0..4 {
        let mut ws = h2ws::open(&conn, ALPHA, "/ws").await.unwrap();
        assert!(whoami(&mut ws).await.contains("alpha-0"));
        kept.push(ws);
    }
    assert_eq!(n1.stats().ws_connections(), 0);
    // Now only the draining node is left: a new extended CONNECT is refused, the open ones live.
    proxy.write_nodes(&deployment(
        "alpha",
        &[
            ("alpha-0", n0.addr(), None, "draining"),
            ("alpha-1", n1.addr(), None, "draining"),
        ],
    ));
    let mut refused = None;
    for _ in 0..200 {
        match h2ws::open(&conn, ALPHA, "/ws").await {
            Err(H2WsError::Status(s)) => {
                refused = Some(s);
                break;
            }
            Ok(ws) => drop(ws),
            Err(e) => panic!("unexpected: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused, Some(503));
    // `:authority` naming another deployment than the connection's SNI: 421, as for requests.
    match h2ws::open(&conn, BETA, "/ws").await {
        Err(H2WsError::Status(s)) => assert_eq!(s, 421),
        other => panic!("expected 421, got {:?}", other.map(|_| ())),
    }
    echo(&mut kept[0], "still open while draining").await;
    // A CONNECT without `:protocol` is no WebSocket: refused, never proxied.
    let mut client = conn.clone().ready().await.unwrap();
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("alpha.us-east1.kanmon.test:443")
        .body(())
        .unwrap();
    let (resp, _send) = client.send_request(req, false).unwrap();
    assert_eq!(resp.await.unwrap().status(), 405);
    let refused = r#"kanmon_http_requests_total{deployment="alpha",status="405",zone="us-east1"}"#;
    assert_eq!(proxy.metric_reaches(refused, 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_websockets_get_a_1001_close_at_the_end_of_the_grace_period() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let mut proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        grace: "3s",
        ..Opts::default()
    })
    .await;
    let conn = h2(&proxy).await;
    let mut ws = h2ws::open(&conn, ALPHA, "/ws").await.unwrap();
    echo(&mut ws, "before shutdown").await;
    proxy.terminate();
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
    while ws.next().await.is_some() {}
    assert!(
        proxy.wait_exit(Duration::from_secs(10)).await,
        "proxy did not exit after the close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_not_buffered() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        limits_extra: "write_timeout = \"1s\"".into(),
        ..Opts::default()
    })
    .await;
    let conn = h2(&proxy).await;
    let mut ws = h2ws::open(&conn, ALPHA, "/ws").await.unwrap();
    echo(&mut ws, "warm up").await;
    // The client sends and never reads: the node's echoes fill the stream's window, and
    // the edge, which sends only what the window allows, cannot write on. It cuts the tunnel
    // after `write_timeout` rather than queueing the echoes.
    let (mut sink, _stream) = ws.split();
    let sender = tokio::spawn(async move {
        let msg = Message::binary(vec![7u8; 16 * 1024]);
        for _ in 0..1024 {
            if sink.send(msg.clone()).await.is_err() {
                return;
            }
        }
    });
    let cut = r#"kanmon_connections_cut_total{reason="client_write_timeout"}"#;
    let mut seen = 0.0;
    for _ in 0..300 {
        seen = proxy.metric(cut).await;
        if seen >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 1.0, "the stalled stream was not cut");
    let gauge =
        r#"kanmon_websocket_connections{deployment="alpha",node="alpha-0",zone="us-east1"}"#;
    assert_eq!(proxy.metric_reaches(gauge, 0.0).await, 0.0);
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_websockets_count_towards_the_deployment_limit() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        max_connections: 2,
        ..Opts::default()
    })
    .await;
    let conn = h2(&proxy).await;
    let mut a = h2ws::open(&conn, ALPHA, "/ws").await.unwrap();
    let _b = h2ws::open(&conn, ALPHA, "/ws").await.unwrap();
    // Two WebSockets hold the deployment's two slots: the third is refused like any request.
    match h2ws::open(&conn, ALPHA, "/ws").await {
        Err(H2WsError::Status(s)) => assert_eq!(s, 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    echo(&mut a, "the open ones live on").await;
}
