//! `http`: HTTPS GETs over C keep-alive connections for a duration or a request count — the
//! REST side of a game (sessions, storage, leaderboards).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::{dial_failure, rate, Failure, Limits};
use crate::report::{Counters, Errors, Latency, Progress, Report};
use crate::target::{SharedTarget, Target};

/// Parameters of an `http` run.
#[derive(Debug, Clone, Copy)]
pub struct HttpParams {
    /// Keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// How long to send for.
    pub duration: Duration,
    /// Stop after this many requests in total, if set.
    pub requests: Option<u64>,
    /// Time bounds.
    pub limits: Limits,
}

/// Pause after a failed connect before the next attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(target: &Target, op_timeout: Duration) -> Result<Sender, Failure> {
    let attempt = async {
        let stream = target.dial().await.map_err(|e| dial_failure(&e))?;
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::new("http", e))?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the peer closes; either way
            // the next request on it reports the error.
            let _ended = conn.await;
        });
        Ok(send)
    };
    tokio::time::timeout(op_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

async fn request(send: &mut Sender, target: &Target, op_timeout: Duration) -> Result<(), Failure> {
    let req = http::Request::get(target.path.as_str())
        .header(http::header::HOST, authority(target))
        .body(Empty::new())
        .map_err(|e| Failure::new("http", e))?;
    let exchange = async {
        send.ready().await.map_err(|e| Failure::new("io", e))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| Failure::new("io", e))?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| Failure::new("io", e))?;
        match status.as_u16() {
            200..=299 => Ok(()),
            400..=499 => Err(Failure::new("status_4xx", status)),
            500..=599 => Err(Failure::new("status_5xx", status)),
            _ => Err(Failure::new("status_other", status)),
        }
    };
    tokio::time::timeout(op_timeout, exchange)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

fn authority(target: &Target) -> String {
    // The URL's authority (host[:port]) as the client would send it.
    target
        .url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| target.host.clone())
}

/// Runs the load and reports requests/s and latency percentiles.
pub async fn run(target: SharedTarget, p: HttpParams) -> Report {
    let start = Instant::now();
    let deadline = (start + p.duration).min(p.limits.deadline(start));
    let budget = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(Counters::default());
    let _progress = Progress::start("http", counters.clone());
    let mut tasks = Vec::with_capacity(p.connections);
    for _ in 0..p.connections.max(1) {
        let (target, budget, counters) = (target.clone(), budget.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Latency::new();
            let mut errors = Errors::default();
            let mut send: Option<Sender> = None;
            while Instant::now() < deadline
                && p.requests
                    .is_none_or(|n| budget.fetch_add(1, Ordering::Relaxed) < n)
            {
                let s = match send.as_mut() {
                    Some(s) => s,
                    None => match connect(&target, p.limits.op_timeout).await {
                        Ok(s) => send.insert(s),
                        Err(kind) => {
                            errors.add(kind);
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            // Back off so a refused port is not hammered in a tight loop.
                            tokio::time::sleep(RECONNECT_BACKOFF).await;
                            continue;
                        }
                    },
                };
                let t0 = Instant::now();
                match request(s, &target, p.limits.op_timeout).await {
                    Ok(()) => {
                        lat.record(t0.elapsed());
                        counters.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kind) => {
                        errors.add(kind);
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        send = None;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Latency::new();
    let mut report = Report::new("http", &target);
    for t in tasks {
        match t.await {
            Ok((l, e)) => {
                lat.merge(&l);
                report.errors.merge(&e);
            }
            Err(_) => report.errors.add("panic"),
        }
    }
    let elapsed = start.elapsed();
    report.elapsed_s = elapsed.as_secs_f64();
    report.timed_out = p
        .requests
        .is_some_and(|n| lat.count() + report.errors.total() < n);
    report.push("req_per_s", rate(lat.count(), elapsed), "/s");
    report.push("requests_ok", lat.count() as f64, "");
    report.push_latency("latency", &lat, false);
    report
}
