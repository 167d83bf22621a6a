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
