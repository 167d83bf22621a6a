//! gRPC through the proxy: h2 from the client, h2c to the node's gRPC port, trailers intact.

mod common;

use bytes::Bytes;
use common::*;
use kanmon_bench::node::spawn_node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_grpc_call_keeps_trailers() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), n0.grpc_addr(), "ready")]),
        ..Opts::default()
    })
    .await;
    let tls = proxy.tls(ALPHA, &[b"h2"]).await.unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // A gRPC message: compressed flag 0, 4-byte length, payload.
    let payload = b"hello kanmon";
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    msg.extend_from_slice(payload);
    let req = http::Request::post(format!("https://{ALPHA}/nakama.api.Nakama/Healthcheck"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(Bytes::from(msg.clone()), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-node-id"], "alpha-0");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, msg, "the node echoes the message");
    let trailers = body.trailers().await.unwrap().expect("gRPC trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        n0.stats().grpc_requests(),
        1,
        "the call went to the node's gRPC port"
    );
}

/// A gRPC node on the h2 crate, driven step by step by the test: every call it gets is handed
/// over with its request and its response handle, so a test decides when each message, the
/// trailers or a reset go out.
struct StreamNode {
    addr: std::net::SocketAddr,
    calls: tokio::sync::mpsc::Receiver<Call>,
}

struct Call {
    req: http::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
}

impl StreamNode {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, calls) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        if tx.send(Call { req, respond }).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, calls }
    }

    async fn call(&mut self) -> Call {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.calls.recv())
            .await
            .expect("no call reached the node")
            .expect("node gone")
    }
}

fn grpc_msg(payload: &[u8]) -> Bytes {
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    msg.extend_from_slice(payload);
    Bytes::from(msg)
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The next DATA chunk of `body` (flow control released), `None` at its end.
async fn next_data(body: &mut h2::RecvStream) -> Option<Result<Bytes, h2::Error>> {
    let chunk = tokio::time::timeout(WAIT, body.data())
        .await
        .expect("no data in time")?;
    if let Ok(c) = &chunk {
        body.flow_control().release_capacity(c.len()).unwrap();
    }
    Some(chunk)
}

async fn grpc_proxy(node: std::net::SocketAddr, read_timeout: &'static str) -> TestProxy {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), Some(node), "ready")]),
        read_timeout,
        ..Opts::default()
    })
    .await;
    // The demo node only serves the HTTP side; it lives as long as the process.
    std::mem::forget(n0);
    proxy
}

async fn grpc_client(proxy: &TestProxy) -> h2::client::SendRequest<Bytes> {
    let tls = proxy.tls(ALPHA, &[b"h2"]).await.unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    client.ready().await.unwrap()
}

fn grpc_request(method: &str, timeout: Option<&str>) -> http::Request<()> {
    let mut req = http::Request::post(format!("https://{ALPHA}/kanmon.Test/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", t);
    }
    req.body(()).unwrap()
}

fn grpc_response() -> http::Response<()> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

fn grpc_trailers(status: u32) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", status.into());
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_messages_arrive_one_by_one_and_the_deadline_reaches_the_node() {
    let mut node = StreamNode::start().await;
    // Longer than the body read timeout: a stream's pauses are not a slow body.
    let proxy = grpc_proxy(node.addr, "1s").await;
    let mut client = grpc_client(&proxy).await;
    let (resp, mut send) = client
        .send_request(grpc_request("Watch", Some("30S")), false)
        .unwrap();
    send.send_data(grpc_msg(b"watch"), true).unwrap();
    let mut call = node.call().await;
    assert_eq!(
        call.req.headers()["grpc-timeout"],
        "30S",
        "the client's deadline reaches the node"
    );
    let mut out = call.respond.send_response(grpc_response(), false).unwrap();
    let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    for i in 0..3u8 {
        // Each message is sent only after the previous one reached the client: nothing is
        // held back until the end of the call.
        let msg = grpc_msg(&[b'm', b'0' + i]);
        out.send_data(msg.clone(), false).unwrap();
        assert_eq!(next_data(&mut body).await.unwrap().unwrap(), msg);
        if i == 1 {
            // A pause longer than `request_read_timeout` between two messages.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        }
    }
    out.send_trailers(grpc_trailers(0)).unwrap();
    assert!(next_data(&mut body).await.is_none());
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_streaming_interleaves_and_a_node_deadline_status_comes_back() {
    let mut node = StreamNode::start().await;
    let proxy = grpc_proxy(node.addr, "1s").await;
    let mut client = grpc_client(&proxy).await;
    let (resp, mut send) = client
        .send_request(grpc_request("Chat", Some("5S")), false)
        .unwrap();
    send.send_data(grpc_msg(b"ping-0"), false).unwrap();
    let mut call = node.call().await;
    let mut out = call.respond.send_response(grpc_response(), false).unwrap();
    let mut inbound = call.req.into_body();
    let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
    let mut body = resp.into_body();
    for i in 0..3u8 {
        let got = next_data(&mut inbound).await.unwrap().unwrap();
        assert_eq!(got, grpc_msg(&[b'p', b'i', b'n', b'g', b'-', b'0' + i]));
        out.send_data(got.clone(), false).unwrap();
        assert_eq!(next_data(&mut body).await.unwrap().unwrap(), got);
        if i == 0 {
            // A client quiet for longer than `request_read_timeout` (a realtime session
            // between two moves) is a live call, not a slow body.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        }
        if i < 2 {
            // The client's next message only after the node's answer: both ways stream.
            send.send_data(grpc_msg(&[b'p', b'i', b'n', b'g', b'-', b'1' + i]), false)
                .unwrap();
        }
    }
    // The node's deadline ran out: its status (4, DEADLINE_EXCEEDED) reaches the client.
    out.send_trailers(grpc_trailers(4)).unwrap();
    assert!(next_data(&mut body).await.is_none());
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_reaches_the_node_and_a_node_reset_reaches_the_client() {
    let mut node = StreamNode::start().await;
    let proxy = grpc_proxy(node.addr, "15s").await;
    let mut client = grpc_client(&proxy).await;

    // Client → node: the client resets its stream mid-call; the node's stream is reset.
    let (resp, mut send) = client
        .send_request(grpc_request("Watch", None), false)
        .unwrap();
    send.send_data(grpc_msg(b"watch"), false).unwrap();
    let mut call = node.call().await;
    let mut out = call.respond.send_response(grpc_response(), false).unwrap();
    let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
    let mut body = resp.into_body();
    out.send_data(grpc_msg(b"first"), false).unwrap();
    assert!(next_data(&mut body).await.unwrap().is_ok());
    send.send_reset(h2::Reason::CANCEL);
    let reset = tokio::time::timeout(WAIT, std::future::poll_fn(|cx| out.poll_reset(cx)))
        .await
        .expect("the node's stream was not reset after the client cancelled");
    assert!(reset.is_ok(), "{reset:?}");

    // Node → client: the node resets its stream mid-call; the client's stream ends in error.
    let (resp, mut send) = client
        .send_request(grpc_request("Watch", None), false)
        .unwrap();
    send.send_data(grpc_msg(b"watch"), false).unwrap();
    let mut call = node.call().await;
    let mut out = call.respond.send_response(grpc_response(), false).unwrap();
    let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
    let mut body = resp.into_body();
    out.send_data(grpc_msg(b"first"), false).unwrap();
    assert!(next_data(&mut body).await.unwrap().is_ok());
    out.send_reset(h2::Reason::CANCEL);
    match next_data(&mut body).await {
        Some(Err(e)) => assert!(e.is_reset(), "{e}"),
        other => panic!("the client's stream did not end in a reset: {other:?}"),
    }
}
