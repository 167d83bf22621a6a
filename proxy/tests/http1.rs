//! The HTTP/1.1 lane over real TLS against real HTTP servers: request and response bodies in
//! every framing, `Expect: 100-continue`, pipelining, HTTP/1.0, HEAD, a node that drops its
//! kept-alive connections, a node that hangs (504) and one that answers garbage (502).

mod common;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A hyper node: `/echo` answers the request body (and its length in `x-got`), `/chunked`
/// streams chunks with a trailer, `/big` streams 1 MiB, `/slow` answers after 3 s, anything
/// else answers `ok` with a `Content-Length`.
async fn hyper_node() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(req).await)
                });
                let _ended = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn answer(req: http::Request<Incoming>) -> http::Response<BoxBody> {
    let full = |b: Vec<u8>| Full::new(Bytes::from(b)).boxed();
    match req.uri().path() {
        "/echo" => {
            let fwd = req.headers().get("x-forwarded-proto").cloned();
            let fwd_for = req.headers().get("x-forwarded-for").cloned();
            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
            let mut resp = http::Response::new(full(body.clone()));
            resp.headers_mut()
                .insert("x-got", body.len().to_string().parse().unwrap());
            if let Some(v) = fwd {
                resp.headers_mut().insert("x-saw-proto", v);
            }
            if let Some(v) = fwd_for {
                resp.headers_mut().insert("x-saw-for", v);
            }
            resp
        }
        "/chunked" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", "42".parse().unwrap());
            let frames = vec![
                Ok(Frame::data(Bytes::from_static(b"first "))),
                Ok(Frame::data(Bytes::from_static(b"second "))),
                Ok(Frame::data(Bytes::from_static(b"third"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut resp =
                http::Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            // hyper sends trailers only when they are declared (and the client asked).
            resp.headers_mut()
                .insert("trailer", "x-checksum".parse().unwrap());
            resp
        }
        "/big" => {
            let frames =
                (0..256u32).map(|i| Ok(Frame::data(Bytes::from(vec![(i % 251) as u8; 4096]))));
            http::Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            http::Response::new(full(b"late".to_vec()))
        }
        _ => http::Response::new(full(b"ok".to_vec())),
    }
}

/// A raw node that answers each request with `reply`, then — if `close_after` — drops the
/// connection a moment later without saying so (as a node's idle timeout would).
async fn raw_node(reply: &'static [u8], close_after: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    let Ok(n) = stream.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                        have = 0;
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                        if close_after {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn proxy_for(node: SocketAddr, extra: &str) -> TestProxy {
    TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node, None, "ready")]),
        extra: extra.into(),
        ..Opts::default()
    })
    .await
}

/// Reads from `s` until `done` says the bytes so far are complete (bounded by 10 s).
async fn read_until<S: AsyncRead + Unpin>(s: &mut S, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let read = async {
        while !done(&out) {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("response within 10 s");
    out
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_every_framing_pass_through_intact() {
    let proxy = proxy_for(hyper_node().await, "").await;
    let tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);

    // A Content-Length request body, then a chunked one, on the same kept-alive connection.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let req = http::Request::post("/echo")
        .header("host", ALPHA)
        .body(Full::new(Bytes::from(payload.clone())).boxed())
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-saw-proto"], "https");
    assert_eq!(resp.headers()["x-saw-for"], "127.0.0.1");
    assert_eq!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
        payload
    );

    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"abc"))),
        Ok(Frame::data(Bytes::from_static(b"defgh"))),
    ];
    let req = http::Request::post("/echo")
        .header("host", ALPHA)
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["x-got"], "8");
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "abcdefgh"
    );

    // A chunked response with a trailer: body and trailer arrive.
    let req = http::Request::get("/chunked")
        .header("host", ALPHA)
        .header("te", "trailers")
        .body(Full::default().boxed())
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "42");
    assert_eq!(collected.to_bytes(), "first second third");

    // 1 MiB streamed, byte for byte.
    let req = http::Request::get("/big")
        .header("host", ALPHA)
        .body(Full::default().boxed())
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 256 * 4096);
    assert!(body
        .chunks(4096)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&b| b == (i % 251) as u8)));

    // HEAD: headers only, and the connection still works after it.
    let req = http::Request::head("/big")
        .header("host", ALPHA)
        .body(Full::default().boxed())
        .unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    let req = http::Request::get("/")
        .header("host", ALPHA)
        .body(Full::default().boxed())
        .unwrap();
    send.ready().await.unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    assert_eq!(
        proxy
            .metric_reaches(
                r#"kanmon_http_requests_total{deployment="alpha",status="200",zone="us-east1"}"#,
                6.0
            )
            .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_pipelining_and_http10() {
    let proxy = proxy_for(hyper_node().await, "").await;

    // Expect: 100-continue is answered by the proxy before the body is sent.
    let mut tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: {ALPHA}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut tls, |b| b.ends_with(b"\r\n\r\n")).await;
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    tls.write_all(b"hello").await.unwrap();
    let resp = read_until(&mut tls, |b| b.ends_with(b"hello")).await;
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert_eq!(
        count(&resp, b"HTTP/1.1 100"),
        0,
        "the node's own 100 is not passed on twice"
    );

    // Three pipelined requests in one write: three answers, in order.
    let mut tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let one = |body: &str| {
        format!(
            "POST /echo HTTP/1.1\r\nHost: {ALPHA}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let all = one("first") + &one("second") + &one("third");
    tls.write_all(all.as_bytes()).await.unwrap();
    let resp = read_until(&mut tls, |b| b.ends_with(b"third")).await;
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(count(&resp, b"HTTP/1.1 200"), 3, "{text}");
    let (a, b, c) = (text.find("first"), text.find("second"), text.find("third"));
    assert!(a < b && b < c, "{text}");

    // HTTP/1.0 without keep-alive: one answer, then the proxy closes.
    let mut tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    tls.write_all(format!("GET / HTTP/1.0\r\nHost: {ALPHA}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut resp))
        .await
        .expect("closed within 10 s")
        .ok();
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("ok"),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );

    // A malformed head gets 400 and a close.
    let mut tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    tls.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {ALPHA}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut resp))
        .await
        .unwrap()
        .ok();
    assert!(
        resp.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dropping_kept_alive_connections_costs_the_client_nothing() {
    let node = raw_node(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true).await;
    let proxy = proxy_for(node, "").await;
    let tls = proxy.tls(ALPHA, &[b"http/1.1"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..5 {
        // Each time, the pooled connection from the previous request has been closed by the
        // node in between: the proxy notices before any response byte and retries.
        let req = http::Request::get("/")
            .header("host", ALPHA)
            .body(Full::<Bytes>::default())
            .unwrap();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The retry path ran (connections are pooled per proxy thread, so how many requests found
    // a closed one depends on where the connection's task ran; at least one did).
    let retries = proxy.log().matches("retrying on a fresh one").count();
    assert!(retries >= 1, "{retries} retries; log:\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_gives_504_and_a_garbage_node_502() {
    let proxy = proxy_for(
        hyper_node().await,
        "[upstream]\nresponse_timeout = \"300ms\"\n",
    )
    .await;
    let (status, _, body) = proxy.get(ALPHA, ALPHA, "/slow").await;
    assert_eq!(status, 504);
    assert!(body.contains("in time"), "{body}");
    assert_eq!(
        proxy
            .metric_reaches(
                r#"kanmon_http_requests_total{deployment="alpha",status="504",zone="us-east1"}"#,
                1.0
            )
            .await,
        1.0
    );

    let garbage = raw_node(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false).await;
    let proxy = proxy_for(garbage, "").await;
    let (status, ..) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(status, 502);
    assert_eq!(
        proxy
            .metric_reaches(
                r#"kanmon_http_requests_total{deployment="alpha",status="502",zone="us-east1"}"#,
                1.0
            )
            .await,
        1.0
    );
    // The proxy says what went wrong, at warn: a broken node is the operator's business.
    assert!(
        proxy.log().contains("node broke the exchange"),
        "{}",
        proxy.log()
    );
}
