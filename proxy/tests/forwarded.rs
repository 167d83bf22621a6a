//! One request policy for both HTTP stacks: the same request sent over HTTP/1.1 (kanmon's
//! lane), h2 (pingora, to the node's HTTP port) and gRPC (pingora, to its gRPC port) reaches
//! the node with the same forwarding headers — the edge's, never the client's — and
//! without hop-by-hop headers.

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;

/// A node that records the headers of every request on its HTTP (HTTP/1.1) and gRPC (h2c)
/// ports.
async fn recording_node() -> (SocketAddr, SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    for (listener, h2) in [(http, false), (grpc, true)] {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = seen.clone();
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    seen.lock().unwrap().push(req.headers().clone());
                    async move {
                        let _body = req.into_body().collect().await;
                        let resp = http::Response::builder()
                            .header(
                                "content-type",
                                if h2 { "application/grpc" } else { "text/plain" },
                            )
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let io = TokioIo::new(tcp);
                tokio::spawn(async move {
                    let _served = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                    };
                });
            }
        });
    }
    (addrs.0, addrs.1, seen)
}

/// What a client says about itself, and a header of its own.
const CLIENT_HEADERS: [(&str, &str); 6] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-host", "evil.example"),
    ("forwarded", "for=6.6.6.6;proto=http"),
    ("x-real-ip", "6.6.6.6"),
    ("x-custom", "kept"),
];

/// The headers the policy decides about, as the node saw them.
fn view(h: &http::HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            n.starts_with("x-forwarded-")
                || [
                    "forwarded",
                    "x-real-ip",
                    "x-custom",
                    "x-hop",
                    "connection",
                    "keep-alive",
                ]
                .contains(&n)
        })
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_h2_and_grpc_requests_reach_the_node_with_the_same_forwarding_headers() {
    let (http_addr, grpc_addr, seen) = recording_node().await;
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", http_addr, Some(grpc_addr), "ready")]),
        ..Opts::default()
    })
    .await;

    // HTTP/1.1, with hop-by-hop headers h2 cannot carry.
    let tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get("/api").header("host", ALPHA);
    for (n, v) in CLIENT_HEADERS {
        req = req.header(n, v);
    }
    let req = req
        .header("connection", "x-hop, keep-alive")
        .header("keep-alive", "timeout=5")
        .header("x-hop", "1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);

    // h2 to the HTTP port, then gRPC to the gRPC port, on one h2 connection.
    let tls = proxy.tls(ALPHA, &[b"h2"]).await.unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    for grpc in [false, true] {
        let mut client = client.clone().ready().await.unwrap();
        let mut req = if grpc {
            http::Request::post(format!("https://{ALPHA}/kanmon.Test/Call"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
        } else {
            http::Request::get(format!("https://{ALPHA}/api"))
        };
        for (n, v) in CLIENT_HEADERS {
            req = req.header(n, v);
        }
        let (resp, _send) = client.send_request(req.body(()).unwrap(), true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200, "grpc: {grpc}");
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
    }

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "one request per protocol");
    let expected = vec![
        ("x-custom".to_string(), "kept".to_string()),
        ("x-forwarded-for".to_string(), "127.0.0.1".to_string()),
        ("x-forwarded-proto".to_string(), "https".to_string()),
    ];
    for (h, protocol) in seen.iter().zip(["HTTP/1.1", "h2", "gRPC"]) {
        assert_eq!(view(h), expected, "{protocol}: {h:?}");
    }
    assert_eq!(seen[2]["te"], "trailers", "gRPC keeps `TE: trailers`");
}
