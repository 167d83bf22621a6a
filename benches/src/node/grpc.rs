//! gRPC-style h2c side of the node: echo the request body with `grpc-status: 0`.
//!
//! Real gRPC framing is not parsed: the body (length-prefixed messages included) comes back
//! unchanged, which is all a proxy test needs to prove h2 forwarding, trailers and routing.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::Shared;

type GrpcBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

pub(super) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared).await) }
    });
    let conn =
        http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _res = conn.as_mut() => {}
        () = shared.stopping() => {
            conn.as_mut().graceful_shutdown();
            let _finished_or_reset = conn.await;
        }
    }
}

fn trailers(status: u32, message: Option<&'static str>) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(status));
    if let Some(m) = message {
        t.insert("grpc-message", HeaderValue::from_static(m));
    }
    t
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<GrpcBody> {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let frames = if is_grpc && req.method() == Method::POST {
        shared.stats.grpc_requests.fetch_add(1, Ordering::Relaxed);
        match req.into_body().collect().await {
            Ok(body) => vec![
                Ok(Frame::data(body.to_bytes())),
                Ok(Frame::trailers(trailers(0, None))),
            ],
            // 13 = INTERNAL: the client went away mid-request.
            Err(_) => vec![Ok(Frame::trailers(trailers(13, Some("body read failed"))))],
        }
    } else {
        // 12 = UNIMPLEMENTED, as a gRPC server answers anything it does not serve.
        vec![Ok(Frame::trailers(trailers(
            12,
            Some("expected POST application/grpc"),
        )))]
    };
    let mut resp = Response::new(StreamBody::new(stream::iter(frames)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("x-node-id", shared.id_header.clone());
    resp
}
