//! `ws-connect`: N fresh connections (TCP + TLS + upgrade + one echo + close) at a fixed
//! concurrency — the cost of a crowd of game clients arriving at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

use super::{close_ws, echo_once, open_ws, rate, Limits};
use crate::report::{Counters, Errors, Latency, Progress, Report};
use crate::target::SharedTarget;

/// Parameters of a `ws-connect` run.
#[derive(Debug, Clone, Copy)]
pub struct ConnectParams {
    /// Connections to make in total.
    pub connections: u64,
    /// Connections in flight at once.
    pub concurrency: usize,
    /// Size of the one echoed text message.
    pub message_size: usize,
    /// Each worker is one client keeping its TLS sessions, so its connections after the
    /// first resume (reconnecting clients) instead of each paying a full handshake.
    pub resume: bool,
    /// Time bounds.
    pub limits: Limits,
}

struct WorkerResult {
    connect: Latency,
    /// From the upgrade's completion to the first echo back: a fresh connection's start-up
    /// cost in the proxy (buffers, task, registration) shows here.
    first_msg: Latency,
    total: Latency,
    errors: Errors,
}

/// Runs the load and reports connections/s and latencies.
pub async fn run(target: SharedTarget, p: ConnectParams) -> Report {
    let start = Instant::now();
    let deadline = p.limits.deadline(start);
    let next = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(Counters::default());
    let resumed = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start("ws-connect", counters.clone());
    let msg = Message::text("x".repeat(p.message_size.max(1)));
    let mut tasks = Vec::with_capacity(p.concurrency);
    for _ in 0..p.concurrency.max(1) {
        let (next, counters, msg, resumed) =
            (next.clone(), counters.clone(), msg.clone(), resumed.clone());
        let target = if p.resume {
            Arc::new(target.with_own_sessions())
        } else {
            target.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut r = WorkerResult {
                connect: Latency::new(),
                first_msg: Latency::new(),
                total: Latency::new(),
                errors: Errors::default(),
            };
            while next.fetch_add(1, Ordering::Relaxed) < p.connections && Instant::now() < deadline
            {
                match one(&target, msg.clone(), p.limits.op_timeout, &mut r).await {
                    Ok((total, was_resumed)) => {
                        if was_resumed {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                        r.total.record(total);
                        counters.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kind) => {
                        r.errors.add(kind);
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            r
        }));
    }
    let mut connect = Latency::new();
    let mut first_msg = Latency::new();
    let mut total = Latency::new();
    let mut report = Report::new("ws-connect", &target);
    for t in tasks {
        match t.await {
            Ok(r) => {
                connect.merge(&r.connect);
                first_msg.merge(&r.first_msg);
                total.merge(&r.total);
                report.errors.merge(&r.errors);
            }
            Err(_) => report.errors.add("panic"),
        }
    }
    let elapsed = start.elapsed();
    let ok = total.count();
    report.elapsed_s = elapsed.as_secs_f64();
    report.timed_out = ok + report.errors.total() < p.connections;
    report.push("conn_per_s", rate(ok, elapsed), "/s");
    report.push("connections_ok", ok as f64, "");
    // A resumed load that resumed nothing measured full handshakes: the count says which.
    report.push("resumed", resumed.load(Ordering::Relaxed) as f64, "");
    report.push_latency("connect", &connect, false);
    report.push_latency("first_msg", &first_msg, false);
    report.push_latency("total", &total, false);
    report
}

/// One connection's life; records the connect latency (TCP + TLS + upgrade) and the first
/// message's round trip, and returns the whole duration including the echo and the close,
/// and whether TLS resumed a session.
async fn one(
    target: &crate::target::Target,
    msg: Message,
    op_timeout: Duration,
    r: &mut WorkerResult,
) -> Result<(Duration, bool), super::Failure> {
    let t0 = Instant::now();
    let mut ws = open_ws(target, op_timeout).await?;
    r.connect.record(t0.elapsed());
    let resumed = ws.get_ref().resumed();
    let t1 = Instant::now();
    echo_once(&mut ws, msg, op_timeout).await?;
    r.first_msg.record(t1.elapsed());
    close_ws(ws, op_timeout).await?;
    Ok((t0.elapsed(), resumed))
}
